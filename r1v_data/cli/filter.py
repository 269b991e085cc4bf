"""`r1v-data filter` and `r1v-data explain` (registered on the app by cli/main.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from r1v_data.cli.app import (
    ConfigOpt,
    ExecutorOpt,
    ExistingStoreOpt,
    JsonOpt,
    OptStoreOpt,
    RayAddressOpt,
    SetOpt,
    app,
    console,
    emit,
    executor_sets,
    out,
)


@app.command("filter")
def filter_(
    store: OptStoreOpt = None,
    min_score: Annotated[
        int | None, typer.Option(help="tau: keep traces whose reward level (0-5) is >= tau.")
    ] = None,
    iteration: Annotated[
        int | None, typer.Option(help="Iterative SFT step t: tau from the schedule 2, 3, 4, 5 (`schedule`).")
    ] = None,
    errors_from: Annotated[
        str | None,
        typer.Option(
            help="A run id or teacher (e.g. the previous checkpoint's generate run): samples whose latest "
            "trace there is wrong form E_(t-1) and are kept whatever their reward."
        ),
    ] = None,
    reward: Annotated[
        str | None,
        typer.Option(help="rule (default) | rm:MODEL (a reward model) | judge:SPEC (a judge model)."),
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(help="A reward model's raw score -> 0..5: linear:LO,HI | cuts:C1,...,C5 | quantile."),
    ] = None,
    best_k: Annotated[int | None, typer.Option(help="Keep at most k traces per sample, best first.")] = None,
    max_completion_tokens: Annotated[int | None, typer.Option(help="Drop longer traces.")] = None,
    keep_truncated: Annotated[
        bool | None, typer.Option(help="Keep traces cut off at the token limit.")
    ] = None,
    keep_wrong: Annotated[
        bool | None,
        typer.Option(
            "--keep-wrong",
            help="Without --min-score/--iteration, also keep traces that are not verified correct "
            "(wrong, unverifiable, timed out). By default only verified-correct traces are kept.",
        ),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(
            help="SQL expression over the candidate traces, run read-only, e.g. \"teacher = 'vllm:QwQ' AND "
            'completion_tokens < 8000". Columns: request_id sample_id teacher round sample_index trace_run_id '
            "provenance verdict finish_reason prompt_tokens completion_tokens think_closed truncated repetition "
            "think_chars text_chars tokens reward source subject difficulty answer_type n_images (tokens: completion "
            "tokens, or characters / 4 for a trace imported without a count)."
        ),
    ] = None,
    decontaminate: Annotated[
        list[str] | None,
        typer.Option(
            help="Benchmark to decontaminate against (repeatable): a file, a folder or hf:ORG/NAME, "
            "with #name=...&split=...&question=COLUMN options."
        ),
    ] = None,
    dedup: Annotated[
        bool | None, typer.Option("--dedup/--no-dedup", help="Drop duplicate samples. (default: on)")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Select traces to train on: reward threshold, error set, dedup, decontamination; every drop explained."""
    from r1v_data.config import FilterConfig, load_config
    from r1v_data.stages.filter import run_filter

    flags: dict[str, Any] = {
        "store": store, "min_score": min_score, "iteration": iteration, "errors_from": errors_from,
        "reward": reward, "calibration": calibration, "best_k": best_k,
        "max_completion_tokens": max_completion_tokens, "keep_truncated": keep_truncated,
        "keep_wrong": keep_wrong, "where": where,
        "decontaminate": decontaminate or None, "dedup": dedup,
    }  # fmt: skip
    cfg = load_config(
        FilterConfig,
        yaml_path=config,
        section="filter",
        sets=[*(set_ or []), *executor_sets(executor, ray_address)],
        flags=flags,
    )
    with console.status("filter") as status:
        result = run_filter(cfg, progress=lambda step: status.update(f"filter: {step}"))
    emit(result.as_dict(), as_json, _render)


def _render(r: dict[str, Any]) -> None:
    from rich.markup import escape

    out.print(
        escape(
            f"filter (run {r['run_id']}, reward {r['reward']}, tau {r['tau']}): {r['kept']} of {r['traces']} "
            f"traces kept; {sum(r['samples_dropped'].values())} of {r['samples']} samples dropped "
            f"({r['seconds']:.1f} s)"
        ),
        soft_wrap=True,
    )
    out.print(escape(f"kept: {r['selection']}"), soft_wrap=True)
    rewards = r["rewards"]
    out.print(
        f"rewards: {rewards.get('scored', 0)} scored now, {rewards.get('failed', 0)} failed (others cached)"
    )
    if r["error_set"]:
        out.print(f"error set E_(t-1): {r['error_set']} samples")
    if r["sample_checks_from"]:
        out.print(
            f"sample checks: the same samples and settings as filter run {r['sample_checks_from']}, its drops reused"
        )
    if r.get("decisions_from"):
        out.print(
            f"decisions: the same configuration and inputs as filter run {r['decisions_from']}, its decisions copied"
        )
    for label, counts in (("samples dropped", r["samples_dropped"]), ("traces dropped", r["dropped"])):
        if counts:
            out.print(
                f"{label}: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            )
    out.print("explain one: r1v-data explain SAMPLE_ID --store DIR", style="dim")


@app.command()
def explain(
    sample_id: Annotated[str, typer.Argument(help="A sample id, or a unique prefix of one (6+ characters).")],
    store: ExistingStoreOpt,
    as_json: JsonOpt = False,
) -> None:
    """Show a sample's whole history: provenance, scores, traces and verdicts, filter decisions."""
    from r1v_data.stages.explain import explain as explain_sample
    from r1v_data.store import Store

    history = explain_sample(Store.open(store), sample_id)
    emit(history, as_json, _render_history)


def _render_history(h: dict[str, Any]) -> None:
    from rich.markup import escape

    s = h["sample"]
    out.print(f"[bold]{s['sample_id']}[/] from {escape(str(s['source']))} ({escape(str(s['source_id']))})")
    out.print(escape(s["question"]), soft_wrap=True)
    images = ", ".join(f"{i['format']} {i['width']}x{i['height']}" for i in s["images"]) or "none"
    out.print(escape(f"answer: {s['answer']} ({s['answer_type']}); subject {s['subject']}, "
                     f"difficulty {s['difficulty']}; images: {images}"), soft_wrap=True)  # fmt: skip
    for name, rows in h.items():
        if name == "sample" or not rows:
            continue
        out.print(f"\n[bold]{name}[/] ({len(rows)})")
        for row in rows:  # one line per row: wide tables do not fit a terminal
            cells = (f"{k}={_cell(v)}" for k, v in row.items() if v is not None and v != "")
            out.print("  " + escape(" · ".join(cells)), soft_wrap=True, highlight=False)


def _cell(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 120 else text[:117] + "..."
