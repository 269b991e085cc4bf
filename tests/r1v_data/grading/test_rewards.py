"""Reward levels 0–5: the rule rubric on hand-made and real traces, calibrations of raw reward
scores, and a tiny random-weight sequence-classification reward model."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from conftest import mathv_with_outputs
from tiny_models import build_tiny_llama, build_tiny_reward_model

from r1v_data.errors import ConfigError
from r1v_data.grading.reward_model import RewardModelScorer, completion_text, rm_pair, rm_version
from r1v_data.grading.rewards import RULE_VERSION, Calibration, rule_score
from r1v_data.store import Store

CLEAN_THINK = "First 2 + 3 = 5, then 5 * 4 = 20, so the total is 20."


def _trace(**kw: object) -> dict:
    """A stored-looking trace row: correct, closed think, budget well respected."""
    row = {
        "text": f"<think>{CLEAN_THINK}</think> \\boxed{{20}}",
        "think": CLEAN_THINK,
        "answer": "20",
        "finish_reason": "stop",
        "completion_tokens": 40,
        "think_closed": True,
        "truncated": False,
        "repetition": False,
        "verdict": "correct",
        "error": None,
        "sampling": {"max_tokens": 1024},
    }
    return {**row, **kw}


# --------------------------------------------------------------------------- rule rubric
@pytest.mark.parametrize(
    ("changes", "level", "detail"),
    [
        ({"error": "HTTP 500: upstream", "text": None, "verdict": "error"}, 0, "error: HTTP 500"),
        ({"text": "   ", "answer": None}, 0, "empty completion"),
        ({"answer": None, "verdict": "wrong"}, 0, "no answer"),
        (
            {"verdict": "wrong", "truncated": True, "think_closed": False},
            1,
            "wrong, think unclosed, truncated",
        ),
        ({"verdict": "wrong", "think": None, "think_closed": False}, 1, "wrong, no think"),
        ({"verdict": "wrong", "repetition": True}, 1, "wrong, repetitive"),
        ({"verdict": "wrong"}, 2, "wrong, think closed, 40/1024 tokens"),
        ({"verdict": "unverifiable"}, 2, "unverified (unverifiable)"),
        ({"verdict": "timeout", "repetition": True}, 1, "unverified (timeout), repetitive"),
        ({"verdict": None}, 2, "unverified (no verdict)"),
        ({"verdict": "error"}, 2, "unverified (error)"),  # the verifier failed, not the request
        ({"truncated": True, "finish_reason": "length"}, 3, "correct, truncated"),
        ({"think_closed": False}, 3, "correct, think unclosed"),
        ({"think": None, "think_closed": False}, 3, "correct, no think"),
        ({"repetition": True}, 3, "correct, repetitive"),
        ({"think": "A. 10"}, 4, "short think (5 chars)"),
        ({"completion_tokens": 1000}, 4, "near the budget (98%)"),
        ({}, 5, "correct, think closed, 40/1024 tokens"),
        ({"completion_tokens": None, "sampling": None}, 5, "correct, think closed"),
    ],
)
def test_rule_levels_on_hand_made_traces(changes: dict, level: int, detail: str) -> None:
    score = rule_score(_trace(**changes))
    assert score.value == level, score
    assert detail in score.detail


def test_the_budget_comes_from_the_argument_or_the_row() -> None:
    row = _trace(completion_tokens=900)
    assert rule_score(row).value == 5  # 900 of 1024 is below 90%: sane
    assert rule_score(row, max_tokens=950).value == 4  # 95% of a tighter budget
    assert "900/950 tokens" in rule_score(row, max_tokens=950).detail
    assert rule_score(_trace(completion_tokens=1000, sampling=None)).value == 5  # no budget: no rule


def test_flags_missing_from_a_row_are_read_from_its_text() -> None:
    clean = {"text": f"<think>{CLEAN_THINK}</think> The answer is 20.", "verdict": "correct"}
    assert rule_score(clean).value == 5
    loop = "<think>Let me count. " + "I count the red cubes again. " * 40
    assert rule_score({"text": loop + "\\boxed{3}", "verdict": "correct"}).detail == (
        "correct, think unclosed, truncated, repetitive"
    )
    assert rule_score({"text": "no number here", "verdict": "wrong"}).value == 0
    # a stored row's None answer means "none found", never re-parsed into one
    assert rule_score(_trace(answer=None)).value == 0


def test_level_three_and_up_always_means_verified_correct() -> None:
    verdicts = ("correct", "wrong", "unverifiable", "timeout", "error", None)
    flags = [(c, t, r) for c in (True, False) for t in (True, False) for r in (True, False)]
    for verdict in verdicts:
        for closed, truncated, repetition in flags:
            row = _trace(verdict=verdict, think_closed=closed, truncated=truncated, repetition=repetition)
            level = rule_score(row).value
            assert (level >= 3) == (verdict == "correct")
            assert (level == 5) == (verdict == "correct" and closed and not truncated and not repetition)


def _shipped_labels(folder: Path) -> dict[tuple[str, int], bool]:
    labels = {}
    for path in folder.glob("outputs_*_testmini.jsonl"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                labels[path.name, i] = json.loads(line)["correct"]
    return labels


def test_rule_scores_of_imported_mathvision_outputs_follow_correctness(shared: Path, tmp_path: Path) -> None:
    store = mathv_with_outputs(tmp_path / "store", shared)
    cols, rows = Store.open(store).query("SELECT * FROM traces")
    traces = [dict(zip(cols, r, strict=True)) for r in rows]
    assert len(traces) == 912
    scores = [rule_score(t) for t in traces]
    by_verdict = Counter((t["verdict"], s.value) for t, s in zip(traces, scores, strict=True))
    # These models write no <think>: a right answer is "correct but malformed", a wrong one 0 or 1.
    assert {level for (verdict, level) in by_verdict if verdict == "correct"} == {3}
    assert {level for (verdict, level) in by_verdict if verdict == "wrong"} <= {0, 1}
    assert by_verdict["wrong", 0] >= 1  # some outputs state no answer at all
    # Against the labels shipped with the outputs (an independent grader), not only our verdicts.
    labels = _shipped_labels(shared / "mathv_testmini")
    good = Counter()
    for trace, score in zip(traces, scores, strict=True):
        file, line = trace["provenance"].split(":")[1], int(trace["provenance"].rsplit(":", 1)[1])
        good[labels[file, line], score.value >= 3] += 1
    assert good[True, True] / (good[True, True] + good[True, False]) >= 0.9
    assert good[False, True] / (good[False, True] + good[False, False]) <= 0.05


def _log(shared: Path, name: str) -> list[dict]:
    return json.loads((shared / "traces" / "r1v_eval_logs" / name).read_text())["results"]


def test_rule_scores_of_r1_style_eval_logs(shared: Path) -> None:
    """Real <think>…</think><answer> outputs, flags parsed from the text, verdict from the log."""
    levels = {}
    for model in ("grpo_2epochs", "instruct"):
        rows = [
            {"text": r["model_output"], "verdict": "correct" if r["is_correct"] else "wrong"}
            for r in _log(shared, f"geoqa_test_qwen2vl_7b_{model}_legacy.json")
        ]
        levels[model] = Counter(rule_score(r).value for r in rows)
    grpo, instruct = levels["grpo_2epochs"], levels["instruct"]
    assert set(grpo) | set(instruct) == {0, 1, 2, 3, 5}
    # After GRPO on the format reward almost every right answer is clean; the base model breaks
    # its format far more often (SOURCE.md: 61 of its outputs have no <think>).
    assert grpo[5] / (grpo[3] + grpo[5]) > 0.99
    assert instruct[3] >= 20 and instruct[1] >= 40
    assert grpo[1] + grpo[3] < (instruct[1] + instruct[3]) / 3
    # Counting: terse thinks ("A. 10") of right answers are level 4, not 5.
    clevr = _log(shared, "counting_results_superclevr_200_qwen2vl_2b_instruct_legacy.json")
    scores = [rule_score({"text": r["model_output"], "verdict": "correct"}) for r in clevr]
    short = [s for s in scores if "short think" in s.detail]
    assert len(short) >= 20 and {s.value for s in short} == {4}


# --------------------------------------------------------------------------- calibration
def test_linear_calibration_clamps_and_rounds_into_six_levels() -> None:
    cal = Calibration.parse(" linear: -5 , 5 ")
    assert cal.spec == "linear:-5,5" and str(cal) == "linear:-5,5"
    raws = [-100, -5, -4.01, -3.99, -1.0, 0.0, 0.99, 3.0, 4.0, 5.0, math.inf, -math.inf]
    assert [cal.level(x) for x in raws] == [0, 0, 0, 1, 2, 3, 3, 4, 5, 5, 5, 0]  # half up: -4 → 1, 4 → 5
    assert cal.levels([0.0, math.nan]) == [3, None]
    with pytest.raises(ValueError, match="NaN"):
        cal.level(math.nan)


def test_cut_calibration_counts_the_thresholds_reached() -> None:
    cal = Calibration.parse("cuts:-2,-1,0,1,2")
    assert [cal.level(x) for x in (-2.5, -2, -0.5, 0, 1.99, 2, 1e9)] == [0, 1, 2, 3, 4, 5, 5]
    tied = Calibration.parse("cuts:0,0,0,1,1")  # equal cuts leave levels empty, not an error
    assert [tied.level(x) for x in (-1, 0, 0.5, 1)] == [0, 3, 3, 5]
    assert tied.spec == "cuts:0,0,0,1,1" and Calibration.parse(cal.spec) == cal


def test_quantile_calibration_uses_the_sets_own_distribution() -> None:
    cal = Calibration.parse("quantile")
    assert cal.spec == "quantile" and cal.needs_fit
    raws = [float(i) for i in range(600)][::-1]
    assert Counter(cal.levels(raws)) == {level: 100 for level in range(6)}
    assert cal.levels(raws)[0] == 5 and cal.levels(raws)[-1] == 0  # the order of raws is kept
    shifted = [x * 1000 + 7 for x in raws]  # any scale: only the order matters
    assert cal.levels(shifted) == cal.levels(raws)
    with pytest.raises(ValueError, match="fitted"):
        cal.level(1.0)
    fitted = cal.fit([*raws, math.nan, math.inf])  # non-finite scores do not move the cut points
    assert fitted.kind == "cuts" and fitted.points == cal.fit(raws).points
    top = Calibration.parse("quantile:0.5,0.6,0.7,0.8,0.9")
    assert Counter(top.levels(raws)) == {0: 300, 1: 60, 2: 60, 3: 60, 4: 60, 5: 60}
    assert top.spec == "quantile:0.5,0.6,0.7,0.8,0.9"
    assert cal.levels([3.0]) == [5] and cal.levels([]) == []
    with pytest.raises(ValueError, match="no scores"):
        cal.fit([math.nan])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unknown kind ''"),
        ("sigmoid:0,1", "unknown kind 'sigmoid'"),
        ("linear", "two bounds"),
        ("linear:5,-5", "LO < HI"),
        ("linear:1,1", "LO < HI"),
        ("linear:0,1,2", "two bounds"),
        ("linear:a,b", "not a comma-separated list of numbers"),
        ("linear:0,", "not a comma-separated list"),
        ("linear:nan,1", "finite"),
        ("cuts:1,2,3,4", "five ascending thresholds"),
        ("cuts:1,2,3,5,4", "five ascending thresholds"),
        ("cuts:-inf,0,1,2,3", "finite"),
        ("quantile:0.1,0.2", "five ascending fractions"),
        ("quantile:0.5,0.6,0.7,0.8,1.5", r"in \[0, 1\]"),
    ],
)
def test_bad_calibration_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calibration.parse(spec)


# --------------------------------------------------------------------------- reward model
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("rm") / "lm")


@pytest.fixture(scope="module")
def tiny_rm(tiny_lm: Path) -> Path:
    return build_tiny_reward_model(tiny_lm, tiny_lm.parent / "rm", num_labels=1)


PAIRS = [
    ("What is 2 + 3?", "<think>2 + 3 = 5</think> \\boxed{5}"),
    (
        "How many red cubes are there? A. 3 B. 4",
        "<think>" + "I count the cubes one by one. " * 12 + "</think> B",
    ),
    ("Q", "5"),
    ("Find x if 2x = 10.", "<think>Divide by 2.</think> The answer is 5."),
    ("What is 7 * 6?", "<think>7 * 6 = 42</think> \\boxed{42}"),
]


def test_reward_model_scores_are_finite_deterministic_and_batch_independent(tiny_rm: Path) -> None:
    scorer = RewardModelScorer(str(tiny_rm), calibration="linear:-0.5,0.5", batch_size=3)
    raws = scorer.raw_scores(PAIRS)
    assert len(raws) == len(PAIRS) and all(math.isfinite(x) for x in raws)
    assert len(set(raws)) == len(raws)  # different inputs, different scores
    assert scorer._model.config.pad_token_id == scorer._tokenizer.pad_token_id  # set for batching
    alone = [scorer.raw_scores([pair])[0] for pair in PAIRS]
    assert alone == pytest.approx(raws, abs=1e-5)  # right padding: same last token, same positions
    again = RewardModelScorer(str(tiny_rm), calibration="linear:-0.5,0.5", batch_size=8).raw_scores(PAIRS)
    assert again == pytest.approx(raws, abs=1e-5)
    scores = scorer.score(PAIRS)
    assert [s.raw for s in scores] == raws
    assert all(isinstance(s.value, int) and 0 <= s.value <= 5 for s in scores)
    assert [s.value for s in scores] == [scorer.calibration.level(x) for x in raws]
    assert scores[0].detail.startswith("raw ")


def test_reward_model_quantile_levels_and_version(tiny_rm: Path) -> None:
    scorer = RewardModelScorer(str(tiny_rm), batch_size=4)  # default: quantile
    levels = [s.value for s in scorer.score(PAIRS * 2)]
    assert min(levels) <= 1 and max(levels) == 5
    assert scorer.version == f"rm/1:{tiny_rm}:auto:quantile"
    assert rm_version("org/rm-7b", "cuts:-2,-1,0,1,2", "logit") == "rm/1:org/rm-7b:logit:cuts:-2,-1,0,1,2"


def test_over_long_inputs_keep_their_start_and_end(tiny_rm: Path) -> None:
    scorer = RewardModelScorer(str(tiny_rm), calibration="linear:-1,1", max_length=64)
    words = ["step"] * 150
    middle = [*words[:75], "banana", *words[76:]]
    end = [*words[:-1], "banana"]
    base, mid, tail = scorer.raw_scores([("Q: count", " ".join(w)) for w in (words, middle, end)])
    assert mid == pytest.approx(base, abs=1e-6)  # a change in the cut-out middle is not seen
    assert abs(tail - base) > 1e-4  # the end, where the answer is, is kept
    assert len(scorer._encode("Q: count", " ".join(words))["input_ids"]) == 64


def test_reward_model_without_chat_template_scores_a_text_pair(tiny_rm: Path, tmp_path: Path) -> None:
    plain = build_tiny_reward_model(
        build_tiny_llama(tmp_path / "lm", chat=False), tmp_path / "rm", num_labels=1
    )
    scorer = RewardModelScorer(str(plain), calibration="linear:-1,1", batch_size=2)
    raws = scorer.raw_scores(PAIRS)
    assert all(math.isfinite(x) for x in raws)
    assert [scorer.raw_scores([p])[0] for p in PAIRS] == pytest.approx(raws, abs=1e-5)
    # The same weights and vocabulary: only the chat template's rendering differs.
    chat = RewardModelScorer(str(tiny_rm), calibration="linear:-1,1").raw_scores(PAIRS)
    assert all(abs(a - b) > 1e-6 for a, b in zip(raws, chat, strict=True))


def test_multi_label_heads_reduce_to_one_score(tiny_lm: Path) -> None:
    six = build_tiny_reward_model(tiny_lm, tiny_lm.parent / "rm6", num_labels=6)
    expected = RewardModelScorer(str(six), calibration="linear:0,5").raw_scores(PAIRS)
    assert all(0 <= x <= 5 for x in expected)
    prob = RewardModelScorer(str(six), calibration="linear:0,1", reduction="prob").raw_scores(PAIRS)
    assert all(0 < x < 1 for x in prob)
    logit = RewardModelScorer(str(six), calibration="linear:-1,1", reduction="logit").raw_scores(PAIRS)
    assert prob != pytest.approx(logit) and expected != pytest.approx(prob)


def test_reward_model_refuses_what_cannot_score(tiny_lm: Path, tiny_rm: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no trained classification head"):
        RewardModelScorer(str(tiny_lm)).load()  # a causal LM: its head would be random
    with pytest.raises(ConfigError, match="cannot load reward model"):
        RewardModelScorer(str(tmp_path / "missing")).load()
    with pytest.raises(ConfigError, match="reduction 'mean'"):
        RewardModelScorer(str(tiny_lm), reduction="mean")
    with pytest.raises(ConfigError, match="linear needs two bounds"):
        RewardModelScorer(str(tiny_lm), calibration="linear")
    with pytest.raises(ConfigError, match="needs a head with 2 or more labels"):
        RewardModelScorer(str(tiny_rm), reduction="prob").raw_scores(PAIRS)
    with pytest.raises(ConfigError, match="dtype 'int8'"):
        RewardModelScorer(str(tiny_lm), dtype="int8").load()


def test_completion_text_restores_a_think_opened_by_the_prompt() -> None:
    assert (
        completion_text({"text": "2 + 3 = 5\n</think>\n\\boxed{5}"})
        == "<think>\n2 + 3 = 5\n</think>\n\\boxed{5}"
    )
    assert completion_text({"text": "<think>a</think> b"}) == "<think>a</think> b"
    assert completion_text({"text": None}) == ""
    sample = {"question": "<image1> How many? A. 3 B. 4", "images": []}
    assert rm_pair(sample, {"text": "x</think> B"}) == (
        "<image1> How many? A. 3 B. 4",
        "<think>\nx</think> B",
    )
    assert RULE_VERSION == "rule/1"
