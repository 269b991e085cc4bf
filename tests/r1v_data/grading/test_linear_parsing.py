"""Parsing is linear and verification bounded, whatever the text (issue 14, item 5).

`parse_completion("\\\\boxed{" * N)` used to rescan the rest of the text from every opening: 0.8 s at
7 KB, 149 s at 112 KB; 16,000 `<answer>` tags took 50 s. Each hostile text here is compared
with a real solution text of the same size parsed in the same run (the linear baseline), not with
a fixed number of seconds, so a slow shared machine slows both alike.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import SHARED_DATA

from r1v_data.grading.traces import parse_completion
from r1v_data.grading.verify import cheap_verdict

SIZE = 112_000
# How many times slower than prose of the same size a hostile text may parse. Linear code is
# within 10x here; the quadratic parser was 10,000x (149 s against ~15 ms).
FACTOR = 50
HOSTILE = [
    "\\boxed{",
    "\\boxed{1}",
    "\\boxed[",
    "\\fbox{{",
    "<answer>",
    "</answer><answer>",
    "<think>",
    "the answer is ",
    "Answer: ",
    "A: 1\n",
    "#### 1\n",
    "Q: ",
    "[",
    "](",
    "<b",
    "<sup>",
    "&#",
    "1,",
    "2:3",
    "\\frac{1}{",
    "(A) ",
    " ",
]


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """A safety net so that a regression fails in seconds instead of hanging for minutes."""

    def expire(*_: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.fixture(scope="module")
def prose() -> str:
    path = SHARED_DATA / "text_math" / "math500_test.jsonl"
    if not path.is_file():
        pytest.skip(f"the shared data is not at {SHARED_DATA}")
    text = path.read_text()
    return (text * (SIZE // len(text) + 1))[:SIZE]


@pytest.mark.parametrize("unit", HOSTILE)
def test_hostile_text_parses_in_linear_time(prose: str, unit: str) -> None:
    hostile = (unit * (SIZE // len(unit) + 1))[:SIZE]
    options = ["1", "2", "3"]
    baseline = _best_of(3, lambda: parse_completion(prose, options=options))
    with _deadline(60):
        took = _best_of(3, lambda: parse_completion(hostile, options=options))
    assert took <= FACTOR * baseline + 0.05, f"{unit!r}: {took:.3f} s against {baseline:.3f} s for prose"


@pytest.mark.parametrize("unit", ["\\boxed{", "C, ", "(A) ", "1,", "x = ", "2:35 ", "\\text{", " "])
def test_hostile_answers_are_judged_in_linear_time(prose: str, unit: str) -> None:
    """The rules that run in the calling process (no worker, no timeout) must be linear too."""
    hostile = (unit * (SIZE // len(unit) + 1))[:SIZE]
    options = ["1", "2", "3", "4"]
    baseline = _best_of(3, lambda: cheap_verdict(prose, "5", None, options))
    with _deadline(60):
        took = _best_of(
            3, lambda: (cheap_verdict(hostile, "5"), cheap_verdict(hostile, "C, D", None, options))
        )
    assert took <= FACTOR * baseline + 0.05, f"{unit!r}: {took:.3f} s against {baseline:.3f} s for prose"


def test_a_long_answer_never_reaches_math_verify() -> None:
    verdict = cheap_verdict("x + " * 10_000 + "1", "x")
    assert verdict is not None and verdict.verdict == "wrong" and "no final answer" in (verdict.detail or "")
