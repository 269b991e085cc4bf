"""The `r1v-data` entry point: every command module registers itself on the app, then one place
turns r1v's errors into one line and Ctrl-C into one line and exit 130."""

from __future__ import annotations

import sys

# each command module adds its commands to `app` when imported, in the help's order: the flow
# isort: off
from r1v_data.cli import ingest, score, calibrate, generate, filter, mix, report, publish, run, inspect  # noqa: F401

# isort: on
from r1v_data.cli.app import app, console

INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def quiet_third_parties() -> None:
    """r1v-data's output is r1v's own: no weight-loading bars from transformers (huggingface_hub's
    switch turns them off) and no DeepSpeed accelerator warning (r1v-data never trains; r1v-train
    keeps it). Set before either library is imported."""
    import logging
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("DeepSpeed").addFilter(lambda record: record.levelno >= logging.ERROR)


def main() -> None:
    from r1v_data.errors import R1VError

    quiet_third_parties()
    try:
        app()
    except R1VError as exc:
        from rich.markup import escape

        from r1v_data.redact import redact

        line = " ".join(redact(str(exc)).split())  # one line, whatever the message held
        console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt as exc:  # before or after a command (Typer catches it inside one)
        _say_interrupted(exc)
        sys.exit(INTERRUPTED)
    except SystemExit as exc:
        # Typer turns a Ctrl-C inside a command into a silent exit 130; the KeyboardInterrupt,
        # and what the stage saved, hang off that exit's chain
        interrupt = _interrupt_in(exc)
        if exc.code == INTERRUPTED and interrupt is not None:
            _say_interrupted(interrupt)
        raise


def _interrupt_in(exc: BaseException | None) -> KeyboardInterrupt | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _say_interrupted(exc: KeyboardInterrupt) -> None:
    """One line: what the stage saved (its run is recorded as interrupted) and how to resume."""
    import shlex

    from rich.markup import escape

    from r1v_data.redact import redact

    saved = getattr(exc, "saved", None)
    what = f"{saved} (run recorded as interrupted)" if saved else "finished parts are kept"
    again = redact(shlex.join(["r1v-data", *sys.argv[1:]]))
    console.print(
        f"[yellow]interrupted:[/] {escape(what)}; run the same command to resume: {escape(again)}",
        soft_wrap=True,
        highlight=False,
    )


if __name__ == "__main__":
    main()
