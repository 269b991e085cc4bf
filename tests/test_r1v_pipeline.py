"""The whole R1V recipe, `pipelines/r1v.yaml`, with T = 2 through `r1v-data run`: the bundled
sample ingested and scored, distilled from a teacher served over HTTP (a local OpenAI-compatible
server that answers most problems right), a tiny InternVL assembled from a tiny InternViT and a
tiny Llama, two SFT iterations with E_1 built from the first model's own answers, evaluation,
and GRPO; then a re-run that skips everything, and one that resumes from a removed step."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from servers.fake_openai import FakeOpenAI
from tiny_models import build_tiny_llama, build_tiny_vit

from r1v_data.readers.sources import bundled_sample_dir
from r1v_data.store import Store

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "r1v.yaml"
TRAIN = ("--cpu --set deepspeed=null --set per_device_train_batch_size=2 --set gradient_accumulation_steps=1 "
         "--set logging_steps=1 --set learning_rate=1e-3")  # fmt: skip


def _teacher() -> Any:
    """Replies with a closed <think> and the reference answer, wrong for every fourth problem."""
    samples = [json.loads(line) for line in (bundled_sample_dir() / "sample.jsonl").read_text().splitlines()]

    def reply(body: dict[str, Any]) -> str:
        content = body["messages"][-1]["content"]
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        index, sample = next((i, s) for i, s in enumerate(samples) if s["question"] in text)
        answer = sample["answer"] if index % 4 else "999"
        return (
            f"<think>\nLook at the figure, then count and compute carefully.\n</think>\n\n\\boxed{{{answer}}}"
        )

    return reply


def _run(*sets: str, check: bool = True) -> Any:
    args = [a for s in sets for a in ("--set", s)]
    return run_cli("run", PIPELINE, *args, "--json", check=check)


@pytest.mark.slow
def test_r1v_pipeline_two_iterations_end_to_end(tmp_path: Path) -> None:
    workdir = tmp_path / "r1v"
    with FakeOpenAI(reply=_teacher(), model="teacher") as server:
        sets = [
            f"workdir={workdir}", "iterations=2", "vars.teacher=openai:" + server.url + "#teacher",
            "vars.teacher_flags=--rounds 1 --max-tokens 64",
            f"vars.vision={build_tiny_vit(tmp_path / 'vit')}", f"vars.llm={build_tiny_llama(tmp_path / 'llm')}",
            "vars.student_flags=--max-tokens 8", "vars.grpo_tau=4",
            f"vars.sft_flags={TRAIN} --max-steps 2 --set max_length=512",
            f"vars.grpo_flags={TRAIN} --max-steps 2 --set num_generations=2 --set max_completion_length=8",
        ]  # fmt: skip
        first = json.loads(_run(*sets).stdout)
        _check_and_rerun(workdir, sets, first)


def _check_and_rerun(workdir: Path, sets: list[str], first: dict[str, Any]) -> None:
    expected = ["ingest", "ingest-eval", "score", "distil", "assemble",
                "filter[t=1]", "mix[t=1]", "sft[t=1]", "evaluate[t=1]",
                "errors[t=2]", "filter[t=2]", "mix[t=2]", "sft[t=2]", "evaluate[t=2]",
                "filter-grpo", "mix-grpo", "grpo"]  # fmt: skip
    assert first["ran"] == expected and first["skipped"] == []
    manifests = {json.loads(p.read_text())["step"] + (f"[t={m}]" if (m := json.loads(p.read_text())["t"]) else ""):
                 json.loads(p.read_text()) for p in sorted((workdir / "steps").glob("*.json"))}  # fmt: skip
    assert set(manifests) == set(expected) and all(m["status"] == "ok" for m in manifests.values())

    # iteration 2 trained on D_2 = {reward >= 3} ∪ E_1, E_1 from model-1's own (wrong) answers
    filter2 = manifests["filter[t=2]"]["result"]
    assert filter2["tau"] == 3 and filter2["error_set"] > 0
    store = Store.open(workdir / "store")
    (run2, manifest2) = next((r, m) for r, m in _filter_runs(store) if r == filter2["run_id"])
    assert manifest2["config"]["errors_from"] == f"hf:{workdir / 'model-1'}"
    trained = json.loads((workdir / "model-2" / "r1v_train.json").read_text())
    assert trained["filter_run"] == run2 and trained["steps"] == 2
    assert trained["config"]["learning_rate"] == 2e-5 or "learning_rate=2e-05" in " ".join(
        manifests["sft[t=2]"]["argv"]
    )
    # students' traces are in the store (E_1, evaluation) but never kept as training data
    _, rows = store.query(
        "SELECT count(*) FILTER (WHERE t.teacher LIKE 'hf:%'), count(*) FROM decisions d "
        "JOIN traces t USING (request_id) WHERE d.kept"
    )
    (students_kept, kept) = rows[0]
    assert students_kept == 0 and kept > 0
    _, students = store.query(
        "SELECT count(*) FROM traces WHERE teacher = $t", params={"t": f"hf:{workdir / 'model-1'}"}
    )
    assert students[0][0] == 38  # model-1 answered every problem
    evaluation = manifests["evaluate[t=2]"]["result"]
    assert evaluation["sent"] > 0
    grpo = manifests["grpo"]["result"]
    assert grpo["steps"] == 2 and "rewards/accuracy/mean" in grpo["metrics"]

    # a re-run skips every finished step; removing one step's manifest re-runs it and what follows
    again = json.loads(_run(*sets).stdout)
    assert again["ran"] == [] and again["skipped"] == expected
    (workdir / "steps" / next(p.name for p in (workdir / "steps").glob("*-mix-t2.json"))).unlink()
    resumed = json.loads(_run(*sets).stdout)
    at = expected.index("mix[t=2]")
    assert resumed["skipped"] == expected[:at] and resumed["ran"] == expected[at:]


def test_pipeline_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workdir: x\nsetup:\n  - {name: oops, run: 'rm -rf /'}\n")
    proc = run_cli("run", bad, check=False)
    assert proc.returncode == 1 and "a step runs one of r1v-data, r1v-train" in proc.stderr
    bad.write_text("workdir: x\nsetup:\n  - {name: s, run: 'r1v-data stats --store {nowhere}'}\n")
    proc = run_cli("run", bad, check=False)
    assert proc.returncode == 1 and "{nowhere} is not defined" in proc.stderr
    failing = tmp_path / "fails.yaml"
    failing.write_text(
        f"workdir: {tmp_path / 'w'}\nsetup:\n  - {{name: s, run: 'r1v-data mix --store {tmp_path / 'none'} --out {tmp_path / 'o'}'}}\n"
    )
    proc = run_cli("run", failing, check=False)
    assert proc.returncode == 1 and re.search(r"step s failed \(exit 1\)", proc.stderr)
    manifest = json.loads(next((tmp_path / "w" / "steps").glob("*.json")).read_text())
    assert manifest["status"] == "failed" and "no store at" in manifest["stderr_tail"]


def _filter_runs(store: Store) -> list[tuple[str, dict[str, Any]]]:
    _, rows = store.query(
        "SELECT r.run_id, m.manifest FROM runs r JOIN manifests m USING (run_id) "
        "WHERE r.command = 'filter' AND r.status = 'ok'"
    )
    return [(r, json.loads(m) if isinstance(m, str) else m) for r, m in rows]
