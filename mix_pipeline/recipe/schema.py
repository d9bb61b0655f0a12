"""The recipe: what a user declares, validated before anything runs.

A recipe is YAML. Every key is modelled; an unknown key is an error rather than silently
ignored, because a typo in a threshold name would otherwise produce a mixture that looks
right and is not. All relative paths resolve against the recipe file's folder, so a recipe
means the same thing whatever the working directory.

This module is the schema only: it checks what the recipe says, never what is on disk. Listing
a source's files is inputs.py; checking that the paths exist and stay inside the allowed folders
is paths.py; reading the YAML file is loading.py.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mix_pipeline.core.filters import quality_recipe
from mix_pipeline.core.filters.registry import CODE_QUALITY, FILTER_NAMES, PROSE_FILTERS, path_params
from mix_pipeline.core.filters.registry import check_params as check_filter_params
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.io.readers import DEFAULT_MAX_DOCUMENT_BYTES
from mix_pipeline.names import SNAPSHOT_PLACEHOLDER, SOURCE_NAME_PATTERN

from mix_pipeline.recipe.cron import valid_cron
from mix_pipeline.recipe.experiments import ExperimentSpec
from mix_pipeline.recipe.strict import Strict


def _check_overrides(value: Any, stages: tuple[str, ...]) -> Any:
    """Validate a `checks:` mapping: known check names for these stages, known parameters."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be a mapping {check_name: {parameter: value, severity: error|warn}}")
    quality.validate_overrides(value, stages)
    return value


class TokenizerSpec(Strict):
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


class FilterSpec(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SourceSpec(Strict):
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
        if CODE_QUALITY in names and prose:
            raise ValueError(
                f"code_quality replaces the prose filters on code sources; drop {', '.join(prose)} or code_quality"
            )
        return out


class MinhashSpec(Strict):
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


class DedupSpec(Strict):
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


class DecontaminationSpec(Strict):
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


class SplitsSpec(Strict):
    validation: float = Field(0.0, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitsSpec:
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must leave room for train (sum < 1)")
        return self


class MixtureSourceSpec(Strict):
    """Per-source overrides inside one mixture."""

    max_epochs: float | None = Field(None, gt=0.0)
    max_fraction: float | None = Field(None, gt=0.0, le=1.0)
    splits: SplitsSpec | None = None


class OutputsSpec(Strict):
    # Parquet shards are always written; these add formats next to them.
    jsonl: bool = False
    tokenized: bool = False


class MixtureSpec(Strict):
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


class ScheduleSpec(Strict):
    # When to look for new and changed input (cron, in `timezone`).
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        if not valid_cron(cron):
            raise ValueError(f"'{cron}' is not a valid cron expression (five fields, e.g. '0 3 * * *', or @daily)")
        return cron


class DriftSpec(Strict):
    # Jensen–Shannon distance (sqrt of the base-2 divergence, in [0, 1]) above which a snapshot counts as shifted.
    threshold: float = Field(0.3, gt=0.0, le=1.0)
    # What a shifted snapshot sets off: re-mix every mixture using the source, and optionally
    # re-run the source's later stages for every snapshot (a backfill).
    remix: bool = True
    backfill: bool = False


class QualityModelSpec(Strict):
    """The quality classifier (core/filters/quality_model.py): trained (core/filters/quality_training.py)
    from `references` (positives) against a sample of the raw input of the sources it scores, or
    read from `model`."""

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
        return list(self.score) if self.score is not None else quality_recipe.scored_sources(recipe)


class ExecutorSpec(Strict):
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


class Recipe(Strict):
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
                    if quality_recipe.BUCKET_SEPARATOR in source:
                        if (why := quality_recipe.bucket_error(self, source)) is not None:
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
            if any(quality_recipe.BUCKET_SEPARATOR in s for s in sources):
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
        quality_recipe.check_recipe(self)
        return self

    def mixture_sources(self, name: str) -> list[str]:
        return self.mixtures[name].source_names(self.sources)

    def resolve(self, path: str) -> str:
        if path.startswith("file://"):  # file:///x is the local path /x
            path = path[len("file://"):]
        if "://" in path or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))

    @property
    def data_root_path(self) -> str:
        if "://" in self.resolve(self.data_root):
            # data_root on object storage: the pipeline works in a local mirror and
            # publishes it there after a run (core/io/remote_root.py, publish_tree).
            from mix_pipeline.core.io import remote_root

            return remote_root.work_dir(self.resolve(self.data_root), self.base_dir)
        return self.resolve(self.data_root)

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
        for name in quality_recipe.scored_sources(self):
            for i, f in enumerate(self.sources[name].filters):
                if f.name == quality_recipe.FILTER_NAME and f.params.get("model"):
                    keys.append((f"sources.{name}.filters[{i}].{f.name}.model", f.params["model"]))
        return keys

    def has_snapshots(self, source: str) -> bool:
        return SNAPSHOT_PLACEHOLDER in self.sources[source].path

    def domain_of(self, source: str) -> str:
        return self.sources[source].domain or source

    def priority_rank(self, source: str) -> int:
        """Lower wins a cross-source duplicate; unlisted sources come after listed ones."""
        if source in self.dedup.priority:
            return self.dedup.priority.index(source)
        return len(self.dedup.priority) + sorted(self.sources).index(source)
