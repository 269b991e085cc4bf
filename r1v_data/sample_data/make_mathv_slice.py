"""Cut the bundled MATH-Vision slice (`mathv/`) from a MATH-Vision testmini checkout.

The quickstart needs real problems with real model outputs that are sometimes right: the builtin
270M teacher alone solves almost nothing. MATH-Vision (MIT licence, `mathv/LICENSE.MATH-V.txt`)
ships testmini with the chain-of-thought outputs of three VLMs and their correctness labels. This
script keeps a small, deliberately chosen slice of it, unchanged: the problems with a small image
(at most 20 kB) on which one or two of the three models were right with some reasoning shown (a
correct answer of 200+ characters), so that filtering keeps a correct trace and a preference pair
has a wrong one to reject; at most 5 per difficulty level, lowest ids first.

    python -m r1v_data.sample_data.make_mathv_slice ../shared/data/mathv_testmini
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "mathv"
OUTPUTS = ("gemini-pro-cot", "internlm-xc2-vl-cot", "qwen-vl-max-cot")
MAX_IMAGE_BYTES = 20_000
MIN_REASONING_CHARS = 200
PER_LEVEL = 5


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def chosen_ids(src: Path) -> list[str]:
    """The slice's problem ids, by the rule in the module docstring."""
    outputs = [{o["id"]: o for o in _jsonl(src / f"outputs_{name}_testmini.jsonl")} for name in OUTPUTS]
    picked: dict[int, list[str]] = {}
    for row in sorted(_jsonl(src / "testmini.jsonl"), key=lambda r: int(r["id"])):
        answers = [o[row["id"]] for o in outputs if row["id"] in o]
        right = [a for a in answers if a["correct"]]
        reasoned = any(len(a["response"]) >= MIN_REASONING_CHARS for a in right)
        small = (src / row["image"]).stat().st_size <= MAX_IMAGE_BYTES
        if small and 1 <= len(right) < len(answers) and reasoned:
            level = picked.setdefault(row["level"], [])
            if len(level) < PER_LEVEL:
                level.append(row["id"])
    return [i for level in sorted(picked) for i in picked[level]]


def build(src: Path, out: Path = HERE) -> list[str]:
    ids = chosen_ids(src)
    keep = set(ids)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = [r for r in _jsonl(src / "testmini.jsonl") if r["id"] in keep]
    _write(out / "testmini.jsonl", rows)
    for row in rows:
        shutil.copyfile(src / row["image"], out / row["image"])
    for name in OUTPUTS:
        file = f"outputs_{name}_testmini.jsonl"
        _write(out / file, [o for o in _jsonl(src / file) if o["id"] in keep])
    shutil.copyfile(src / "LICENSE.MATH-V.txt", out / "LICENSE.MATH-V.txt")
    return ids


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    made = build(Path(sys.argv[1]))
    print(f"wrote {len(made)} problems to {HERE}")
