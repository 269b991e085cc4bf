"""Progress where stderr is not a terminal (a log file, CI): rich's bar draws nothing there, so
long work prints a plain line every few seconds instead (`R1V_PROGRESS_SECONDS`, default 30):

    generate (builtin): 12/40 (30%), 0.41/s, 45 tok/s, ETA 1m08s

`LogProgress` has the small part of `rich.progress.Progress` the commands use (`add_task`,
`update`, `tasks[i].elapsed`, a context manager), so a command does not know which it got.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SECONDS = 30.0


def every_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("R1V_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


@dataclass
class LogTask:
    description: str
    total: float | None
    fields: dict[str, Any]
    completed: float = 0
    started: float = field(default_factory=time.monotonic)
    said: float = field(default_factory=time.monotonic)  # when its last line was printed
    printed: bool = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        done = f"{self.completed:g}"
        if self.total:
            done += f"/{self.total:g} ({self.completed / self.total:.0%})"
        rate = self.completed / self.elapsed if self.elapsed > 0 else 0.0
        parts = [done, f"{rate:.2g}/s"]
        parts += [str(v) for v in self.fields.values() if v]
        if self.total and rate > 0:
            parts.append("ETA " + _duration((self.total - self.completed) / rate))
        return f"{self.description}: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LogProgress:
    """A line per task every `every` seconds, and a last one at the end for a task that printed
    any (short work stays quiet)."""

    def __init__(self, console: Any, every: float):
        self.console, self.every = console, every
        self.tasks: list[LogTask] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks:
            if task.printed and task.said < time.monotonic():
                self._say(task)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        self.tasks.append(LogTask(description, total, fields))
        return len(self.tasks) - 1

    def update(
        self, task_id: int, *, completed: float | None = None, total: float | None = None,
        advance: float | None = None, **fields: Any,
    ) -> None:  # fmt: skip
        task = self.tasks[task_id]
        task.total = total if total is not None else task.total
        task.completed = completed if completed is not None else task.completed + (advance or 0)
        task.fields.update(fields)
        if time.monotonic() - task.said >= self.every:
            self._say(task)

    def _say(self, task: LogTask) -> None:
        task.said, task.printed = time.monotonic(), True
        self.console.print(task.line(), markup=False, highlight=False, soft_wrap=True)
