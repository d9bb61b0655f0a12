"""The recipe: what a user declares, validated before anything runs.

A recipe is YAML. Every key is modelled; an unknown key is an error rather than silently
ignored, because a typo in a threshold name would otherwise produce a mixture that looks
right and is not. All relative paths resolve against the recipe file's folder, so a recipe
means the same thing whatever the working directory.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mix_pipeline import layout
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.filters import quality_model
from mix_pipeline.core.filters.decontamination import eval_set_name
from mix_pipeline.core.filters.registry import check_params as check_filter_params
from mix_pipeline.core.filters.registry import path_params
from mix_pipeline.core.io.readers import DEFAULT_MAX_DOCUMENT_BYTES, not_regular
from mix_pipeline.errors import RecipeError
from mix_pipeline.names import (
    DEFAULT_SNAPSHOT,
    FILTER_NAMES,
    PROSE_FILTERS,
    SNAPSHOT_PLACEHOLDER,
    SOURCE_NAME_PATTERN,
    snapshot_name_problem,
)


def _glob_base(pattern: str) -> str:
    """The part of a path pattern before its first wildcard or `{snapshot}` component."""
    head = []
    for part in Path(pattern).parts:
        if any(ch in part for ch in "*?[") or SNAPSHOT_PLACEHOLDER in part:
            break
        head.append(part)
    return os.path.join(*head) if head else "."


class _Strict(BaseModel):
    # NaN and infinity are refused everywhere: `weights: {web: .nan}` would otherwise pass `≥ 0`.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_overrides(value: Any, stages: tuple[str, ...]) -> Any:
    """Validate a `checks:` mapping: known check names for these stages, known parameters."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping {check_name: {parameter: value, severity: error|warn}}")
    quality.validate_overrides(value, stages)
    return value


class TokenizerSpec(_Strict):
    kind: Literal["estimate", "hf"] = "estimate"
    # Local tokenizer.json (tokenizers library); required for kind=hf.
    path: str | None = None
    # Appended after every document in tokenized outputs (must be in the vocabulary).
    eos_token: str | None = None

    @model_validator(mode="after")
    def _path_for_hf(self) -> TokenizerSpec:
        if self.kind == "hf" and not self.path:
            raise ValueError("kind 'hf' needs a 'path' to a local tokenizer.json")
        if self.kind != "hf" and (self.path or self.eos_token):
            raise ValueError("'path' and 'eos_token' only apply to kind 'hf'")
        return self


class FilterSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SourceSpec(_Strict):
    path: str
    format: Literal["jsonl", "parquet", "text", "chat"] = "jsonl"
    text_field: str = "text"
    id_field: str = "id"
    domain: str | None = None
    # Larger records (a JSON line, a Parquet text value, a text file) are quarantined unread
    # (`document_too_large`), so one runaway record cannot exhaust memory.
    max_document_bytes: int = Field(DEFAULT_MAX_DOCUMENT_BYTES, ge=1)
    filters: list[FilterSpec] = Field(default_factory=list)
    # Overrides of the raw/filtered/deduplicated quality gates for this source.
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Licenses (core/mixing/licenses.py): the source's license (an SPDX id), the input field that holds
    # a per-document license, and whether to read license headers (SPDX lines, common texts) of
    # code files. Read at mixture time only: changing them rebuilds no partition.
    license: str | None = None
    license_field: str | None = "license"
    detect_license: bool = False

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> Any:
        return _check_overrides(value, quality.SOURCE_STAGES)

    @field_validator("path")
    @classmethod
    def _snapshot_segment(cls, path: str) -> str:
        # A dated drop is a folder: the placeholder must be one whole path segment.
        if SNAPSHOT_PLACEHOLDER in path:
            segments = path.replace("\\", "/").split("/")
            if path.count(SNAPSHOT_PLACEHOLDER) > 1 or SNAPSHOT_PLACEHOLDER not in segments:
                raise ValueError(f"'{SNAPSHOT_PLACEHOLDER}' must appear once, as a whole folder name (e.g. crawl/{SNAPSHOT_PLACEHOLDER}/*.jsonl.gz)")
        return path

    @field_validator("filters", mode="before")
    @classmethod
    def _normalise_filters(cls, value: Any) -> Any:
        # Accept the short YAML forms `- c4` and `- {language: {languages: [en]}}`.
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of filter names or {name: {params}} mappings")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                name, params = item, {}
            elif isinstance(item, dict) and len(item) == 1:
                name, params = next(iter(item.items()))
                params = params or {}
                if not isinstance(params, dict):
                    raise ValueError(f"[{i}] {name}: parameters must be a mapping")
            else:
                raise ValueError(f"[{i}]: must be a filter name or a one-key mapping {{name: {{params}}}}")
            if name not in FILTER_NAMES:
                raise ValueError(f"[{i}]: unknown filter '{name}' (known: {', '.join(FILTER_NAMES)})")
            try:
                check_filter_params(name, params)
            except ValueError as exc:
                raise ValueError(f"[{i}] {name}: {exc}") from None
            out.append({"name": name, "params": params})
        names = [f["name"] for f in out]
        if len(set(names)) != len(names):
            raise ValueError("a filter is listed twice")
        prose = [n for n in names if n in PROSE_FILTERS]
        if "code_quality" in names and prose:
            raise ValueError(
                f"code_quality replaces the prose filters on code sources; drop {', '.join(prose)} or code_quality"
            )
        return out


class MinhashSpec(_Strict):
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    ngram: int = Field(5, ge=1)
    num_perm: int = Field(128, ge=16, le=1024)
    bands: int = Field(32, ge=1)
    seed: int = 1

    @model_validator(mode="after")
    def _bands_divide(self) -> MinhashSpec:
        if self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm})")
        return self


class DedupSpec(_Strict):
    exact: bool = True
    # false: still cluster (and key splits on clusters) but keep every copy.
    remove: bool = True
    minhash: MinhashSpec | None = Field(default_factory=MinhashSpec)
    priority: list[str] = Field(default_factory=list)
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> Any:
        return _check_overrides(value, ("dedup_index",))


class DecontaminationSpec(_Strict):
    # Globs of JSON-lines eval sets; each file is one eval set, named after the file (qa.jsonl → qa).
    eval_sets: list[str] = Field(min_length=1)
    ngram: int = Field(13, ge=1)
    mode: Literal["drop", "remove_span"] = "drop"
    # The eval records' text field(s); with several, each is indexed on its own.
    text_field: str | list[str] = "text"

    @field_validator("text_field")
    @classmethod
    def _some_field(cls, value: str | list[str]) -> str | list[str]:
        if not value:
            raise ValueError("name at least one field")
        return value

    @property
    def text_fields(self) -> list[str]:
        return [self.text_field] if isinstance(self.text_field, str) else list(self.text_field)


class SplitsSpec(_Strict):
    validation: float = Field(0.0, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitsSpec:
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must leave room for train (sum < 1)")
        return self


class MixtureSourceSpec(_Strict):
    """Per-source overrides inside one mixture."""

    max_epochs: float | None = Field(None, gt=0.0)
    max_fraction: float | None = Field(None, gt=0.0, le=1.0)
    splits: SplitsSpec | None = None


class OutputsSpec(_Strict):
    # Parquet shards are always written; these add formats next to them.
    jsonl: bool = False
    tokenized: bool = False


class MixtureSpec(_Strict):
    unit: Literal["tokens", "documents", "examples"] = "tokens"
    total: int = Field(gt=0)
    # Either explicit weights or a sampling temperature (weights ∝ available units^(1/T)).
    weights: dict[str, float] | None = None
    temperature: float | None = Field(None, gt=0.0)
    # Defaults for every source, overridable under `sources`.
    max_epochs: float = Field(1.0, gt=0.0)
    max_fraction: float = Field(1.0, gt=0.0, le=1.0)
    sources: dict[str, MixtureSourceSpec] = Field(default_factory=dict)
    on_infeasible: Literal["fail", "rebalance"] = "fail"
    splits: SplitsSpec = Field(default_factory=SplitsSpec)
    seed: int = 0
    # Rows per output Parquet shard; fixed so reruns produce the same files.
    shard_rows: int = Field(10_000, gt=0)
    # Relative tolerance the achieved weights are held to (gate and ledger).
    tolerance: float = Field(0.01, gt=0.0, lt=1.0)
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Only documents under these licenses (SPDX ids as core/mixing/licenses.py reports them; `unknown`
    # for documents with none) are drawn; the manifest says how much the others were.
    allowed_licenses: list[str] | None = Field(None, min_length=1)

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> Any:
        return _check_overrides(value, ("mixture",))

    @field_validator("weights")
    @classmethod
    def _weights_sane(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is None:
            return None
        if not weights:
            raise ValueError("needs at least one source")
        for source, w in weights.items():
            if w < 0:
                raise ValueError(f"{source}: weight must be ≥ 0 (got {w})")
        if sum(weights.values()) <= 0:
            raise ValueError("all weights are zero")
        return weights

    @model_validator(mode="after")
    def _one_weighting(self) -> MixtureSpec:
        if (self.weights is None) == (self.temperature is None):
            raise ValueError("give exactly one of 'weights' or 'temperature'")
        if self.weights is not None:
            for source in self.sources:
                if source not in self.weights:
                    raise ValueError(f"sources.{source}: not in weights (list it there, or use temperature)")
        return self

    def source_names(self, recipe_sources) -> list[str]:
        """The sources this mixture draws from, sorted: the weighted ones, or with a temperature
        the ones listed under `sources` (every recipe source when none are listed)."""
        if self.weights is not None:
            return sorted(self.weights)
        return sorted(self.sources or recipe_sources)

    def _override(self, source: str) -> MixtureSourceSpec:
        return self.sources.get(source) or MixtureSourceSpec()

    def max_epochs_of(self, source: str) -> float:
        own = self._override(source).max_epochs
        return self.max_epochs if own is None else own

    def max_fraction_of(self, source: str) -> float:
        own = self._override(source).max_fraction
        return self.max_fraction if own is None else own

    def splits_of(self, source: str) -> SplitsSpec:
        return self._override(source).splits or self.splits


class ProxySpec(_Strict):
    """The lab's proxy language model: `bigram`, an interpolated absolute-discounting word bigram
    model over a hashed (capped) vocabulary, or `neural`, a small byte-level decoder-only
    transformer trained from scratch per candidate (core/lab/neural.py; needs the `lab` extra)."""

    kind: Literal["bigram", "neural"] = "bigram"
    # Words are hashed into this many ids; collisions merge rare words (a capped vocabulary).
    vocab_buckets: int = Field(65_536, ge=256, le=2**20)
    # Absolute discount subtracted from every seen bigram count (Kneser–Ney's usual 0.75).
    discount: float = Field(0.75, gt=0.0, lt=1.0)
    # Add-k smoothing of the unigram distribution the bigrams back off to.
    unigram_k: float = Field(0.1, gt=0.0)
    # neural: width, depth and heads of the transformer (defaults: ~0.8M parameters; d_model 384,
    # layers 8 gives ~14M), the training window in bytes, windows per step, optimizer steps at the
    # lab's `total` (scaled with the data in the transfer check), peak learning rate.
    d_model: int = Field(128, ge=8, le=4096)
    layers: int = Field(4, ge=1, le=64)
    heads: int = Field(4, ge=1, le=64)
    seq_len: int = Field(128, ge=8, le=4096)
    batch: int = Field(16, ge=1, le=4096)
    steps: int = Field(200, ge=1, le=1_000_000)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    # auto = CUDA when torch sees a GPU, else the CPU; threads: fixed CPU threads (determinism).
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(2, ge=1, le=256)
    # Held-out windows scored per domain (evenly spaced over the held-out text).
    eval_windows: int = Field(64, ge=1, le=100_000)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"heads: {self.heads} does not divide d_model {self.d_model}")
        return self


class TransferSpec(_Strict):
    """Does the ranking of candidates hold at larger scale? Re-run some candidates bigger and
    compare rank correlations (core/lab/transfer.py)."""

    # How many candidates are re-run (the prior, uniform, then the draws in order).
    candidates: int = Field(6, ge=3, le=256)
    # A larger neural proxy for the same candidates (small vs larger); none = skip that check.
    larger: ProxySpec | None = None
    # The same candidates at scale x total (neural steps scale with it); 1 = skip that check.
    scale: int = Field(4, ge=1, le=64)


class ExperimentSpec(_Strict):
    """One mixture-lab experiment: proxy-train candidate mixtures, fit weights → loss, recommend."""

    # The named mixture whose weights (and unit, max_epochs) the candidates are drawn around.
    prior: str
    # Dirichlet draws around the prior (the recipe's own mixtures and uniform are added to them).
    candidates: int = Field(12, ge=1, le=256)
    # Dirichlet concentration: α = concentration × n_sources × prior weights (higher = closer).
    concentration: float = Field(4.0, gt=0.0)
    # Share of the draws (candidates and search samples) taken uniformly over the whole simplex
    # instead of around the prior, so the regressor interpolates rather than extrapolates.
    explore: float = Field(0.5, ge=0.0, le=1.0)
    # Units (in the prior's unit) of each small candidate mixture.
    total: int = Field(gt=0)
    # Deterministic hash slice of each source's deduplicated documents held out for scoring.
    holdout: float = Field(0.1, gt=0.0, lt=1.0)
    # At most this many held-out documents per source are scored (the first in hash order).
    holdout_max_documents: int = Field(500, ge=1)
    # Extra held-out sets: name → JSON-lines file with a `text` field (scored like a source's).
    eval_sets: dict[str, str] = Field(default_factory=dict)
    # Per-domain weights of the objective (domains: source names and eval-set names);
    # omitted domains weigh 0; empty = every domain weighs 1.
    objective: dict[str, float] = Field(default_factory=dict)
    # Weight vectors the regressor scores when searching for the recommendation.
    search_samples: int = Field(20_000, ge=100, le=1_000_000)
    # The recommendation is the mean of this many best-predicted feasible samples.
    recommend_top: int = Field(100, ge=1)
    # Floor inside the regressor's log(weight + floor) features: keeps predictions finite at 0.
    log_floor: float = Field(0.02, gt=0.0)
    proxy: ProxySpec = Field(default_factory=ProxySpec)
    # Rank-correlation checks across proxy kinds, sizes and data quantities (none = skip).
    transfer: TransferSpec | None = None
    # Regularisation of the search: predicted objective + natural_pull x KL(w || natural mix),
    # the natural mix being each source's share of the available data (0 = off).
    natural_pull: float = Field(0.0, ge=0.0)
    # Repetition cap: no source may repeat more than this many times in the full-size
    # recommended mixture (tighter than the prior's max_epochs; none = the prior's).
    max_repetition: float | None = Field(None, gt=0.0)
    # Reuse the previous run's candidates: sources whose documents are unchanged keep their
    # relative proportions, and only candidates over the changed sources are trained.
    reuse: bool = False
    seed: int = 0

    @field_validator("objective")
    @classmethod
    def _objective_sane(cls, objective: dict[str, float]) -> dict[str, float]:
        for domain, w in objective.items():
            if w < 0:
                raise ValueError(f"{domain}: objective weight must be ≥ 0 (got {w})")
        if objective and sum(objective.values()) <= 0:
            raise ValueError("all objective weights are zero")
        return objective


_CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"}
# minute, hour, day of month, month, day of week: (lowest, highest, names)
_CRON_FIELDS = (
    (0, 59, ()), (0, 23, ()), (1, 31, ()),
    (1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    (0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_PART = re.compile(r"(?P<start>\*|\w+)(?:-(?P<end>\w+))?(?:/(?P<step>\d+))?")


def valid_cron(cron: str) -> bool:
    """A cron expression as Dagster schedules accept it: five fields (numbers, names, ranges, steps,
    lists, `?`, `L` for the last day of the month, `d#n` for the n-th weekday) or an @alias.
    Checked here without Dagster, so the recipe loads (and fails) the same with or without it."""
    cron = cron.strip()
    if cron in _CRON_ALIASES:
        return True
    fields = cron.split()
    if len(fields) != 5:
        return False

    def value(token: str, low: int, high: int, names: tuple) -> bool:
        if token.isdigit():
            return low <= int(token) <= high
        return token.lower() in names

    for i, (field, (low, high, names)) in enumerate(zip(fields, _CRON_FIELDS)):
        day_of_month, day_of_week = i == 2, i == 4
        for part in field.split(","):
            if (part == "?" and (day_of_month or day_of_week)) or (part == "L" and day_of_month):
                continue
            if day_of_week and "#" in part:
                day, _, nth = part.partition("#")
                if not (value(day, low, high, names) and nth.isdigit() and 1 <= int(nth) <= 5):
                    return False
                continue
            m = _CRON_PART.fullmatch(part)
            if not m:
                return False
            start, end, step = m["start"], m["end"], m["step"]
            if start != "*" and not value(start, low, high, names):
                return False
            if end is not None and (start == "*" or not value(end, low, high, names)):
                return False
            if step is not None and int(step) == 0:
                return False
    return True


class ScheduleSpec(_Strict):
    # When to look for new and changed input (cron, in `timezone`).
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        if not valid_cron(cron):
            raise ValueError(f"'{cron}' is not a valid cron expression (five fields, e.g. '0 3 * * *', or @daily)")
        return cron


class DriftSpec(_Strict):
    # Jensen–Shannon distance (sqrt of the base-2 divergence, in [0, 1]) above which a snapshot counts as shifted.
    threshold: float = Field(0.3, gt=0.0, le=1.0)
    # What a shifted snapshot sets off: re-mix every mixture using the source, and optionally
    # re-run the source's later stages for every snapshot (a backfill).
    remix: bool = True
    backfill: bool = False


class QualityModelSpec(_Strict):
    """The quality classifier (core/filters/quality_model.py): trained from `references` (positives)
    against a sample of the raw input of the sources it scores, or read from `model`."""

    # Sources whose documents are the examples of good text (books, papers, an instruction set).
    references: list[str] = Field(default_factory=list)
    # Sources whose raw input the negatives are sampled from; default: every source with a
    # quality_classifier filter.
    score: list[str] | None = None
    # A local model file to use instead of training (written by an earlier training).
    model: str | None = None
    # Documents sampled per class (split evenly over the references).
    max_documents: int = Field(2000, ge=10)
    hash_bits: int = Field(18, ge=10, le=24)
    ngrams: int = Field(2, ge=1, le=3)
    # Additive (Laplace/Lidstone) smoothing of the naive Bayes n-gram counts.
    alpha: float = Field(0.1, gt=0.0)
    seed: int = 0
    # Score buckets a mixture can weight as `source@bucket`: name → lowest score, one at 0.
    buckets: dict[str, float] = Field(default_factory=lambda: {"low": 0.0, "mid": 0.5, "high": 0.8})

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, buckets: dict[str, float]) -> dict[str, float]:
        for name, low in buckets.items():
            if not SOURCE_NAME_PATTERN.fullmatch(name):
                raise ValueError(f"{name}: bucket names use lower-case letters, digits and '_' only")
            if not 0.0 <= low < 1.0:
                raise ValueError(f"{name}: a bucket's lowest score must be within [0, 1) (got {low})")
        if 0.0 not in buckets.values() or len(set(buckets.values())) != len(buckets):
            raise ValueError("give each bucket a different lowest score, one of them 0 (every score has a bucket)")
        return buckets

    @model_validator(mode="after")
    def _train_or_file(self) -> QualityModelSpec:
        if not self.model and not self.references:
            raise ValueError("name the reference sources to train on ('references') or a model file ('model')")
        return self

    def negatives_from(self, recipe) -> list[str]:
        return list(self.score) if self.score is not None else quality_model.scored_sources(recipe)


class ExecutorSpec(_Strict):
    # local: datatrove's LocalPipelineExecutor; ray: its RayPipelineExecutor (core/stages/executors.py).
    kind: Literal["local", "ray"] = "local"
    # Tasks fix how work is sharded (and so the stage shard layout); workers are processes (local)
    # or tasks running at once on the cluster (ray). Outputs depend on tasks only.
    tasks: int = Field(2, ge=1)
    workers: int | None = Field(None, ge=1)
    # ray only: the cluster (`host:port` of `ray start --head`, `ray://host:10001`, or `auto`);
    # unset: RAY_ADDRESS, else a private Ray instance started in this process.
    address: str | None = None
    # ray only: what each task reserves on the cluster.
    cpus_per_task: float = Field(1, gt=0)
    memory_per_task_gb: float = Field(1, gt=0)

    @model_validator(mode="after")
    def _ray_keys(self) -> ExecutorSpec:
        if self.kind != "ray" and self.address is not None:
            raise ValueError("address: only for kind 'ray'")
        return self


class Recipe(_Strict):
    name: str
    data_root: str = "./data"
    # Folders (relative to the recipe or absolute) that paths may lead into besides the recipe's
    # own folder. Every path the recipe names must resolve (after `..` and symlinks) inside one.
    allowed_roots: list[str] = Field(default_factory=list)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    sources: dict[str, SourceSpec]
    dedup: DedupSpec = Field(default_factory=DedupSpec)
    # Runs first in every source's filtered stage; null (the default) disables it.
    decontamination: DecontaminationSpec | None = None
    mixtures: dict[str, MixtureSpec] = Field(default_factory=dict)
    schedule: ScheduleSpec | None = None
    drift: DriftSpec = Field(default_factory=DriftSpec)
    # Mixture-lab experiments (see core/lab/search.py); one `mixture_lab` partition each.
    experiments: dict[str, ExperimentSpec] = Field(default_factory=dict)
    # The quality classifier's model (see core/filters/quality_model.py); null: no model-based filtering.
    quality_model: QualityModelSpec | None = None

    # Set by load_recipe, not by the YAML.
    base_dir: str = Field("", exclude=True)
    sha256: str = Field("", exclude=True)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
        if not sources:
            raise ValueError("at least one source is required")
        for name in sources:
            if not SOURCE_NAME_PATTERN.fullmatch(name):
                raise ValueError(f"{name}: source names use lower-case letters, digits and '_' only")
        return sources

    @model_validator(mode="after")
    def _cross_references(self) -> Recipe:
        for i, source in enumerate(self.dedup.priority):
            if source not in self.sources:
                raise ValueError(f"dedup.priority[{i}]: unknown source '{source}'")
        for mix_name, mix in self.mixtures.items():
            if not SOURCE_NAME_PATTERN.fullmatch(mix_name):
                raise ValueError(f"mixtures.{mix_name}: mixture names use lower-case letters, digits and '_' only")
            for key, names in (("weights", mix.weights or {}), ("sources", mix.sources)):
                for source in names:
                    if quality_model.BUCKET_SEPARATOR in source:
                        if (why := quality_model.bucket_error(self, source)) is not None:
                            raise ValueError(f"mixtures.{mix_name}.{key}.{source}: {why}")
                    elif source not in self.sources:
                        raise ValueError(
                            f"mixtures.{mix_name}.{key}.{source}: unknown source "
                            f"(sources: {', '.join(self.sources)})"
                        )
            drawn = [s for s in mix.source_names(self.sources) if mix.weights is None or mix.weights[s] > 0]
            room = sum(mix.max_fraction_of(s) for s in drawn)
            if room < 1.0 - 1e-9:
                raise ValueError(
                    f"mixtures.{mix_name}: the max_fraction caps of {', '.join(drawn)} add up to {room:g} < 1, "
                    "so no mixture can satisfy them"
                )
            if mix.outputs.tokenized and self.tokenizer.kind != "hf":
                raise ValueError(
                    f"mixtures.{mix_name}.outputs.tokenized: needs tokenizer kind 'hf' with a local tokenizer.json"
                )
        for exp_name, exp in self.experiments.items():
            where = f"experiments.{exp_name}"
            if not SOURCE_NAME_PATTERN.fullmatch(exp_name):
                raise ValueError(f"{where}: experiment names use lower-case letters, digits and '_' only")
            if exp.prior not in self.mixtures:
                raise ValueError(f"{where}.prior: unknown mixture '{exp.prior}' (mixtures: {', '.join(self.mixtures) or 'none'})")
            sources = self.mixture_sources(exp.prior)
            if any(quality_model.BUCKET_SEPARATOR in s for s in sources):
                raise ValueError(f"{where}.prior: mixture '{exp.prior}' draws from quality buckets, which the lab does not support")
            if len(sources) < 2:
                raise ValueError(f"{where}.prior: mixture '{exp.prior}' draws from one source; there is nothing to mix")
            for name in exp.eval_sets:
                if not SOURCE_NAME_PATTERN.fullmatch(name) or name in sources:
                    raise ValueError(f"{where}.eval_sets.{name}: eval-set names use lower-case letters, digits "
                                     "and '_' and must differ from the source names")
            domains = set(sources) | set(exp.eval_sets)
            for domain in exp.objective:
                if domain not in domains:
                    raise ValueError(f"{where}.objective.{domain}: unknown domain (domains: {', '.join(sorted(domains))})")
        quality_model.check_recipe(self)
        return self

    def mixture_sources(self, name: str) -> list[str]:
        return self.mixtures[name].source_names(self.sources)

    # ---- resolved paths -------------------------------------------------------------
    def resolve(self, path: str) -> str:
        if path.startswith("file://"):  # issue 14: file:///x is the local path /x
            path = path[len("file://"):]
        if "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))

    @property
    def data_root_path(self) -> str:
        if "://" in self.resolve(self.data_root):
            # issue 14: data_root on object storage: the pipeline works in a local mirror and
            # publishes it there after a run (core/io/storage.py, publish_tree).
            from mix_pipeline.core.io import storage

            return storage.work_dir(self.resolve(self.data_root), self.base_dir)
        return self.resolve(self.data_root)

    def _roots(self) -> list[str]:
        return [os.path.realpath(self.base_dir)] + [
            r if "://" in r else os.path.realpath(self.resolve(r)) for r in self.allowed_roots
        ]

    def outside_roots(self, path: str) -> str | None:
        """None when `path` (or, for a glob, the folder before its first wildcard) resolves inside
        the recipe's folder or an allowed root; else what it resolves to."""
        resolved = self.resolve(path)
        if "://" in resolved:
            inside = any("://" in r and (resolved.rstrip("/") == r.rstrip("/") or resolved.startswith(r.rstrip("/") + "/"))
                         for r in self.allowed_roots)
            return None if inside else resolved
        real = os.path.realpath(_glob_base(resolved))
        if any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self._roots() if "://" not in r):
            return None
        return real

    def check_inside(self, key: str, path: str, origin: str = "recipe") -> None:
        """Raise RecipeError when `path` (the value of `key`) leads outside the allowed folders."""
        try:
            real = self.outside_roots(path)
        except (ValueError, OSError) as exc:  # e.g. a NUL byte in the path
            raise RecipeError(f"{origin}: {key}: {path!r} is not a usable path ({exc})") from None
        if real is not None:
            raise RecipeError(
                f"{origin}: {key}: '{path}' resolves to {real}, outside the recipe's folder "
                f"{os.path.realpath(self.base_dir)} (list the folder under allowed_roots to allow it)"
            )

    def path_keys(self) -> list[tuple[str, str]]:
        """(key, path) of every path the recipe names: where it reads and where it writes."""
        keys = [("data_root", self.data_root)]
        for name, spec in self.sources.items():
            keys.append((f"sources.{name}.path", spec.path))
            for i, f in enumerate(spec.filters):
                keys += [(f"sources.{name}.filters[{i}].{f.name}.{key}", p) for key, p in path_params(f.name, f.params)]
        if self.decontamination is not None:
            keys += [(f"decontamination.eval_sets[{i}]", p) for i, p in enumerate(self.decontamination.eval_sets)]
        for exp_name, exp in self.experiments.items():
            keys += [(f"experiments.{exp_name}.eval_sets.{n}", p) for n, p in exp.eval_sets.items()]
        if self.tokenizer.path:
            keys.append(("tokenizer.path", self.tokenizer.path))
        if self.quality_model is not None and self.quality_model.model:
            keys.append(("quality_model.model", self.quality_model.model))
        for name in quality_model.scored_sources(self):
            for i, f in enumerate(self.sources[name].filters):
                if f.name == quality_model.FILTER_NAME and f.params.get("model"):
                    keys.append((f"sources.{name}.filters[{i}].{f.name}.model", f.params["model"]))
        return keys

    def _pattern(self, source: str, snapshot: str, as_glob: bool = False) -> str:
        path = self.sources[source].path
        if SNAPSHOT_PLACEHOLDER in path:
            if snapshot == DEFAULT_SNAPSHOT:
                raise ValueError(f"source '{source}' has dated snapshots; name one")
            # A folder named `2024[05]` is a name, not a character class.
            path = path.replace(SNAPSHOT_PLACEHOLDER, glob.escape(snapshot) if as_glob else snapshot)
        elif snapshot != DEFAULT_SNAPSHOT:
            raise ValueError(f"source '{source}' has no snapshots (its path has no {SNAPSHOT_PLACEHOLDER})")
        return self.resolve(path)

    def has_snapshots(self, source: str) -> bool:
        return SNAPSHOT_PLACEHOLDER in self.sources[source].path

    def snapshots(self, source: str) -> list[str]:
        """The snapshots on disk, sorted: each sub-folder where the placeholder stands that holds
        at least one input file; `default` for a source without snapshots."""
        if not self.has_snapshots(source):
            return [DEFAULT_SNAPSHOT]
        parent = self.resolve(self.sources[source].path.split(SNAPSHOT_PLACEHOLDER)[0] or ".")
        if "://" in parent:  # issue 14: object storage (core/io/storage.py)
            from mix_pipeline.core.io import storage

            entries, names = storage.list_dirs(parent)
        elif not os.path.isdir(parent):
            return []
        else:
            entries = sorted(e for e in os.listdir(parent) if not e.startswith("."))
            names = [d for d in entries if os.path.isdir(os.path.join(parent, d))]
        tail = self.sources[source].path.replace("\\", "/").split(SNAPSHOT_PLACEHOLDER + "/", 1)[-1]
        if "/" not in tail:
            # An input file beside the snapshot folders belongs to none of them: never read, so refused.
            stray = [e for e in entries if e not in names and fnmatch.fnmatchcase(e, tail)]
            if stray:
                raise RecipeError(f"sources.{source}.path: {os.path.join(parent, stray[0])} sits beside the snapshot "
                                  f"folders and belongs to none, so it would never be read; move it into a snapshot folder")
        out = []
        for d in names:
            problem = snapshot_name_problem(d)
            if problem is None and d == DEFAULT_SNAPSHOT:
                problem = f"'{DEFAULT_SNAPSHOT}' is the name of the single snapshot of sources without snapshots"
            if problem is None:
                if self.source_files(source, d):
                    out.append(d)
            elif self._files_matching(self.resolve(self.sources[source].path.replace(SNAPSHOT_PLACEHOLDER,
                                                                                     glob.escape(d)))):
                # Never skipped silently: a snapshot with input files that cannot be a partition.
                raise RecipeError(f"sources.{source}.path: snapshot folder {os.path.join(parent, d)!r} cannot be "
                                  f"a partition: {problem}; rename the folder")
        return out

    def source_files(self, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> list[str]:
        """The input files of one snapshot of a source, sorted; directories expand to every file below them."""
        def unlistable(err: OSError) -> None:
            # os.walk would skip the folder silently, and every file under it would go uncounted.
            raise RecipeError(f"source '{source}': cannot list folder {err.filename}: {err.strerror}")

        return self._files_matching(self._pattern(source, snapshot, as_glob=True), unlistable)

    @staticmethod
    def _files_matching(pattern: str, onerror=None) -> list[str]:
        """The files a pattern names, sorted, each file once: paths that reach the same file through
        symlinks (a `**` through a link to a parent folder) or hard links count once, under the
        path without symlinks where there is one, else the shortest."""
        if "://" in pattern:  # issue 14: object storage (core/io/storage.py)
            from mix_pipeline.core.io import storage

            return storage.glob_files(pattern)
        files: set[str] = set()
        for match in glob.glob(pattern, recursive=True):
            if os.path.isdir(match):
                for root, dirs, names in os.walk(match, onerror=onerror):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    files.update(os.path.join(root, n) for n in names if not n.startswith("."))
            else:
                files.add(match)

        def preference(path: str) -> tuple:
            return (os.path.realpath(path) != os.path.abspath(path), len(path), path)

        seen: set[tuple[int, int]] = set()
        out = []
        for path in sorted(files, key=preference):
            try:
                st = os.stat(os.path.realpath(path))  # realpath: a path looping through links may be too deep to stat
            except OSError:  # a dangling link: listed, so validation or the reader reports it
                out.append(path)
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                out.append(path)
        return sorted(out)

    def eval_set_files(self) -> list[str]:
        """The decontamination eval sets, sorted by path (the order drops are attributed in)."""
        if self.decontamination is None:
            return []
        files: set[str] = set()
        for pattern in self.decontamination.eval_sets:
            if "://" in self.resolve(pattern):  # issue 14: object storage (core/io/storage.py)
                from mix_pipeline.core.io import storage

                files.update(storage.glob_files(self.resolve(pattern)))
                continue
            files.update(f for f in glob.glob(self.resolve(pattern), recursive=True) if os.path.isfile(f))
        return sorted(files)

    def source_root(self, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> str:
        """The folder that ids of text-directory documents are relative to."""
        pattern = self._pattern(source, snapshot)
        if "://" in pattern:  # issue 14: object storage (core/io/storage.py)
            from mix_pipeline.core.io import storage

            if not any(ch in pattern for ch in "*?[") and storage.isdir(pattern):
                return pattern.rstrip("/")
            root = storage.glob_base(pattern)
            return root if root != pattern else root.rsplit("/", 1)[0]
        if os.path.isdir(pattern):
            return pattern
        root = _glob_base(pattern)
        return root if os.path.isdir(root) else os.path.dirname(root)

    def domain_of(self, source: str) -> str:
        return self.sources[source].domain or source

    def priority_rank(self, source: str) -> int:
        """Lower wins a cross-source duplicate; unlisted sources come after listed ones."""
        if source in self.dedup.priority:
            return self.dedup.priority.index(source)
        return len(self.dedup.priority) + sorted(self.sources).index(source)


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after", "function-before"))
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    # Errors raised inside a dict-level validator carry their own sub-path ("web: ...").
    text = f"{loc}: {msg}" if loc else msg
    # A key may hold control characters (a source named "\n"): escaped, the message stays one line.
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


def parse_recipe(data: Any, base_dir: str, sha256: str = "", origin: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: the recipe must be a YAML mapping")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RecipeError(f"{origin}: {_format_error(first)}{more}") from None
    recipe = quality_model.bind_models(recipe.model_copy(update={"base_dir": base_dir, "sha256": sha256}))
    for key, path in recipe.path_keys():
        recipe.check_inside(key, path, origin)
    check_data_root(recipe, origin)
    return recipe


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_data_root(recipe: Recipe, origin: str = "recipe") -> None:
    """Refuse a data_root that overlaps a source's folder: the same folder, a data_root the source's
    pattern can reach into (a later run would read the pipeline's own outputs), or a source inside
    a folder the pipeline writes (raw/, mixtures/, ...)."""
    root = os.path.realpath(recipe.data_root_path)
    if "://" in root:
        return
    for name, spec in recipe.sources.items():
        pattern = recipe.resolve(spec.path)
        if "://" in pattern:
            continue
        base = _glob_base(pattern)
        real_base = os.path.realpath(base)
        rest = os.path.relpath(pattern, base)
        clash = None
        if real_base == root:
            clash = "is the source's folder"
        elif _within(root, real_base):
            below = os.path.relpath(root, real_base).split(os.sep)
            parts = [] if rest == "." else rest.split(os.sep)
            recursive = os.path.isdir(pattern) or any("**" in p for p in parts)
            # With `{snapshot}` or a wildcard folder, data_root's first folder below the base can match.
            first = parts[0].replace(SNAPSHOT_PLACEHOLDER, "*") if len(parts) > 1 else None
            if recursive or (first is not None and fnmatch.fnmatchcase(below[0], first)):
                clash = f"is inside the source's folder {real_base} and its path '{spec.path}' reaches into it"
        elif any(_within(real_base, os.path.join(root, d)) for d in layout.DATA_ROOT_OUTPUTS):
            clash = f"holds the source's folder {real_base} among the pipeline's outputs"
        if clash:
            raise RecipeError(f"{origin}: data_root: '{recipe.data_root}' ({root}) {clash} (sources.{name}.path); "
                              "put data_root and the sources in separate folders")


def load_recipe(path: str | os.PathLike, check_paths: bool = True) -> Recipe:
    """Load and validate a recipe file; raise RecipeError with a one-line message."""
    path = os.path.abspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}") from None
    recipe = parse_recipe(data, os.path.dirname(path), hashlib.sha256(raw).hexdigest(), origin=path)
    if check_paths:
        check_source_paths(recipe, origin=path)
    return recipe


def check_file_name(key: str, path: str, origin: str = "recipe") -> None:
    """Refuse an input file whose name is not valid UTF-8: ids, provenance and the catalog name
    files in UTF-8, and writing such a name would fail mid-stage."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise RecipeError(f"{origin}: {key}: the file name '{shown}' is not valid UTF-8; rename the file") from None


def check_source_paths(recipe: Recipe, origin: str = "recipe") -> None:
    for name, spec in recipe.sources.items():
        files = [f for snap in recipe.snapshots(name) for f in recipe.source_files(name, snap)]
        if not files:
            raise RecipeError(
                f"{origin}: sources.{name}.path: '{spec.path}' matches no file "
                f"(resolved to {recipe.resolve(spec.path)})"
            )
        # A symlink inside the folder, or a `..` after a wildcard, can still lead out.
        for f in files:
            recipe.check_inside(f"sources.{name}.path", f, origin)
        for f in files:
            check_file_name(f"sources.{name}.path", f, origin)
            if "://" in f:  # issue 14: an object is a regular file; readability shows when a task reads it
                continue
            try:
                kind = not_regular(f)
            except OSError:
                continue  # reported as not readable below
            if kind:
                raise RecipeError(f"{origin}: sources.{name}.path: {f} is {kind}, not a regular file "
                                  "(reading it could block forever); remove it or narrow the path")
        unreadable = [f for f in files if "://" not in f and not os.access(f, os.R_OK)]
        if unreadable:
            raise RecipeError(
                f"{origin}: sources.{name}.path: {len(unreadable)} file(s) are not readable, e.g. {unreadable[0]}"
            )
        for i, f in enumerate(spec.filters):
            for key, p in path_params(f.name, f.params):
                if not os.path.isfile(recipe.resolve(p)):
                    raise RecipeError(
                        f"{origin}: sources.{name}.filters[{i}].{f.name}.{key}: no such file {recipe.resolve(p)}"
                    )
    if recipe.decontamination is not None:
        for i, pattern in enumerate(recipe.decontamination.eval_sets):
            if "://" in recipe.resolve(pattern):  # issue 14: object storage
                from mix_pipeline.core.io import storage

                found = bool(storage.glob_files(recipe.resolve(pattern)))
            else:
                found = any(os.path.isfile(f) for f in glob.glob(recipe.resolve(pattern), recursive=True))
            if not found:
                raise RecipeError(
                    f"{origin}: decontamination.eval_sets[{i}]: '{pattern}' matches no file (resolved to {recipe.resolve(pattern)})"
                )
        for f in recipe.eval_set_files():
            recipe.check_inside("decontamination.eval_sets", f, origin)
        names: dict[str, str] = {}
        for f in recipe.eval_set_files():
            if eval_set_name(f) in names:
                raise RecipeError(
                    f"{origin}: decontamination.eval_sets: two eval sets are named '{eval_set_name(f)}' "
                    f"({names[eval_set_name(f)]} and {f}); drops are attributed by file name"
                )
            names[eval_set_name(f)] = f
    for exp_name, exp in recipe.experiments.items():
        for set_name, p in exp.eval_sets.items():
            if not os.path.isfile(recipe.resolve(p)):
                raise RecipeError(f"{origin}: experiments.{exp_name}.eval_sets.{set_name}: no such file {recipe.resolve(p)}")
    if recipe.quality_model is not None and recipe.quality_model.model:
        if not os.path.isfile(recipe.resolve(recipe.quality_model.model)):
            raise RecipeError(f"{origin}: quality_model.model: no such file {recipe.resolve(recipe.quality_model.model)}")
    for name in quality_model.scored_sources(recipe):
        for i, f in enumerate(recipe.sources[name].filters):
            own = f.params.get("model") if f.name == quality_model.FILTER_NAME else None
            if own and own != quality_model.model_path(recipe) and not os.path.isfile(own):
                raise RecipeError(f"{origin}: sources.{name}.filters[{i}].{f.name}.model: no such file {own}")
    if recipe.tokenizer.kind == "hf":
        tok = recipe.resolve(recipe.tokenizer.path or "")
        if not os.path.isfile(tok):
            raise RecipeError(f"{origin}: tokenizer.path: no such file {tok}")
        if recipe.tokenizer.eos_token:
            from tokenizers import Tokenizer

            if Tokenizer.from_file(tok).token_to_id(recipe.tokenizer.eos_token) is None:
                raise RecipeError(
                    f"{origin}: tokenizer.eos_token: '{recipe.tokenizer.eos_token}' is not in the vocabulary of {tok}"
                )
