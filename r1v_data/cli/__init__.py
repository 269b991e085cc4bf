"""The `r1v-data` command line (Typer): parse flags, call a stage, render progress and results.

`app` holds what the command modules share; `main` imports them all and runs the app.
"""

from __future__ import annotations


def main() -> None:
    """Run `r1v-data` (kept here so the console script `r1v_data.cli:main` keeps working)."""
    from r1v_data.cli.main import main as run

    run()
