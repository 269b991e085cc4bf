"""What a 10k-sample AL-CoTD run costs on hosted judges, computed by r1v's own dry runs.

    python bench/hosted_cost.py [--samples 10000] [--prices docs/prices.example.yaml]

Builds a store of `--samples` problems from MATH-Vision testmini (../shared/data, real images;
the 304 problems repeated with a numbered suffix so each is its own sample), then runs
`score --judge --dry-run` (QDAM + VTIA through the judge) and `generate --dry-run` (a self-hosted
teacher, and a hosted reviser for the problems it leaves unsolved) and prints the lines as a
Markdown table. Nothing is sent anywhere. docs/hosted-teachers.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from r1v_data.config import GenerateConfig, IngestConfig, ScoreConfig
from r1v_data.stages.generate_estimate import estimate_generate
from r1v_data.stages.ingest import run_ingest
from r1v_data.stages.score_estimate import estimate_score

REPO = Path(__file__).resolve().parents[1]
MATHV = Path(os.environ.get("R1V_SHARED", REPO.parent / "shared" / "data")) / "mathv_testmini"
JUDGE = "openai-batch:https://api.openai.com/v1#gpt-4o"
TEACHER = "openai:http://127.0.0.1:8000/v1#Skywork/Skywork-R1V-38B"  # self-hosted with vLLM: no price
REVISER = "anthropic-batch:claude-sonnet-4-20250514"


def build_store(root: Path, samples: int) -> Path:
    rows = [json.loads(line) for line in (MATHV / "testmini.jsonl").read_text().splitlines() if line.strip()]
    shutil.copytree(MATHV / "images", root / "images")  # an image may not lie outside its source's folder
    source = root / "mathv10k.jsonl"
    with source.open("w") as f:
        for i in range(samples):
            row = dict(rows[i % len(rows)])
            row["id"] = f"{row['id']}-{i}"
            row["question"] = f"{row['question']}\n(variant {i // len(rows)})"
            f.write(json.dumps(row) + "\n")
    store = root / "store"
    result = run_ingest(IngestConfig(store=store, sources=[str(source)]))
    if result.total("added") < samples:
        raise SystemExit(
            f"only {result.total('added')} of {samples} problems ingested: {result.quarantine_reasons()}"
        )
    return store


def table(lines: list[dict]) -> str:
    out = [
        "| step | model | requests | prompt tokens | completion tokens | cost |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for line in lines:
        usd = "self-hosted: no price" if line["usd"] is None else f"${line['usd']:,.2f}"
        batch = " (batch)" if line["batch"] else ""
        out.append(f"| {line['what']} | {line['teacher']}{batch} | {line['requests']:,} | {line['prompt_tokens']:,} "
                   f"| {line['completion_tokens']:,} | {usd} |")  # fmt: skip
    hosted = sum(line["usd"] for line in lines if line["usd"] is not None)
    out.append(f"| **hosted total** | | | | | **${hosted:,.2f}** |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--prices", type=Path, default=REPO / "docs" / "prices.example.yaml")
    args = parser.parse_args()
    os.environ["R1V_PRICES"] = str(args.prices)
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp), args.samples)
        score = estimate_score(ScoreConfig(store=store, judge=JUDGE))
        gen = estimate_generate(GenerateConfig(store=store, teacher=TEACHER, reviser=REVISER,
                                               sampling={"max_tokens": 4096}))  # fmt: skip
    for line in score["lines"]:
        line["what"] = f"score: {line['what'].upper()} judge"
    for line in gen["lines"]:
        line["what"] = f"generate: {line['what']}"
    print(f"{args.samples:,} problems, prices from {args.prices.name}; completions counted at their limits "
          "(judge 512 tokens, teacher and reviser 4,096): upper bounds\n")  # fmt: skip
    print(table([*score["lines"], *gen["lines"]]))


if __name__ == "__main__":
    main()
