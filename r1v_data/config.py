"""Configuration models and the one loader that owns precedence:
defaults < YAML file < `--set a.b=c` < command-line flags."""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r1v_data.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def model_path_identity(model: str) -> str:
    """A model as r1v records it: a local model by its absolute path (./m and /abs/m are the same
    model), a Hub id as written."""
    return os.path.abspath(model) if os.path.exists(model) else model


def model_identity(kind: str, model: str) -> str:
    """`kind:MODEL` as a teacher column names it."""
    return f"{kind}:{model_path_identity(model)}"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecutorConfig(Strict):
    """Where a stage's model requests run: `local` (this process) or `ray` (Ray Data actor pools
    over a cluster; `pip install 'r1v[ray]'`). The requests, their ids and the rows are the same."""

    kind: Literal["local", "ray"] = Field("local", description="local | ray (--executor)")
    address: str | None = Field(
        None, description="a Ray cluster to join (--ray-address; 'auto' = the one this node runs); "
        "none: join the cluster this process already started, else start a local one"
    )  # fmt: skip
    actors: int = Field(2, ge=1, description="backend copies (actors); one per GPU for vllm: teachers")
    block_size: int = Field(
        256, ge=1, description="requests per Ray task: the unit a retry redoes; keep it well above "
        "the backend's concurrency, which a block's requests share"
    )  # fmt: skip
    num_cpus: float = Field(1.0, ge=0, description="CPUs each actor reserves")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs each actor reserves (default: tensor x pipeline parallel size "
        "for vllm: teachers, 0 otherwise)"
    )  # fmt: skip
    window: int = Field(20000, ge=1, description="requests the driver hands Ray at a time (its memory)")


class IngestConfig(Strict):
    store: Path
    sources: list[str] = Field(min_length=1)
    preset: str | None = None
    mapping: dict[str, list[str]] = Field(
        default_factory=dict, description="sample field -> source column(s)"
    )
    name: str | None = Field(None, description="source name recorded in provenance (one source only)")
    image_root: Path | None = Field(None, description="folder relative image paths resolve in")
    split: str | None = None
    records_key: str | None = None
    allow_remote_images: bool = False
    max_pixels: int = Field(40_000_000, gt=0)
    max_image_bytes: int = Field(64 << 20, gt=0)
    image_timeout_s: float = Field(20.0, gt=0, description="time limit for fetching one remote image, in all")
    limit: int | None = Field(None, gt=0, description="read at most this many rows per source")
    workers: int = Field(4, ge=1, le=64, description="threads decoding images")
    require_question: bool = Field(
        False, description="quarantine rows with no text question (by default one with an image is kept)"
    )


class PriceConfig(Strict):
    """What a hosted model costs, in US dollars per million tokens (from the provider's price page:
    r1v ships no prices, so a figure it shows is always one you configured)."""

    input_per_mtok: float = Field(ge=0.0, description="dollars per million prompt tokens")
    output_per_mtok: float = Field(ge=0.0, description="dollars per million completion tokens")
    batch_discount: float = Field(
        0.5, ge=0.0, le=1.0, description="share taken off through a batch API (OpenAI and Anthropic: 0.5)"
    )


Prices = dict[str, PriceConfig]  # by model name ("gpt-4o") or teacher identity ("openai:gpt-4o")


class SamplingConfig(Strict):
    """Teacher sampling; R1V distils with temperature around 0.6 and long completions."""

    temperature: float = Field(0.6, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0, le=5.0)
    max_tokens: int = Field(1024, ge=1, le=262_144)
    seed: int | None = Field(0, description="base seed; request seed = seed + 1000*(round-1) + index")


# Measured with the builtin teacher (README, "Choosing the penalty"): from 1.2 up a small
# model can no longer reuse the words of its own question (transformers and vLLM penalise every
# token already seen, prompt included) and its chains turn to word salad.
DEFAULT_PENALTY_RANGE = (1.0, 1.1)


class DRLCConfig(Strict):
    """AL-CoTD's dynamic repetition-penalty controller (DESIGN §1.2); the paper gives no values.

    P = PMIN * exp(alpha * (1 - score)) with alpha = ln(PMAX / PMIN), so the hardest sample gets
    PMIN and the easiest PMAX; with PMIN = 1 this is the paper's formula. Giving `alpha` instead
    uses the paper's formula as written, min(2, exp(alpha * (1 - score))).
    """

    penalty_range: tuple[float, float] | None = Field(
        None,
        description="[PMIN, PMAX]: the penalties of the hardest and the easiest sample (default "
        f"{list(DEFAULT_PENALTY_RANGE)}; `r1v-data calibrate` fits one for a teacher)",
    )
    alpha: float | None = Field(
        None, ge=0.0, description="the paper's alpha (P from 1 to min(2, e^alpha)); or give penalty_range"
    )
    beta: float = Field(1.0, ge=0.0, description="weight of the text score S_t")
    gamma: float = Field(1.0, ge=0.0, description="weight of the integration score S_I")
    max_tokens_range: tuple[int, int] | None = Field(
        None,
        description="beyond the paper: a per-sample completion budget from LOW (easiest) to HIGH "
        "(hardest), linear in the same combined score",
    )

    @model_validator(mode="after")
    def _ordered_ranges(self) -> DRLCConfig:
        low_high = self.max_tokens_range
        if low_high is not None and not 1 <= low_high[0] <= low_high[1]:
            raise ValueError("max_tokens_range must be [LOW, HIGH] with 1 <= LOW <= HIGH")
        if self.penalty_range is not None and self.alpha is not None:
            raise ValueError("give penalty_range or alpha, not both (alpha = ln(PMAX / PMIN))")
        pmin, pmax = self.penalty_range or DEFAULT_PENALTY_RANGE
        if not 1.0 <= pmin <= pmax <= 2.0:
            raise ValueError("penalty_range must be [PMIN, PMAX] with 1 <= PMIN <= PMAX <= 2")
        return self

    @property
    def floor(self) -> float:
        """PMIN, the hardest sample's penalty."""
        return 1.0 if self.alpha is not None else (self.penalty_range or DEFAULT_PENALTY_RANGE)[0]

    @property
    def slope(self) -> float:
        """alpha: given, or derived from the penalty range."""
        if self.alpha is not None:
            return self.alpha
        pmin, pmax = self.penalty_range or DEFAULT_PENALTY_RANGE
        return math.log(pmax / pmin)


class ScoreConfig(Strict):
    store: Path
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    scorers: list[Literal["qdam", "vtia"]] = Field(default_factory=lambda: ["qdam", "vtia"], min_length=1)
    judge: str | None = Field(None, description="backend spec of the judge; local estimators without one")
    judge_options: dict[str, Any] = Field(default_factory=dict)
    judge_max_tokens: int = Field(512, ge=16, description="the judge's reply limit (a JSON object)")
    prices: Prices = Field(default_factory=dict, description="cost per model (also read from $R1V_PRICES)")
    dry_run: bool = Field(False, description="print judge requests, expected tokens and cost; send nothing")
    where: str | None = Field(None, description="SQL filter over the samples table")
    limit: int | None = Field(None, gt=0)
    drlc: DRLCConfig = Field(default_factory=DRLCConfig, description="for the penalty preview")


class FilterConfig(Strict):
    """Selection (DESIGN §1.3): D_t = {x : RM(x) >= tau_t} ∪ E_{t-1}, after dedup and decontamination."""

    store: Path
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    reward: str = Field("rule", description="rule | rm:MODEL | judge:SPEC")
    reward_options: dict[str, Any] = Field(default_factory=dict, description="passed to the RM or judge")
    judge_max_tokens: int = Field(
        1024, ge=16, description="a reward judge's reply limit (reasoning judges think first)"
    )
    calibration: str = Field(
        "quantile", description="raw RM score -> 0..5: linear:LO,HI | cuts:C1..C5 | quantile"
    )
    min_score: int | None = Field(None, ge=0, le=5, description="tau: keep traces with RM >= tau")
    iteration: int | None = Field(None, ge=1, description="t: tau = schedule[t-1]")
    schedule: list[int] = Field(default_factory=lambda: [2, 3, 4, 5], min_length=1)
    errors_from: str | None = Field(
        None, description="a run id or teacher: samples whose latest trace there is wrong (E_{t-1})"
    )

    @field_validator("errors_from")
    @classmethod
    def _local_teacher_by_path(cls, value: str | None) -> str | None:
        """`hf:ckpt` names a teacher the way the hf backend records it: by absolute path."""
        return model_identity("hf", value[3:]) if value and value.startswith("hf:") else value

    best_k: int | None = Field(None, ge=1, description="keep at most k traces per sample, best first")
    max_completion_tokens: int | None = Field(None, ge=1)
    keep_truncated: bool = False
    keep_wrong: bool = Field(
        False,
        description="without a reward threshold, also keep traces not verified correct (by default only "
        "verified-correct traces are kept)",
    )
    where: str | None = Field(None, description="SQL over the candidate traces; runs read-only")
    dedup: bool = True
    near_duplicate_threshold: float = Field(0.8, gt=0.0, le=1.0)
    image_distance: int = Field(4, ge=0, le=31, description="phash bits for near-duplicate images")
    semantic_threshold: float | None = Field(
        None, gt=0.0, le=1.0, description="also drop paraphrases: embedding cosine >= this (extra: semantic)"
    )
    decontaminate: list[str] = Field(default_factory=list, description="benchmark specs")
    ngram: int = Field(13, ge=1)
    contamination_min_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_threshold(self) -> FilterConfig:
        if self.min_score is not None and self.iteration is not None:
            raise ValueError("give --min-score or --iteration, not both")
        if self.iteration is not None and self.iteration > len(self.schedule):
            raise ValueError(f"iteration {self.iteration} is past the schedule {self.schedule}")
        if self.keep_wrong and (self.min_score is not None or self.iteration is not None):
            raise ValueError(
                "give --keep-wrong or a reward threshold (--min-score/--iteration), not both: with a "
                "threshold the reward level decides which traces are kept"
            )
        return self

    @property
    def only_correct(self) -> bool:
        """No reward threshold and no --keep-wrong: only verified-correct traces are kept."""
        return self.min_score is None and self.iteration is None and not self.keep_wrong

    @property
    def tau(self) -> int:
        if self.iteration is not None:
            return self.schedule[self.iteration - 1]
        return self.min_score or 0


class MixConfig(Strict):
    store: Path
    out: Path
    kinds: list[Literal["sft", "rl", "preference"]] = Field(
        default_factory=lambda: ["sft", "rl", "preference"], min_length=1
    )
    shard_bytes: int = Field(256 << 20, ge=1 << 10, description="target Parquet shard size")
    overwrite: bool = Field(False, description="replace a non-empty output folder")
    license: str = Field("other", description="the dataset card's license (that of your sources)")
    recipe: Path | None = Field(
        None, description="a mixing recipe (r1v_data/outputs/recipe.py); without one every row once"
    )
    report: bool = Field(True, description="write report.html (`r1v-data report`) beside the shards")
    report_examples: int = Field(24, ge=0, le=200, description="gallery examples in report.html")


class ReportConfig(Strict):
    """`r1v-data report`: one offline HTML page about a store (and a pipeline workdir's iterations)."""

    store: Path | None = None
    run: str | None = Field(None, description="the filter run to report on (default: the latest)")
    out: Path = Path("report.html")
    examples: int = Field(24, ge=0, le=200, description="gallery examples (thumbnails, traces)")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="teacher spec -> (USD per million prompt, completion tokens)"
    )
    drlc: DRLCConfig = Field(
        default_factory=DRLCConfig, description="the DRLC settings the penalty plot uses"
    )
    pipeline: Path | None = Field(None, description="a `r1v-data run` workdir: its iterations table")

    @model_validator(mode="after")
    def _something(self) -> ReportConfig:
        if self.store is None and self.pipeline is None:
            raise ValueError("give a store (--store) or a pipeline workdir (--pipeline)")
        return self


class ExportConfig(Strict):
    source: Path = Field(description="a folder written by `r1v-data mix`")
    dest: Path
    format: Literal["llamafactory", "easyr1", "verl"] = "llamafactory"
    overwrite: bool = Field(False, description="replace an earlier export in dest")


class GenerateConfig(Strict):
    store: Path
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    teacher: str = Field("builtin", description="builtin | hf:MODEL | openai:URL#MODEL | vllm:MODEL")
    teacher_options: dict[str, Any] = Field(
        default_factory=dict, description="passed to the backend, e.g. batch_size, concurrency"
    )
    rounds: int = Field(1, ge=1, le=20, description="self-distillation rounds")
    n: int = Field(1, ge=1, le=1000, description="samples per problem (seeds step by 1, rounds by 1000)")
    limit: int | None = Field(None, gt=0, description="at most this many samples (stable order)")
    where: str | None = Field(None, description="SQL filter over the samples table")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    image_policy: Literal["caption", "refuse"] = "caption"
    reviser: str | None = Field(
        None,
        description="a judge that rewrites wrong traces, given the reference "
        "answer, after the last round (a backend spec; may equal the teacher)",
    )
    reviser_options: dict[str, Any] = Field(default_factory=dict)
    # a result is durable once journaled (store/journal.py): parts can be large, and no compaction follows
    flush_rows: int = Field(2048, ge=1, description="write a trace part every this many results ...")
    flush_seconds: float = Field(10.0, gt=0, description="... or this many seconds")
    verify_timeout_s: float = Field(5.0, gt=0)
    retry_failed: bool = Field(
        False, description="send again the requests a server rejected for good (4xx) on earlier runs"
    )
    adaptive_length: bool = Field(
        False, description="per-sample repetition penalty from the QDAM/VTIA scores (run score first)"
    )
    drlc: DRLCConfig = Field(default_factory=DRLCConfig)
    prices: Prices = Field(default_factory=dict, description="cost per model (also read from $R1V_PRICES)")
    dry_run: bool = Field(False, description="print requests, expected tokens and cost; send nothing")


class CalibrateConfig(Strict):
    """`r1v-data calibrate`: a teacher at fixed penalties on a sample spread over DRLC's order."""

    store: Path
    teacher: str = Field("builtin", description="builtin | hf:MODEL | openai:URL#MODEL | vllm:MODEL")
    teacher_options: dict[str, Any] = Field(default_factory=dict)
    sample: int = Field(12, ge=3, description="problems, evenly spread from easiest to hardest")
    penalties: list[float] = Field(default_factory=lambda: [1.0, 1.1, 1.2, 1.35, 1.5], min_length=2)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=512))
    where: str | None = Field(None, description="SQL filter over the samples table")
    image_policy: Literal["caption", "refuse"] = "caption"
    shorten: float = Field(
        0.3, gt=0.0, lt=1.0, description="target: this share fewer tokens on the easiest third"
    )
    max_accuracy_loss: float = Field(
        0.0, ge=0.0, le=1.0, description="... losing at most this accuracy there"
    )
    max_formed_loss: float = Field(
        0.1, ge=0.0, le=1.0, description="... and at most this share of well-formed traces"
    )
    drlc: DRLCConfig = Field(default_factory=DRLCConfig, description="beta and gamma order the samples")
    out: Path | None = Field(None, description="write the fitted drlc settings here (YAML)")

    @field_validator("penalties")
    @classmethod
    def _sorted_penalties(cls, value: list[float]) -> list[float]:
        if not all(1.0 <= p <= 2.0 for p in value):
            raise ValueError("penalties must lie in [1, 2]")
        return sorted(set(value))


class ImportTracesConfig(Strict):
    store: Path
    files: list[Path] = Field(min_length=1)
    teacher: str | None = Field(None, description="teacher name (default: each row's `model`)")
    source: str | None = Field(None, description="match ids only among this source's samples")
    records_key: str | None = None


def load_config(
    model: type[M],
    *,
    yaml_path: Path | None = None,
    section: str | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> M:
    """Build `model` from the layers in precedence order; flags that are None are unset."""
    data: dict[str, Any] = {}
    if yaml_path is not None:
        data = _read_yaml(yaml_path, section)
    for item in sets or []:
        key, sep, raw = item.partition("=")
        keys = key.split(".")
        if not sep or not all(keys):
            raise ConfigError(
                f"--set {item}: expected KEY=VALUE (KEY dotted for nested keys), e.g. --set max_pixels=1000000"
            )
        _assign(data, keys, _set_value(key, raw))
    data.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, model) for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where, and what the parser expected."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(getattr(exc, "problem", None) or exc).split())


def _set_value(key: str, raw: str) -> Any:
    if not raw:
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {key}: {raw!r} is not valid YAML ({yaml_problem(exc)}); quote a text value: "
            f"--set '{key}=\"...\"'"
        ) from None


def _describe(error: Any, model: type[BaseModel]) -> str:
    where = ".".join(map(str, error["loc"])) or "config"
    if error["type"] == "missing":
        return f"{where} is required (give it on the command line or in --config)"
    if error["type"] == "extra_forbidden":
        return f"{where}: no such setting{_nearest(error['loc'], model)}"
    return f"{where}: {error['msg']}"


def _nearest(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """`(did you mean 'a.b'?)` for the setting closest to a mistyped one, or nothing."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    near = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?)" if near else ""


def _read_yaml(path: Path, section: str | None) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML ({yaml_problem(exc)})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    if section and isinstance(doc.get(section), dict):
        doc = doc[section]  # a pipeline file may hold one section per stage
    return dict(doc)


def _assign(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {key} is not a mapping")
    data[keys[-1]] = value
