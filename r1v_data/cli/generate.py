"""`r1v-data generate`: distil traces from a teacher."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from r1v_data.cli.app import (
    ConfigOpt,
    ExecutorOpt,
    JsonOpt,
    OptStoreOpt,
    RayAddressOpt,
    SetOpt,
    app,
    counts,
    emit,
    executor_sets,
    out,
    progress,
)


@app.command()
def generate(
    store: OptStoreOpt = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="builtin | hf:MODEL | openai:URL#MODEL | vllm:MODEL | openai-batch:URL#MODEL | "
            "anthropic:MODEL | anthropic-batch:MODEL. (default: builtin, a weak embedded model for trying r1v out)"
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Self-distillation rounds: round r+1 retries the "
            "problems with no correct trace yet. (default: 1)"
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Samples per problem. (default: 1)")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many problems.")] = None,
    where: Annotated[
        str | None, typer.Option(help='SQL filter over samples, e.g. "difficulty >= 3".')
    ] = None,
    reviser: Annotated[
        str | None,
        typer.Option(
            help="A judge (backend spec) that rewrites each unsolved problem's wrong trace, given the "
            "reference answer, after the last round; rewrites are marked revised in provenance."
        ),
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="(default: 0.6)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion token limit. (default: 1024)")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="(default: 1.0)")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed. (default: 0)")] = None,
    retry_failed: Annotated[
        bool | None,
        typer.Option(
            "--retry-failed",
            help="Send again the requests a server rejected for good (HTTP 4xx) on earlier runs; by "
            "default they are recorded once, with the server's message, and skipped.",
        ),
    ] = None,
    adaptive_length: Annotated[
        bool | None,
        typer.Option(
            "--adaptive-length/--fixed-length",
            help="AL-CoTD: set each sample's repetition penalty (and, with drlc.max_tokens_range, its "
            "token budget) from its QDAM/VTIA scores; run `r1v-data score` first. (default: fixed)",
        ),
    ] = None,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="With a batch teacher or reviser (openai-batch:, anthropic-batch:): submit the batches, "
            "collect what has finished, and exit; run the same command again later to collect the rest.",
        ),
    ] = False,
    dry_run: Annotated[
        bool | None,
        typer.Option(
            "--dry-run",
            help="Print the requests this run would send, their expected tokens and their cost (with "
            "prices configured); send nothing, write nothing.",
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Distil <think> traces from a teacher; resumable, verified, over self-distillation rounds."""
    from r1v_data.config import GenerateConfig, load_config
    from r1v_data.stages.generate import run_generate

    sampling = {
        k: v
        for k, v in {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "repetition_penalty": repetition_penalty,
            "seed": seed,
        }.items()
        if v is not None
    }
    sets = list(set_ or []) + [f"sampling.{k}={v}" for k, v in sampling.items()]
    flags = {
        "store": store,
        "teacher": teacher,
        "rounds": rounds,
        "n": n,
        "limit": limit,
        "where": where,
        "reviser": reviser,
        "adaptive_length": adaptive_length,
        "retry_failed": retry_failed,
        "dry_run": dry_run,
    }
    cfg = load_config(
        GenerateConfig,
        yaml_path=config,
        section="generate",
        sets=sets + executor_sets(executor, ray_address),
        flags=flags,
    )
    if no_wait:
        _no_wait(cfg)
    if cfg.dry_run:
        from r1v_data.stages.generate_estimate import estimate_generate

        emit(estimate_generate(cfg), as_json, render_estimate)
        return
    with progress() as bar:
        task = bar.add_task(f"generate ({cfg.teacher})", total=None, rate="")

        def on_progress(done: int, total: int | None, tokens: int, note: str = "", cost: str = "") -> None:
            elapsed = bar.tasks[task].elapsed or 0.0
            rate = note or (f"{tokens / elapsed:,.0f} tok/s" if elapsed > 0 else "")
            bar.update(task, completed=done, total=total, rate=f"{rate} · {cost}" if cost else rate)

        result = run_generate(cfg, progress=on_progress)
    emit(result.as_dict(), as_json, _render_generate)


def _no_wait(cfg: Any) -> None:
    from r1v_data.backends import is_batch_spec
    from r1v_data.errors import ConfigError

    batch = [opts for spec, opts in ((cfg.teacher, cfg.teacher_options), (cfg.reviser, cfg.reviser_options))
             if is_batch_spec(spec)]  # fmt: skip
    if not batch:
        raise ConfigError(
            "--no-wait needs a batch teacher or reviser (openai-batch:URL#MODEL, anthropic-batch:MODEL)"
        )
    for options in batch:
        options["wait"] = False


def _render_generate(r: dict[str, Any]) -> None:
    from rich.markup import escape

    out.print(
        escape(
            f"generate with {r['teacher']} (run {r['run_id']}): {r['requests']} requests, "
            f"{r['skipped']} already done, {r['sent']} sent, {r['refused']} refused, "
            f"{r['completion_tokens']:,} completion tokens in {r['seconds']:.1f} s "
            f"({r['completion_tokens_per_s']:,} tok/s)"
        ),
        soft_wrap=True,
    )
    out.print(
        "verdicts: " + (counts(r["verdicts"]) or "none"),
        soft_wrap=True,
    )
    out.print(f"truncated: {r['truncated']}, repetition loops: {r['repetition']}", soft_wrap=True)
    out.print(escape("cost: " + describe_cost(r.get("cost") or {}, r["prompt_tokens"], r["completion_tokens"])),
              soft_wrap=True)  # fmt: skip
    if r["failed"]:
        out.print(
            escape("failed: " + counts(r["failed"])),
            soft_wrap=True,
        )
    if r.get("waiting"):
        w = r["waiting"]
        out.print(
            f"waiting: {w['requests']} requests in {w['batches']} provider batches; run the same command "
            "again to collect them (nothing is sent twice)",
            soft_wrap=True,
        )
    for rnd in r["rounds"]:
        out.print(
            f"round {rnd['round']}: {rnd.get('samples', 0)} problems, {rnd.get('requests', 0)} requests, "
            f"{rnd.get('skipped', 0)} already done, {rnd.get('sent', 0)} sent",
            soft_wrap=True,
        )


def describe_cost(cost: dict[str, Any], prompt_tokens: int, completion_tokens: int) -> str:
    tokens = f"{prompt_tokens:,} prompt + {completion_tokens:,} completion tokens"
    if cost.get("usd") is None:
        unpriced = [t for t, e in (cost.get("by_teacher") or {}).items() if e.get("usd") is None]
        return f"{tokens} (no price configured for {', '.join(unpriced) or 'this teacher'}: tokens only)"
    return f"${cost['usd']:,.4f} for {tokens}"


def render_estimate(e: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "", "teacher", "requests", "prompt tokens", "completion tokens", "cost", title="dry run: nothing sent"
    )
    for line in [*e["lines"], {**e["total"], "what": "total", "teacher": ""}]:
        usd = "no price" if line["usd"] is None else f"${line['usd']:,.2f}"
        batch = " (batch)" if line.get("batch") else ""
        table.add_row(escape(line["what"]), escape(line["teacher"] + batch), f"{line['requests']:,}",
                      f"{line['prompt_tokens']:,}", f"{line['completion_tokens']:,}", usd)  # fmt: skip
    out.print(table)
    first = e["lines"][0]
    out.print(escape(f"{e['problems']} problems; {first['skipped']} requests already done, {first['refused']} "
                     f"refused; completions counted at {first['completion_basis']}"), soft_wrap=True)  # fmt: skip
