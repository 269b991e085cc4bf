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
(exit 1) and is run again next time, so an interrupted pipeline resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from r1v_data.errors import ConfigError, R1VError

_TOOLS = ("r1v-data", "r1v-train")


class StepFailed(R1VError):
    """A pipeline step exited non-zero; its manifest holds the output's tail."""


@dataclass
class Step:
    index: int
    name: str
    argv: list[str]
    t: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.t is None else f"{self.name}[t={self.t}]"

    @property
    def manifest_name(self) -> str:
        suffix = "" if self.t is None else f"-t{self.t}"
        return f"{self.index:02d}-{self.name}{suffix}.json"

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.argv).encode()).hexdigest()[:16]


@dataclass
class RunResult:
    pipeline: str
    workdir: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_pipeline(path: Path, sets: list[str] | None = None) -> tuple[Path, list[Step]]:
    """The working folder and the expanded steps, every `{name}` resolved."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(doc, dict) or "workdir" not in doc:
        raise ConfigError(
            f"{path}: a pipeline is a mapping with `workdir` and steps (see pipelines/r1v.yaml)"
        )
    unknown = set(doc) - {"workdir", "vars", "per_iteration", "iterations", "setup", "iterate", "finish"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    variables = {k: str(v) for k, v in (doc.get("vars") or {}).items()}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if sep and key.startswith("vars."):
            variables[key[5:]] = value
        elif sep and key in ("workdir", "iterations"):
            doc[key] = value
        else:
            raise ConfigError(f"--set {item!r}: expected vars.NAME=VALUE, workdir=DIR or iterations=T")
    variables["workdir"] = _fill(str(doc["workdir"]), variables, "workdir")
    variables = {k: _fill(v, variables, f"vars.{k}") for k, v in variables.items()}  # may use {workdir}
    iterations = int(doc.get("iterations", 1))
    variables["T"] = str(iterations)
    steps: list[Step] = []
    for step in doc.get("setup") or []:
        steps.append(_step(len(steps), step, variables, None))
    per_iteration = doc.get("per_iteration") or {}
    for t in range(1, iterations + 1):
        at_t = {**variables, "t": str(t), "t_prev": str(t - 1),
                **{k: str(v[min(t, len(v)) - 1]) for k, v in per_iteration.items()}}  # fmt: skip
        for step in doc.get("iterate") or []:
            if step.get("from", 1) <= t <= step.get("until", iterations):
                steps.append(_step(len(steps), step, at_t, t))
    for step in doc.get("finish") or []:
        steps.append(_step(len(steps), step, variables, None))
    return Path(variables["workdir"]), steps


def _step(index: int, spec: Any, variables: dict[str, str], t: int | None) -> Step:
    if not isinstance(spec, dict) or not {"name", "run"} <= set(spec):
        raise ConfigError(f"step {index + 1}: expected a mapping with `name` and `run`, got {spec!r}")
    unknown = set(spec) - {"name", "run", "from", "until"}
    if unknown:
        raise ConfigError(f"step {spec['name']!r}: unknown keys {sorted(unknown)}")
    argv = shlex.split(_fill(str(spec["run"]), variables, spec["name"]))
    if not argv or argv[0] not in _TOOLS:
        raise ConfigError(f"step {spec['name']!r}: a step runs one of {', '.join(_TOOLS)}, not {argv[:1]}")
    return Step(index, str(spec["name"]), argv, t)


def _fill(text: str, variables: dict[str, str], where: str) -> str:
    try:
        return text.format(**variables)
    except KeyError as exc:
        raise ConfigError(
            f"step {where!r}: {{{exc.args[0]}}} is not defined (vars, per_iteration, t, t_prev)"
        ) from exc


def run_pipeline(path: Path, sets: list[str] | None = None, *, echo: Any = print) -> RunResult:
    workdir, steps = load_pipeline(path, sets)
    (workdir / "steps").mkdir(parents=True, exist_ok=True)
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
        echo(f"run  {step.label}: {shlex.join(step.argv)}")
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
    manifest.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
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
