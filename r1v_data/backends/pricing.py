"""What teacher and judge calls cost: the price table (`prices:` in a config, and the YAML file
named by $R1V_PRICES), a meter that charges tokens as results arrive, and the token estimates a
dry run makes before anything is sent.

A model with no configured price costs `None`, shown as tokens only: r1v never makes up a price.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from r1v_data.backends import is_batch_spec
from r1v_data.backends.base import GenRequest
from r1v_data.config import PriceConfig, Prices
from r1v_data.errors import ConfigError

PRICES_ENV = "R1V_PRICES"
IMAGE_TOKENS_MAX = 1600  # providers scale an image down to about this many tokens at most


def load_prices(configured: Prices | None = None) -> Prices:
    """The configured prices over those of the $R1V_PRICES file (a mapping of model → price)."""
    table: Prices = {}
    path = os.environ.get(PRICES_ENV)
    if path:
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            table = {str(k): PriceConfig.model_validate(v) for k, v in dict(doc.get("prices", doc)).items()}
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"${PRICES_ENV}={path}: not a price table ({exc}); see docs/hosted-teachers.md"
            ) from exc
    return {**table, **(configured or {})}


def price_for(prices: Prices, identity: str) -> PriceConfig | None:
    """The price of a teacher by its identity (`openai:gpt-4o`) or its bare model name."""
    model = identity.partition(":")[2] or identity
    return prices.get(identity) or prices.get(model)


def cost(price: PriceConfig | None, prompt_tokens: int, completion_tokens: int, batch: bool) -> float | None:
    if price is None:
        return None
    usd = (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6
    return usd * (1 - price.batch_discount) if batch else usd


@dataclass
class Meter:
    """A run's spending, teacher by teacher; `usd` is None once any teacher has no price."""

    prices: Prices
    charged: dict[str, dict[str, Any]] = field(default_factory=dict)

    def charge(self, identity: str, spec: str, prompt_tokens: int, completion_tokens: int) -> None:
        entry = self.charged.setdefault(identity, {"prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0})
        entry["prompt_tokens"] += prompt_tokens
        entry["completion_tokens"] += completion_tokens
        usd = cost(price_for(self.prices, identity), prompt_tokens, completion_tokens, is_batch_spec(spec))
        entry["usd"] = None if usd is None or entry["usd"] is None else entry["usd"] + usd
        entry["batch"] = is_batch_spec(spec)

    @property
    def usd(self) -> float | None:
        values = [e["usd"] for e in self.charged.values()]
        return None if None in values else round(sum(values), 6)

    def as_dict(self) -> dict[str, Any]:
        return {"usd": self.usd, "by_teacher": self.charged}


class RoundBill:
    """The spending of one round of one backend, read off a result's token counters
    (`prompt_tokens`, `completion_tokens`) since the round began; charged to the meter at the end."""

    def __init__(self, meter: Meter | None, identity: str, spec: str, result: Any):
        self.meter, self.identity, self.spec, self.result = meter, identity, spec, result
        self.before = (result.prompt_tokens, result.completion_tokens)
        self.price = price_for(meter.prices, identity) if meter else None

    def tokens(self) -> tuple[int, int]:
        return self.result.prompt_tokens - self.before[0], self.result.completion_tokens - self.before[1]

    def note(self, sent: int, to_send: int) -> str | None:
        """ "$1.20 of ~$4.80": spent so far and, at the average so far, the whole round."""
        if self.price is None:
            return None
        spent = cost(self.price, *self.tokens(), is_batch_spec(self.spec)) or 0.0
        projected = f" of ~${spent / sent * to_send:,.2f}" if sent else ""
        return f"${spent:,.2f}{projected}"

    def close(self) -> None:
        if self.meter is not None:
            self.meter.charge(self.identity, self.spec, *self.tokens())


def prompt_tokens(request: GenRequest) -> int:
    """About how many prompt tokens a request is: 4 characters a token for text, and for each
    image its pixels / 750 up to 1,600 (Anthropic's published rule; OpenAI's tiles come to
    about as much for the images r1v sends)."""
    chars = sum(len(m.text) for m in request.messages) + len(request.assistant_prefix)
    return chars // 4 + sum(_image_tokens(img) for m in request.messages for img in m.images)


def _image_tokens(data: bytes) -> int:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception:  # an unreadable image still costs something: count it at the cap
        return IMAGE_TOKENS_MAX
    return min(IMAGE_TOKENS_MAX, max(1, width * height // 750))


# what the store's traces took, by teacher (failed requests produced no tokens worth counting)
_TOKENS = """SELECT teacher, count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0)
             FROM traces WHERE error IS NULL GROUP BY 1 ORDER BY 1"""


def store_cost(con: Any) -> dict[str, Any]:
    """Tokens by teacher or judge (teachers' from their traces, judges' from their score runs) and
    dollars (what each run charged at the prices it was given: a model that any run had no price
    for has `usd` None, never a guess)."""
    teachers = {t: _entry(n, int(p), int(c)) for t, n, p, c in con.sql(_TOKENS).fetchall()}
    for command, counts in _charging_runs(con):
        by_teacher = ((json.loads(counts) if isinstance(counts, str) else counts).get("cost") or {}).get(
            "by_teacher"
        )
        for teacher, charged in (by_teacher or {}).items():
            mine = teachers.setdefault(teacher, _entry(0, 0, 0))
            if command == "score":  # a judge's tokens are in no trace: its runs count them
                mine["prompt_tokens"] += charged.get("prompt_tokens") or 0
                mine["completion_tokens"] += charged.get("completion_tokens") or 0
            usd = charged.get("usd")
            mine["usd"] = None if usd is None or mine["usd"] is None else mine["usd"] + usd
            mine["priced_runs"] += usd is not None
    for mine in teachers.values():
        if not mine["priced_runs"]:
            mine["usd"] = None  # tokens only: no run priced this model
    values = [m["usd"] for m in teachers.values()]
    return {"usd": None if None in values or not values else round(sum(values), 4), "by_teacher": teachers}


def _entry(traces: int, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "traces": traces,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "usd": 0.0,
        "priced_runs": 0,
    }


def _charging_runs(con: Any) -> list[tuple[str, Any]]:
    sql = "SELECT command, counts FROM runs WHERE command IN ('generate', 'score') AND counts IS NOT NULL"
    try:
        return con.sql(sql).fetchall()
    except duckdb.CatalogException:  # catalog not attached (a writer held it): runs unknown
        return []
