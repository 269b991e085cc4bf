"""`r1v-data run PIPELINE.yaml`: a recipe's steps in order, each a real `r1v-data` or `r1v-train`
command line, with finished steps skipped on a re-run.

A pipeline file (see `pipelines/r1v.yaml`) has:

- `vars`: names used as `{name}` in the steps (`--set vars.NAME=VALUE` overrides one);
- `per_iteration`: names whose value depends on t, as a list (the last value repeats);
- `iterations`: T (also `{T}` in the steps);
- `setup`, `iterate` and `finish`: lists of steps. `iterate` runs for t = 1..T with `{t}` and
  `{t_prev}` (t - 1) defined; a step there may say `from: 2` or `until: 1`.

A step is `{name, run}`: `run` is one command line (split like a shell would, without a shell).
Each finished step writes `WORKDIR/steps/NN-name[-t].json`: the command, its exit status, its
time, and its result (the command's `--json` output when it printed JSON). A step is skipped when
its manifest says it succeeded with the very same command line and no step before it ran in this
run (a step that runs may change what the later ones read); a failed step stops the pipeline
(exit 1) and is run again next time, so an interrupted pipeline resumes where it stopped. The
file is read, checked and expanded by `pipeline_file.py`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1v_data.errors import ConfigError, R1VError
from r1v_data.redact import redact, redact_value
from r1v_data.stages.pipeline_file import Step, load_pipeline

__all__ = ["RunResult", "Step", "StepFailed", "load_pipeline", "run_pipeline"]


class StepFailed(R1VError):
    """A pipeline step exited non-zero; its manifest holds the output's tail."""


@dataclass
class RunResult:
    pipeline: str
    workdir: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_pipeline(path: Path, sets: list[str] | None = None, *, echo: Any = print) -> RunResult:
    workdir, steps = load_pipeline(path, sets)
    try:
        (workdir / "steps").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot create {workdir}/steps ({exc.strerror or exc}): fix `workdir`"
        ) from exc
    result = RunResult(str(path), str(workdir))
    start = time.perf_counter()
    ran_one = False
    for step in steps:
        manifest = workdir / "steps" / step.manifest_name
        # after a step has run, the later ones run too: their inputs may have changed
        if not ran_one and _finished(manifest, step):
            result.skipped.append(step.label)
            echo(f"skip {step.label}: done ({manifest.name})")
            continue
        echo(f"run  {step.label}: {step.command}")
        _execute(step, manifest)
        result.ran.append(step.label)
        ran_one = True
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _finished(manifest: Path, step: Step) -> bool:
    try:
        done = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return done.get("status") == "ok" and done.get("digest") == step.digest


def _execute(step: Step, manifest: Path) -> None:
    executable = _tool(step.argv[0])
    started = time.time()
    proc = subprocess.run(
        [executable, *step.argv[1:]], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    record = {
        "step": step.name, "t": step.t, "argv": step.argv, "digest": step.digest,
        "status": "ok" if proc.returncode == 0 else "failed", "returncode": proc.returncode,
        "started_at": started, "seconds": round(time.time() - started, 2),
        "result": _json_or_none(proc.stdout), "stderr_tail": proc.stderr[-4000:],
    }  # fmt: skip
    # the digest is of the real command line; what is stored of it has no credentials
    manifest.write_text(json.dumps(redact_value(record), indent=2, default=str) + "\n")
    if proc.returncode != 0:
        last = redact((proc.stderr.strip().splitlines() or ["(no output)"])[-1])
        raise StepFailed(f"step {step.label} failed (exit {proc.returncode}): {last}; see {manifest}")


def _tool(name: str) -> str:
    """The console script of this installation first, then PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} is not installed here")
    return found


def _json_or_none(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError:
        return stdout[-4000:] or None
