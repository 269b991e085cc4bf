"""The grading process behind `generate`: grades come back in order, whatever the driver does."""

from __future__ import annotations

import threading

from r1v_data.stages.generate_grading import TraceGrader

_SAMPLE = {"answer": "7", "answer_type": "free_form", "options": None}


def _completion(i: int) -> str:
    # long enough that a few of them fill a pipe's buffer, as real reasoning traces do
    steps = " ".join(f"step {k} of the derivation;" for k in range(800))
    return f"<think>\n{steps}\n</think>\n\nThe answer is \\boxed{{{i}}}."


def test_a_driver_that_sends_many_long_traces_before_reading_any_grade_gets_them_all_in_order() -> None:
    # Before the grader read its pipe in a thread of its own, this deadlocked: the driver sat in
    # send() behind a full pipe while the grader sat in send() behind the unread grades.
    n, grades = 200, []

    def drive() -> None:
        with TraceGrader() as grader:
            for i in range(n):
                grader.submit(_completion(i), "stop", "", _SAMPLE)
            grades.extend(grader.receive() for _ in range(n))

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    driver.join(120)
    assert not driver.is_alive(), "the driver and the grading process wait for each other"
    assert [g["answer"] for g in grades] == [str(i) for i in range(n)]
    assert [g["verdict"] for g in grades].count("correct") == 1  # only the 7th says 7
    assert all(g["think_closed"] and not g["truncated"] for g in grades)
