"""The `r1v-data` entry point: every command module registers itself on the app, then one place
turns r1v's errors into one line and Ctrl-C into exit 130."""

from __future__ import annotations

import sys

# each command module adds its commands to `app` when imported, in the help's order: the flow
# isort: off
from r1v_data.cli import ingest, score, generate, filter, mix, publish, run, inspect  # noqa: F401

# isort: on
from r1v_data.cli.app import app, console


def main() -> None:
    from r1v_data.errors import R1VError

    try:
        app()
    except R1VError as exc:
        from rich.markup import escape

        from r1v_data.redact import redact

        line = " ".join(redact(str(exc)).split())  # one line, whatever the message held
        console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished parts are kept; run the command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
