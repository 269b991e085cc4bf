"""Mixing recipes: how many times each selected SFT row is written.

    seed: 0
    components:
      - name: mathvision
        where: "source = 'testmini'"       # SQL over the selected rows (sandboxed, as --where)
        weight: 2.0                        # every row twice; 1.5 = once, and a seeded half again
      - name: geometry
        where: "subject LIKE '%geometry%'"
        rows: 5000                         # exactly this many: a seeded subset, or repeats when short

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
from pydantic import Field, model_validator

from r1v_data import sandbox
from r1v_data.config import Strict
from r1v_data.errors import ConfigError


class Component(Strict):
    name: str
    where: str = "true"
    weight: float | None = Field(None, ge=0.0)
    rows: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_size(self) -> Component:
        if (self.weight is None) == (self.rows is None):
            raise ValueError(f"component {self.name!r}: give weight or rows (one of them)")
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
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"recipe {path}: {' '.join(str(exc).split())}") from None


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
        picked = _pick(recipe.seed, c, ids)
        counts.update(picked)
        realised.append({"component": c.name, "available": len(ids), "rows": sum(picked.values()),
                         "tokens": sum((tokens[i] or 0) * n for i, n in picked.items())})  # fmt: skip
    return counts, realised


def _pick(seed: int, c: Component, ids: list[str]) -> Counter[str]:
    if not ids:
        return Counter()
    if c.weight is not None:
        whole, part = divmod(c.weight, 1.0)
        return Counter({i: int(whole) + (_rank(seed, c.name, i) < part) for i in ids})
    assert c.rows is not None
    full, rest = divmod(c.rows, len(ids))  # every row `full` times, then `rest` of them once more
    ordered = sorted(ids, key=lambda i: _rank(seed, c.name, i))
    return Counter({i: full + (k < rest) for k, i in enumerate(ordered)})
