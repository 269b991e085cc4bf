"""The Typer app every `r1v-data` command module adds itself to, and what they share: the
consoles, the common options, JSON-or-rendered output and the progress bar.

Command modules import this module and nothing imports them but `r1v_data.cli.main`, so no import
runs in a circle. Library modules are imported inside the commands so that `r1v-data --help` stays
instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(
    name="r1v-data",
    help="Build adaptive-length chain-of-thought data for vision-language reasoning models "
    "(the Skywork R1V recipe): ingest, generate, filter, mix, publish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
PIPED_WIDTH = 1000  # columns for output that is not a terminal: wide enough that nothing is cut


def _console(stderr: bool = False) -> Console:
    """A terminal's own width; piped or logged output is not cut at rich's default 80 columns
    (COLUMNS still wins where it is set)."""
    probe = Console(stderr=stderr)
    wide = not probe.is_terminal and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=PIPED_WIDTH) if wide else probe


console = _console(stderr=True)
out = _console()

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Store directory (created if missing).")]
ExistingStoreOpt = Annotated[
    Path, typer.Option("--store", "-s", help="An existing store directory (`r1v-data ingest` makes one).")
]
OptStoreOpt = Annotated[Path | None, typer.Option("--store", "-s", help="Store directory.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; flags override it.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set a.b=value.")]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="Where model requests run: local (this process) or ray (a Ray cluster; needs the ray "
        "extra; tune with --set executor.actors=N, executor.block_size=N). (default: local)",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="The Ray cluster to join (implies --executor ray; auto: the one this node belongs to); "
        "without it --executor ray starts a local cluster.",
    ),
]


def executor_sets(executor: str | None, ray_address: str | None) -> list[str]:
    """--executor and --ray-address as the config keys they set (after the user's --set: flags win);
    a Ray address alone means the Ray executor."""
    if ray_address is not None and executor is None:
        executor = "ray"
    pairs = {"executor.kind": executor, "executor.address": ray_address}
    return [f"{k}={v}" for k, v in pairs.items() if v is not None]


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print a command's result as JSON, or rendered for people."""
    if as_json:
        out.print_json(json.dumps(result, default=str))
    else:
        render(result)


def _print_version(value: bool) -> None:
    if value:
        from r1v_data import __version__

        out.print(f"r1v {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """r1v-data."""


def counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def progress() -> Any:
    """A progress bar on a terminal; elsewhere (logs, CI) a plain line every few seconds."""
    if not console.is_terminal:
        from r1v_data.cli.progress import LogProgress, every_seconds

        return LogProgress(console, every_seconds())
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
