"""Mixing recipes: how many times each selected SFT row is written.

    seed: 0
    components:
      - name: mathvision
        where: "source = 'testmini'"       # SQL over the selected rows (sandboxed, as --where)
        weight: 2.0                        # every row twice; 1.5 = once, and a seeded half again
      - name: geometry
        where: "subject LIKE '%geometry%'"
        rows: 5000                         # exactly this many: a seeded subset, or repeats when short
        stratify: difficulty               # ...split across difficulty levels as they are represented
                                           # ([difficulty, subject]: across their combinations)
      - name: long-chains
        where: "tokens > 4000"
        tokens: 20000000                   # rows in seeded order until the token budget is reached

Columns a component's `where` sees: request_id sample_id teacher source subject difficulty
answer_type completion_tokens text_chars tokens (completion tokens, or characters / 4 for imports
without a count; the realised mixture counts these). A row in several components is written once per
component it falls in (their counts add); a row in none is not written. Sampling is decided by
a hash of (seed, component, request id), so the same recipe and seed give the same mixture.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from pydantic import Field, ValidationError, model_validator

from r1v_data.config import Strict
from r1v_data.errors import ConfigError
from r1v_data.store import sandbox


class Component(Strict):
    name: str
    where: str = "true"
    weight: float | None = Field(None, ge=0.0)
    rows: int | None = Field(None, ge=0)
    tokens: int | None = Field(None, ge=0, description="a token budget")
    stratify: str | list[str] | None = Field(
        None, description="a column or columns: rows or tokens split across their (combined) values"
    )

    @model_validator(mode="after")
    def _one_size(self) -> Component:
        if sum(x is not None for x in (self.weight, self.rows, self.tokens)) != 1:
            raise ValueError(f"component {self.name!r}: give one of weight, rows or tokens")
        if self.stratify and self.weight is not None:
            raise ValueError(f"component {self.name!r}: stratify needs a rows or tokens target, not a weight")
        return self


class Recipe(Strict):
    seed: int = 0
    components: list[Component] = Field(min_length=1)


def load_recipe(path: Path) -> Recipe:
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
        return Recipe.model_validate(doc.get("mix", doc) if isinstance(doc, dict) else doc)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'recipe'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"recipe {path}: {problems}") from None


def _rank(seed: int, name: str, request_id: str) -> float:
    """A stable pseudo-random number in [0, 1) for one row of one component."""
    digest = hashlib.blake2b(f"{seed}\0{name}\0{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def copies(recipe: Recipe, rows: pa.Table) -> tuple[Counter[str], list[dict[str, Any]]]:
    """How many times each request id is written, and the realised mixture per component."""
    counts: Counter[str] = Counter()
    tokens = dict(zip(rows.column("request_id").to_pylist(), rows.column("tokens").to_pylist(), strict=True))
    realised = []
    for c in recipe.components:
        ids = sandbox.matching(
            rows, c.where, f"the selected SFT rows (recipe component {c.name!r})", "request_id"
        )
        picked = (
            _stratified(recipe.seed, c, ids, rows, tokens)
            if c.stratify
            else _pick(recipe.seed, c, ids, tokens)
        )
        counts.update(picked)
        realised.append({"component": c.name, "available": len(ids), "rows": sum(picked.values()),
                         "tokens": sum((tokens[i] or 0) * n for i, n in picked.items())})  # fmt: skip
    return counts, realised


def _pick(seed: int, c: Component, ids: list[str], tokens: dict[str, int | None]) -> Counter[str]:
    if not ids:
        return Counter()
    if c.weight is not None:
        whole, part = divmod(c.weight, 1.0)
        return Counter({i: int(whole) + (_rank(seed, c.name, i) < part) for i in ids})
    ordered = sorted(ids, key=lambda i: _rank(seed, c.name, i))
    if c.rows is not None:
        full, rest = divmod(c.rows, len(ids))  # every row `full` times, then `rest` of them once more
        return Counter({i: full + (k < rest) for k, i in enumerate(ordered)})
    return _token_budget(c, ordered, tokens)


def _token_budget(c: Component, ordered: list[str], tokens: dict[str, int | None]) -> Counter[str]:
    """Rows in seeded order, passing over them again when short, until the budget is reached."""
    assert c.tokens is not None
    total = sum(tokens[i] or 0 for i in ordered)
    if total == 0:
        raise ConfigError(f"recipe component {c.name!r}: a token budget, but its rows have no tokens")
    full, left = divmod(c.tokens, total)
    out = Counter({i: full for i in ordered if full})
    for i in ordered:
        if left <= 0:
            break
        out[i] += 1
        left -= tokens[i] or 0
    return out


def _stratified(
    seed: int, c: Component, ids: list[str], rows: pa.Table, tokens: dict[str, int | None]
) -> Counter[str]:
    """The target split across the values of `c.stratify` in proportion to what each holds."""
    assert c.stratify is not None
    columns = [c.stratify] if isinstance(c.stratify, str) else c.stratify
    for column in columns:
        if column not in rows.column_names:
            raise ConfigError(f"recipe component {c.name!r}: no column {column!r} to stratify by")
    keys = zip(*(rows.column(column).to_pylist() for column in columns), strict=True)
    value = {
        i: k if len(columns) > 1 else k[0]
        for i, k in zip(rows.column("request_id").to_pylist(), keys, strict=True)
    }
    strata: dict[Any, list[str]] = {}
    for i in ids:
        strata.setdefault(value[i], []).append(i)
    target = c.rows if c.rows is not None else c.tokens
    assert target is not None
    shares = _largest_remainder(target, {k: len(v) for k, v in strata.items()})
    out: Counter[str] = Counter()
    for key, members in strata.items():
        label = "/".join(map(str, key)) if isinstance(key, tuple) else key
        part = c.model_copy(update={"stratify": None, "name": f"{c.name}/{label}"})
        part = part.model_copy(
            update={"rows": shares[key]} if c.rows is not None else {"tokens": shares[key]}
        )
        out.update(_pick(seed, part, members, tokens))
    return out


def _largest_remainder(total: int, sizes: dict[Any, int]) -> dict[Any, int]:
    """`total` split in proportion to `sizes`, in whole numbers that add up to it."""
    whole = sum(sizes.values())
    exact = {k: total * n / whole for k, n in sizes.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: total - sum(out.values())]:
        out[k] += 1
    return out
