"""generate's grading, in a process of its own (`TraceGrader`) or in the driver (`InlineGrader`):
every completion gets its grade back, under its key, whatever the driver does and however slow
one grade is."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import pytest

from r1v_data.grading.verify import Verdict
from r1v_data.grading.verify_pool import VerifierPool
from r1v_data.stages.generate_grading import (
    GRADE_FIELDS,
    InlineGrader,
    TraceGrader,
    _first_look,
    _remember,
    _verify_all,
)

_SAMPLE = {"answer": "7", "answer_type": "free_form", "options": None}


def _completion(answer: str, steps: int = 800) -> str:
    # 800 steps: long enough that a few of them fill a pipe's buffer, as real reasoning traces do
    derivation = " ".join(f"step {k} of the derivation;" for k in range(steps))
    return f"<think>\n{derivation}\n</think>\n\nThe answer is \\boxed{{{answer}}}."


def _within(seconds: float, work: Callable[[], None]) -> None:
    driver = threading.Thread(target=work, daemon=True)
    driver.start()
    driver.join(seconds)
    assert not driver.is_alive(), "the driver and the grading process wait for each other"


GRADERS = pytest.mark.parametrize("grader_class", [TraceGrader, InlineGrader])


@GRADERS
def test_a_driver_that_sends_many_long_traces_before_reading_any_grade_gets_them_all(grader_class) -> None:
    # Before the grader read its pipe in a thread of its own, this deadlocked: the driver sat in
    # send() behind a full pipe while the grader sat in send() behind the unread grades.
    n, grades = 200, {}

    def drive() -> None:
        with grader_class() as grader:
            for i in range(n):
                grader.submit(i, _completion(str(i)), "stop", "", _SAMPLE)
            grades.update(grader.receive() for _ in range(n))

    _within(120, drive)
    assert {k: g["answer"] for k, g in grades.items()} == {i: str(i) for i in range(n)}
    assert [k for k, g in grades.items() if g["verdict"] == "correct"] == [7]
    assert all(g["think_closed"] and not g["truncated"] for g in grades.values())


@GRADERS
def test_an_answer_waiting_for_math_verify_holds_back_no_other_grade(grader_class) -> None:
    # the first needs math-verify (not yet started: a cold worker takes a second or more), the
    # others are settled by the rules; their grades come back first, and the slow one after
    grades: list[tuple[object, dict]] = []

    def drive() -> None:
        sample = {**_SAMPLE, "answer": "1 + x^2"}
        with grader_class() as grader:
            grader.submit("hard", _completion("x^2 + 1", steps=5), "stop", "", sample)
            for i in range(30):
                grader.submit(i, _completion("0", steps=5), "stop", "", sample)
            grades.extend(grader.receive() for _ in range(31))

    _within(120, drive)
    order = [k for k, _ in grades]
    assert sorted(order, key=str) == sorted(["hard", *range(30)], key=str)
    assert order[-1] == "hard"
    assert dict(grades)["hard"]["verdict"] == "correct"
    assert {g["verdict"] for k, g in grades if k != "hard"} == {"wrong"}


def test_a_verdict_math_verify_reached_is_not_asked_for_again_and_only_settled_ones_are_kept() -> None:
    # a problem's samples mostly repeat a few answers; math-verify decides each pair once per run
    def look(key: str, answer: str, problem: tuple) -> None:
        _first_look((key, _completion(answer, steps=5), "stop", "", problem), grades, hard, known)

    hard: queue.SimpleQueue = queue.SimpleQueue()
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    known: dict = {}
    grades: list = []
    problem = ("1 + x^2", "free_form", None)
    look("first", "x^2 + 1", problem)
    assert grades == [] and hard.qsize() == 1  # only math-verify can tell
    hard.put(None)
    with VerifierPool(workers=1) as verifier:
        _verify_all(verifier, hard, inbox, known)
    _, key, grade = inbox.get()
    assert key == "first" and dict(zip(GRADE_FIELDS, grade, strict=True))["verdict"] == "correct"
    look("again", "x^2 + 1", problem)
    assert hard.empty() and grades == [("again", grade)]
    for other in [
        ("1 + x^3", "free_form", None),
        ("1 + x^2", "expression", None),
        ("1 + x^2", None, ("a", "b")),
    ]:
        look("other", "x^2 + 1", other)  # another reference, type or options: not the same question
    assert hard.qsize() == 3
    _remember(known, ("p", "r", None, None), Verdict("timeout"))
    _remember(known, ("p", "e", None, None), Verdict("error"))
    assert ("p", "r", None, None) not in known and ("p", "e", None, None) not in known
