"""What is stale and what runs next: the one planner that `mix-pipeline run` and the daemon share.

The pipeline is five stages in a fixed order, and cross-source dedup makes it wide in the middle:
every source must be filtered before the index is built, and the index must exist before any
source is deduplicated. `next_wave` looks at the instance's materialization records and the input
files on disk and returns the earliest stage that has work, as one run per partition:

- the quality model (when the recipe trains one) whose training inputs changed: the filtered stage
  of the sources it scores reads it, and their fingerprint includes it;
- ingest (raw + filtered) of a source|snapshot whose input files or recipe entry changed since
  both stages last recorded them (the input fingerprint), or that was never built;
- dedup_index when any filtered partition was materialized after it;
- deduplicated partitions materialized before their filtered partition or the index;
- and at ingest and deduplicated, a built partition whose published files no longer match what
  its stage sealed (a deleted or altered shard: core.integrity) is rebuilt;
- mixtures materialized before any deduplicated partition of a source they draw from;
- mixture_comparison when a mixture was rebuilt after it.

The CLI runs the waves one after the other in its own process; the `pipeline` sensor requests the
same waves from the daemon, one at a time (never while runs it requested are in flight). Because
both paths ask this one function, they cannot disagree on what is stale or on the order, and since
every stage is deterministic they produce the same bytes. Why not Dagster's eager automation
conditions: they decide on a cursor private to the automation sensor (the CLI cannot share it),
do not retry a partition whose run failed or was killed, and cannot see input files changing on
disk; recorded materializations can.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dagster as dg

from mix_pipeline.core import quality_model as qm
from mix_pipeline.core.integrity import verify_partition
from mix_pipeline.core.lineage import input_fingerprint, published_problem
from mix_pipeline.defs.jobs import (
    COMPARE_JOB,
    DEDUP_INDEX_JOB,
    DEDUPLICATE_JOB,
    INGEST_JOB,
    MIX_JOB,
    QUALITY_MODEL_JOB,
)
from mix_pipeline.defs.metadata import DRIFT_EXCEEDED, INPUT_FINGERPRINT
from mix_pipeline.defs.partitions import discovered_keys, source_snapshots
from mix_pipeline.names import (
    DEDUP_INDEX,
    DEDUPLICATED,
    FILTERED,
    MIXTURE,
    MIXTURE_COMPARISON,
    QUALITY_MODEL,
    RAW,
    split_partition_key,
)
from mix_pipeline.recipe import Recipe

# The stage of each job, in the order the waves run.
STAGE_OF_JOB = {QUALITY_MODEL_JOB: QUALITY_MODEL, INGEST_JOB: f"{RAW} → {FILTERED}", DEDUP_INDEX_JOB: DEDUP_INDEX, DEDUPLICATE_JOB: DEDUPLICATED,
                MIX_JOB: MIXTURE, COMPARE_JOB: MIXTURE_COMPARISON}
# Tag on every run the planner starts (CLI or daemon), valued with the recipe's name.
PLANNED_TAG = "mix_pipeline/planned"


@dataclass(frozen=True)
class Step:
    job: str
    partition: str | None
    why: str
    # What the step is built from; the daemon keys its run on it, so one state never runs twice.
    state: str
    # Rebuilt because its published files no longer match their seal (core.integrity).
    damaged: bool = False

    @property
    def label(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"{STAGE_OF_JOB[self.job]}{where}"

    @property
    def run_key(self) -> str:
        return f"{self.job}:{self.partition or '-'}:{self.state[:16]}"


@dataclass(frozen=True)
class Held:
    """A stale step the planner will not start by itself (see `drift.remix`)."""

    step: Step
    reason: str


def _latest(instance: dg.DagsterInstance, asset: str, keys: list[str] | None) -> dict:
    """{partition (or None): latest materialization record} of one asset."""
    asset_key = dg.AssetKey(asset)
    if keys is None:
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=1).records
        return {None: records[0]} if records else {}
    out = {}
    for key in keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1).records
        if records:
            out[key] = records[0]
    return out


def _sid(records: dict, key) -> int:
    return records[key].storage_id if key in records else -1


def _state(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def recorded_fingerprint(instance: dg.DagsterInstance, asset: str, key: str) -> str | None:
    """The input fingerprint stored with a partition's latest materialization, if any."""
    records = _latest(instance, asset, [key])
    if key not in records:
        return None
    value = records[key].asset_materialization.metadata.get(INPUT_FINGERPRINT)
    return value.value if value is not None else None


def stale_ingest(instance: dg.DagsterInstance, recipe: Recipe, keys: list[str]) -> dict[str, tuple[str, str, bool]]:
    """{key: (input fingerprint, why, damaged)} of partitions never built, whose inputs or recipe entry
    changed since they were, or whose published files no longer match their seal (a deleted
    shard, see core.integrity). Built means both raw and filtered recorded the current
    fingerprint: an ingest run killed between the two is redone."""
    out = {}
    for key in keys:
        source, snapshot = split_partition_key(key)
        fingerprint = input_fingerprint(recipe, source, snapshot)
        if any(recorded_fingerprint(instance, asset, key) != fingerprint for asset in (RAW, FILTERED)):
            out[key] = (fingerprint, "input changed or never built", False)
        elif problem := published_problem(recipe, source, snapshot):
            out[key] = (fingerprint, problem, True)
    return out


def _drifted_sources(filtered: dict, after: int) -> dict[str, str]:
    """{source: partition} of filtered partitions materialized after `after` whose drift check failed."""
    out = {}
    for key, record in sorted(filtered.items()):
        meta = record.asset_materialization.metadata
        if record.storage_id > after and DRIFT_EXCEEDED in meta and meta[DRIFT_EXCEEDED].value:
            out.setdefault(split_partition_key(key)[0], key)
    return out


def next_wave(
    instance: dg.DagsterInstance,
    recipe: Recipe,
    *,
    force_ingest: frozenset[str] = frozenset(),
    retrain: bool = False,
    mixtures: list[str] | None = None,
    accept_drift: bool = False,
) -> tuple[list[Step], list[Held]]:
    """The earliest stage with stale partitions, as steps in a stable order (and what is held).

    `force_ingest` partitions are ingested even if unchanged (backfills, `--full`), `retrain`
    retrains the quality model even if its inputs did not change (`--full`); `mixtures`
    limits the mixture steps to those names; `accept_drift` builds mixtures that `drift.remix:
    false` would hold (an explicit `mix-pipeline run` is a person's acceptance)."""
    if qm.needs_training(recipe):
        fingerprint = qm.training_fingerprint(recipe)
        if retrain or qm.recorded_fingerprint(qm.model_path(recipe)) != fingerprint:
            return [Step(QUALITY_MODEL_JOB, None, "its training inputs changed, or forced", fingerprint)], []
    keys = [k for k in discovered_keys(recipe)
            if k in set(instance.get_dynamic_partitions(source_snapshots(recipe).name))]
    stale = stale_ingest(instance, recipe, [k for k in keys if k not in force_ingest])
    stale.update({k: (input_fingerprint(recipe, *split_partition_key(k)), "forced", False)
                  for k in force_ingest if k in keys})
    if stale:
        # The reason is part of the state: a damaged partition rebuilt from unchanged input is a new run.
        return [Step(INGEST_JOB, k, stale[k][1], _state(*stale[k]), stale[k][2]) for k in keys if k in stale], []

    filtered = _latest(instance, FILTERED, keys)
    index = _latest(instance, DEDUP_INDEX, None)
    newest_filtered = max((_sid(filtered, k) for k in keys), default=-1)
    if keys and _sid(index, None) < newest_filtered:
        return [Step(DEDUP_INDEX_JOB, None, "a filtered partition is newer than the index",
                     _state(sorted((k, _sid(filtered, k)) for k in keys)))], []

    deduplicated = _latest(instance, DEDUPLICATED, keys)
    steps = []
    for k in keys:
        built = k in deduplicated
        damaged = bool(built and (why := verify_partition(recipe.data_root_path, DEDUPLICATED, *split_partition_key(k))))
        if not damaged:
            if _sid(deduplicated, k) >= max(_sid(filtered, k), _sid(index, None)):
                continue
            why = "its filtered partition or the index is newer"
        steps.append(Step(DEDUPLICATE_JOB, k, why, _state(_sid(filtered, k), _sid(index, None), why), damaged))
    if steps:
        return steps, []

    names = sorted(n for n in recipe.mixtures if mixtures is None or n in mixtures)
    built = _latest(instance, MIXTURE, names)
    steps, held = [], []
    for name in names:
        sources = set(recipe.mixtures[name].source_names(recipe.sources))
        inputs = [k for k in keys if split_partition_key(k)[0] in sources]
        newest = max((_sid(deduplicated, k) for k in inputs), default=-1)
        if _sid(built, name) >= newest and name in built:
            continue
        step = Step(MIX_JOB, name, "a deduplicated partition it draws from is newer",
                    _state(sorted((k, _sid(deduplicated, k)) for k in inputs)))
        drifted = {s: k for s, k in _drifted_sources(filtered, _sid(built, name)).items() if s in sources}
        if drifted and name in built and not recipe.drift.remix and not accept_drift:
            held.append(Held(step, f"drift in {', '.join(sorted(drifted.values()))} and drift.remix is false: "
                                   f"materialize it (UI) or run `mix-pipeline run` to accept"))
        else:
            steps.append(step)
    if steps or held:
        return steps, held

    if recipe.mixtures:
        comparison = _latest(instance, MIXTURE_COMPARISON, None)
        newest_mix = max((r.storage_id for r in built.values()), default=-1)
        if built and _sid(comparison, None) < newest_mix:
            return [Step(COMPARE_JOB, None, "a mixture is newer than the comparison",
                         _state(sorted((n, r.storage_id) for n, r in built.items())))], []
    return [], []


def runs_in_flight(instance: dg.DagsterInstance) -> list[str]:
    """What is queued or running on the instance (runs, and backfills not yet finished), as short
    labels. The planner starts nothing while anything is: a backfill launched from the UI, or the
    previous wave, may still be publishing the partitions the next wave reads."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

    runs = instance.get_runs(dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]))
    backfills = instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED]))
    return [f"run {r.run_id[:8]} ({r.job_name})" for r in runs] + [f"backfill {b.backfill_id}" for b in backfills]
