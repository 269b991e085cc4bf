"""A pipeline file (`r1v-data run PIPELINE.yaml`) read, checked and expanded into steps.

Everything a hostile or mistyped file can hold is refused here with one line that names the file
and what to change: not a mapping, unknown keys (with the nearest valid one), steps that are not
a list of `{name, run}` mappings, a name that is not a plain file name (it names the step's
manifest), a `run` that does not split like a shell line, vars that are not plain values,
`iterations` that is not a whole number, and `{...}` fields that are not a defined name (only
`{name}` is filled: no positions, attributes or format specs; `{{` and `}}` are literal braces).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from r1v_data.config import yaml_problem
from r1v_data.errors import ConfigError
from r1v_data.redact import redact

TOOLS = ("r1v-data", "r1v-train")
KEYS = ("workdir", "vars", "per_iteration", "iterations", "setup", "iterate", "finish")
BLOCKS = ("setup", "iterate", "finish")
STEP_KEYS = ("name", "run", "from", "until")
MAX_ITERATIONS = 100  # the paper runs 4; a typo's 10**9 must not expand into a billion steps
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a step's name names its manifest file
_VAR = re.compile(r"[A-Za-z_]\w*")
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


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

    @property
    def command(self) -> str:
        """The command line as it may be shown or stored: without credentials."""
        return redact(shlex.join(self.argv))


def load_pipeline(path: Path, sets: list[str] | None = None) -> tuple[Path, list[Step]]:
    """The working folder and the expanded steps, every `{name}` resolved."""
    text, doc = _read(Path(path))
    bad = _Complaint(path)
    unknown = sorted(set(doc) - set(KEYS), key=str)
    if unknown:
        raise bad(
            f"unknown key {unknown[0]!r}{_nearest(str(unknown[0]), KEYS)}; a pipeline has {', '.join(KEYS)}"
        )
    if "workdir" not in doc:
        raise bad("no `workdir`: a pipeline is a mapping with `workdir` and steps (see pipelines/r1v.yaml)")
    variables = _vars(doc.get("vars"), bad)
    _apply_sets(doc, variables, sets or [], _referenced(text), bad)
    variables["workdir"] = _fill(_plain(doc["workdir"], "workdir", bad), variables, "workdir", bad)
    if not variables["workdir"]:
        raise bad("`workdir` is empty: name the folder the steps' manifests go to")
    variables = {k: _fill(v, variables, f"vars.{k}", bad) for k, v in variables.items()}  # may use {workdir}
    iterations = _iterations(doc.get("iterations", 1), bad)
    variables["T"] = str(iterations)
    per_iteration = _per_iteration(doc.get("per_iteration"), bad)
    blocks = {block: _specs(doc.get(block), block, bad) for block in BLOCKS}
    if not any(blocks.values()):
        raise bad("no steps: give `setup`, `iterate` or `finish` as a list of {name, run} steps")
    return Path(variables["workdir"]), _expand(blocks, variables, per_iteration, iterations, bad)


class _Complaint:
    """Builds the one-line errors of one file."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {message}")


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({yaml_problem(exc)})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path}: a pipeline is a mapping with `workdir` and steps (see pipelines/r1v.yaml)"
        )
    return text, doc


def _expand(
    blocks: dict[str, list[dict[str, Any]]],
    variables: dict[str, str],
    per_iteration: dict[str, list[str]],
    iterations: int,
    bad: _Complaint,
) -> list[Step]:
    steps: list[Step] = []
    for spec in blocks["setup"]:
        steps.append(_step(len(steps), spec, variables, None, bad))
    for t in range(1, iterations + 1):
        at_t = {**variables, "t": str(t), "t_prev": str(t - 1),
                **{k: v[min(t, len(v)) - 1] for k, v in per_iteration.items()}}  # fmt: skip
        for spec in blocks["iterate"]:
            if spec.get("from", 1) <= t <= spec.get("until", iterations):
                steps.append(_step(len(steps), spec, at_t, t, bad))
    for spec in blocks["finish"]:
        steps.append(_step(len(steps), spec, variables, None, bad))
    return steps


def _step(
    index: int, spec: dict[str, Any], variables: dict[str, str], t: int | None, bad: _Complaint
) -> Step:
    name = spec["name"]
    try:
        argv = shlex.split(_fill(spec["run"], variables, f"step {name!r}", bad))
    except ValueError as exc:
        raise bad(f"step {name!r}: its run line does not split like a shell line ({exc})") from None
    if not argv or argv[0] not in TOOLS:
        raise bad(f"step {name!r}: a step runs one of {', '.join(TOOLS)}, not {argv[:1]}")
    return Step(index, name, argv, t)


def _specs(value: Any, block: str, bad: _Complaint) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(f"`{block}` must be a list of steps, each {{name: NAME, run: COMMAND}}")
    return [_spec(spec, f"{block}[{i}]", bad) for i, spec in enumerate(value)]


def _spec(spec: Any, where: str, bad: _Complaint) -> dict[str, Any]:
    if not isinstance(spec, dict) or not {"name", "run"} <= set(spec):
        raise bad(f"{where}: a step is a mapping with `name` and `run`, not {_short(spec)}")
    unknown = sorted(set(spec) - set(STEP_KEYS), key=str)
    if unknown:
        raise bad(f"{where}: unknown key {unknown[0]!r}{_nearest(str(unknown[0]), STEP_KEYS)}")
    if not isinstance(spec["name"], str) or not _NAME.fullmatch(spec["name"]):
        raise bad(
            f"{where}: name {_short(spec['name'])} must be letters, digits, '.', '_' or '-' (a file name)"
        )
    if not isinstance(spec["run"], str) or not spec["run"].strip():
        raise bad(f"{where}: run must be one command line (a string), not {_short(spec['run'])}")
    for key in ("from", "until"):
        if key in spec and not _whole(spec[key], 1):
            raise bad(f"{where}: `{key}` must be an iteration number (1, 2, ...), not {_short(spec[key])}")
    return spec


def _vars(value: Any, bad: _Complaint) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad("`vars` must be a mapping of names to values")
    return {_var_name(k, "vars", bad): _plain(v, f"vars.{k}", bad) for k, v in value.items()}


def _per_iteration(value: Any, bad: _Complaint) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad("`per_iteration` must be a mapping of names to lists (the value at t = 1, 2, ...)")
    out = {}
    for k, v in value.items():
        where = f"per_iteration.{_var_name(k, 'per_iteration', bad)}"
        if not isinstance(v, list) or not v:
            raise bad(f"{where} must be a non-empty list, one value per iteration (the last repeats)")
        out[k] = [_plain(x, where, bad) for x in v]
    return out


def _iterations(value: Any, bad: _Complaint) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # from --set
    if not _whole(value, 0) or value > MAX_ITERATIONS:
        raise bad(f"iterations must be a whole number from 0 to {MAX_ITERATIONS}, not {_short(value)}")
    return value


def _apply_sets(
    doc: dict[str, Any], variables: dict[str, str], sets: list[str], referenced: set[str], bad: _Complaint
) -> None:
    """`--set vars.NAME=VALUE`, `--set workdir=DIR`, `--set iterations=T`; a typo names the nearest."""
    known = ["workdir", "iterations", *(f"vars.{k}" for k in sorted({*variables, *referenced}))]
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected vars.NAME=VALUE, workdir=DIR or iterations=T")
        if key not in known:
            raise ConfigError(
                f"--set {key}: {bad.path} has no such key{_nearest(key, known)}; "
                "expected vars.NAME=VALUE (a name the pipeline uses), workdir=DIR or iterations=T"
            )
        if key.startswith("vars."):
            variables[key[5:]] = value
        else:
            doc[key] = value


def _fill(text: str, variables: dict[str, str], where: str, bad: _Complaint) -> str:
    def field(m: re.Match[str]) -> str:
        token, name = m.group(0), m.group(1)
        if token in ("{{", "}}"):
            return token[0]
        if name is None:
            raise bad(f"{where}: a lone {token!r}; write {token * 2} for a literal brace")
        if name not in variables:
            what = "is not a plain name" if not _VAR.fullmatch(name) else "is not defined"
            raise bad(
                f"{where}: {{{name}}} {what}{_nearest(name, variables)} (names come from vars, "
                "per_iteration, t, t_prev, T and workdir)"
            )
        return variables[name]

    return _FIELD.sub(field, text)


def _referenced(text: str) -> set[str]:
    return {m.group(1) for m in _FIELD.finditer(text) if m.group(1) and _VAR.fullmatch(m.group(1))}


def _var_name(key: Any, where: str, bad: _Complaint) -> str:
    if not isinstance(key, str) or not _VAR.fullmatch(key):
        raise bad(f"{where}: {_short(key)} is not a name (letters, digits and '_', not first a digit)")
    return key


def _plain(value: Any, where: str, bad: _Complaint) -> str:
    if isinstance(value, (dict, list)):
        raise bad(f"{where} must be a plain value (text or a number), not {_short(value)}")
    return "" if value is None else str(value)


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _nearest(key: str, choices: Any) -> str:
    near = difflib.get_close_matches(key, [str(c) for c in choices], n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
