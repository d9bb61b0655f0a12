"""What is stale and what runs next: the one planner that `mix-pipeline run` and the daemon share.

The pipeline is five stages in a fixed order, and cross-source dedup makes it wide in the middle:
every source must be filtered before the index is built, and the index must exist before any
source is deduplicated. `next_wave` looks at the instance's materialization records and the input
files on disk and returns the earliest stage that has work, as one run per partition:

- the quality model (when the recipe trains one) whose training inputs changed: the filtered stage
  of the sources it scores reads it, and their fingerprint includes it;
- ingest (raw + filtered) of a source:snapshot whose input files or recipe entry changed since
  both stages last recorded them (the input fingerprint), or that was never built;
- dedup_index when what it reads changed (the filtered partitions' seals, the dedup settings);
- deduplicated partitions whose filtered documents or own dedup verdicts changed;
- mixtures whose recipe, or the deduplicated partitions and verdicts they draw from, changed bytes;
- and at ingest, deduplicated and mixture, a built partition whose published files no longer
  match what its stage sealed (a deleted or altered shard: core.integrity) is rebuilt;
- mixture_comparison when a mixture was rebuilt after it.

Each comparison is of content fingerprints (core/provenance/lineage.py) the stage recorded with its
materialization against the same function computed from disk now: a refresh rewrites only what
changed. A step whose latest attempt for the same inputs was refused is held (`held_reason`) and
the rest proceeds on that partition's last good version; partitions the recipe no longer
discovers are retired before planning (core/provenance/retire.py), so nothing reads them.

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
import os
from dataclasses import dataclass

import dagster as dg

from mix_pipeline import layout
from mix_pipeline.core.filters import quality_training
from mix_pipeline.core.filters.quality_model import model_path
from mix_pipeline.core.filters.quality_recipe import base_source
from mix_pipeline.core.io.integrity import verify, verify_partition
from mix_pipeline.core.provenance.lineage import (
    deduplicated_fingerprint,
    index_fingerprint,
    input_fingerprint,
    mixture_fingerprint,
    published_problem,
    verdict_digests,
)
from mix_pipeline.defs.jobs import (
    COMPARE_JOB,
    DEDUP_INDEX_JOB,
    DEDUPLICATE_JOB,
    INGEST_JOB,
    MIX_JOB,
    QUALITY_MODEL_JOB,
)
from mix_pipeline.defs.metadata import DRIFT_EXCEEDED, INPUT_FINGERPRINT
# A run failed because the process that ran it died carries ORPHANED_TAG: killed, not refused.
from mix_pipeline.defs.orphans import ORPHANED_TAG
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
# Tag on every run the planner starts, valued with its step's run_key (job, partition, inputs):
# how the planner finds the latest attempt of a step (held_reason, attempts).
STEP_TAG = "mix_pipeline/step"
# Tag the planner's callers put on a run whose failure holds its step: the reason, in the Runs list.
HELD_TAG = "mix_pipeline/held"
# Errors that say the run was interrupted or lost its workers (a signal, a Ray worker or node that
# died, a local worker pool whose process was killed), not that its step refused anything: retried.
INTERRUPTIONS = frozenset({
    "DagsterExecutionInterruptedError", "KeyboardInterrupt", "BrokenProcessPool",
    "WorkerCrashedError", "RayActorError", "ActorDiedError", "NodeDiedError", "ObjectLostError",
    "OwnerDiedError", "LocalRayletDiedError",
})
# A step whose runs for the same inputs died this many times without a refusal is held all the same:
# a worker the machine kills every time (out of memory) must not be restarted for ever.
MAX_ATTEMPTS = 8


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
    """A stale step the planner will not start by itself: its latest attempt failed for the same
    inputs (`held_reason`), or drift with `drift.remix: false`."""

    step: Step
    reason: str
    # The run that failed for the step's current inputs (None for a drift hold).
    run_id: str | None = None


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
    return _recorded(_latest(instance, asset, [key]), key)


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


# Held steps: one partition never holds the others.
def cause(error) -> str:
    """The innermost message of a step's error: "No space left on device", not "Error occurred
    while executing op"."""
    while error.cause is not None:
        error = error.cause
    lines = (error.message or "").strip().splitlines()
    return lines[-1] if lines else error.cls_name or "unknown error"


def _interrupted(error) -> bool:
    """Whether an error, or any error it was raised from, is an interruption (INTERRUPTIONS)."""
    while error is not None:
        if error.cls_name in INTERRUPTIONS:
            return True
        error = error.cause
    return False


def refusal(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why a finished run refused its step: its failed error-severity checks, else its step's
    error; None when it recorded neither (the process was killed: nothing was refused)."""
    from dagster._core.events import DagsterEventType

    events = instance.all_logs(run.run_id, of_type={DagsterEventType.ASSET_CHECK_EVALUATION,
                                                    DagsterEventType.STEP_FAILURE})
    checks, errors = [], []
    for entry in events:
        event = entry.dagster_event
        data = event.event_specific_data
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            if not data.passed and data.severity == dg.AssetCheckSeverity.ERROR:
                checks.append(f"{data.asset_key.to_user_string()}.{data.check_name} failed"
                              + (f" ({data.description})" if data.description else ""))
        elif data is not None and data.error is not None and not _interrupted(data.error):
            errors.append(cause(data.error))
    return "; ".join(checks or errors) or None


def held_reason(instance: dg.DagsterInstance, step: Step) -> tuple[str, str] | None:
    """Why the planner will not start `step` again by itself: its latest run (same step, same
    inputs) was refused by a gate or failed in its own code. A run that was killed, cancelled or
    left by a dead process (defs/orphans.py) refused nothing: the step is retried, up to
    MAX_ATTEMPTS runs. Returns (why, the run's id) or None. A held step runs again when its inputs
    or the recipe change, when it is forced (`mix-pipeline backfill`, `run --full`), or when
    someone materializes it in the UI."""
    # The latest run of the step's job for its partition: if another state ran since (inputs that
    # changed, then changed back), this state's old outcome says nothing about now.
    tags = {"dagster/partition": step.partition} if step.partition is not None else {}
    runs = instance.get_runs(dg.RunsFilter(job_name=step.job, tags=tags), limit=1)
    if not runs or runs[0].tags.get(STEP_TAG) != step.run_key:
        return None
    run = runs[0]
    if run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS):
        return None
    why = None if run.tags.get(ORPHANED_TAG) else refusal(instance, run)
    if run.status == dg.DagsterRunStatus.SUCCESS and why is None:
        if step.damaged:  # built, then damaged since: rebuild it
            return None
        # Built for these very inputs, yet still stale: starting it again would loop for ever.
        why = "its run succeeded but left it stale; materialize it in the UI, and report this as a bug"
    if why is None and attempts(instance, step) >= MAX_ATTEMPTS:
        why = (f"its last {MAX_ATTEMPTS} runs for the same inputs died before finishing (out of memory? "
               "killed?); materialize it in the UI to try again")
    if why is None:
        return None
    return f"{why} (run {run.run_id[:8]})", run.run_id


def mark_held(instance: dg.DagsterInstance, held: list[Held]) -> None:
    """Tag each held step's failed run with why it is held, so the UI's Runs list says it."""
    for h in held:
        if h.run_id is not None:
            run = instance.get_run_by_id(h.run_id)
            if run is not None and HELD_TAG not in run.tags:
                instance.add_run_tags(h.run_id, {HELD_TAG: f"{h.step.label}: held until its input changes"})


def attempts(instance: dg.DagsterInstance, step: Step) -> int:
    """How many runs were started for this step (same inputs) so far: the daemon's run key counts
    them, so a retry after a killed run is a new run key, never one Dagster already used."""
    return instance.get_runs_count(dg.RunsFilter(tags={STEP_TAG: step.run_key}))


def _split_held(instance: dg.DagsterInstance, steps: list[Step], forced=frozenset()) -> tuple[list[Step], list[Held]]:
    go, held = [], []
    for step in steps:
        why = None if step.partition in forced else held_reason(instance, step)
        if why is None:
            go.append(step)
        else:
            held.append(Held(step, *why))
    return go, held


def _recorded(records: dict, key) -> str | None:
    """The input fingerprint stored with the record of `key` in `records` (from _latest), if any."""
    if key not in records:
        return None
    value = records[key].asset_materialization.metadata.get(INPUT_FINGERPRINT)
    return value.value if value is not None else None


def next_wave(
    instance: dg.DagsterInstance,
    recipe: Recipe,
    *,
    force_ingest: frozenset[str] = frozenset(),
    retrain: bool = False,
    mixtures: list[str] | None = None,
    accept_drift: bool = False,
) -> tuple[list[Step], list[Held]]:
    """The earliest stage with stale partitions that may run, as steps in a stable order, and
    every stale step that is held (its latest attempt for the same inputs failed, see
    `held_reason`; or drift, see `drift.remix`). A held partition holds nothing else: the later
    stages proceed on its last good published version, or without it if it never had one.

    `force_ingest` partitions are ingested even if unchanged (backfills, `--full`), and even if
    held; `retrain` retrains the quality model even if its inputs did not change (`--full`);
    `mixtures` limits the mixture steps to those names; `accept_drift` builds mixtures that
    `drift.remix: false` would hold (an explicit `mix-pipeline run` is a person's acceptance)."""
    held: list[Held] = []
    steps, h = _quality_model_steps(instance, recipe, retrain)
    held += h
    if steps:
        return steps, held
    registered = set(instance.get_dynamic_partitions(source_snapshots(recipe).name))
    keys = [k for k in discovered_keys(recipe) if k in registered]
    steps, h = _ingest_steps(instance, recipe, keys, force_ingest)
    held += h
    if steps:
        return steps, held

    # From here on only partitions with published filtered documents count: a held partition that
    # was never built is left out, one that was keeps its last good version.
    root = recipe.data_root_path
    built = [k for k in keys if os.path.isdir(layout.partition_dir(root, layout.FILTERED_DIR, *split_partition_key(k)))]
    for phase in (_dedup_index_steps, _deduplicate_steps):
        steps, h = phase(instance, recipe, root, built)
        held += h
        if steps:
            return steps, held
    steps, h = _mixture_steps(instance, recipe, root, built, mixtures, accept_drift)
    held += h
    if steps:
        return steps, held
    steps, h = _comparison_steps(instance, recipe)
    return steps, held + h


def _quality_model_steps(instance: dg.DagsterInstance, recipe: Recipe, retrain: bool) -> tuple[list[Step], list[Held]]:
    """Train the quality model when the recipe trains one and its training inputs changed (or `retrain`)."""
    if quality_training.needs_training(recipe):
        fingerprint = quality_training.training_fingerprint(recipe)
        if retrain or quality_training.recorded_fingerprint(model_path(recipe)) != fingerprint:
            return _split_held(instance, [Step(QUALITY_MODEL_JOB, None, "its training inputs changed, or forced",
                                               fingerprint)], frozenset([None]) if retrain else frozenset())
    return [], []


def _ingest_steps(instance: dg.DagsterInstance, recipe: Recipe, keys: list[str],
                  force_ingest: frozenset[str]) -> tuple[list[Step], list[Held]]:
    """Ingest the partitions that are stale (`stale_ingest`) or forced."""
    stale = stale_ingest(instance, recipe, [k for k in keys if k not in force_ingest])
    stale.update({k: (input_fingerprint(recipe, *split_partition_key(k)), "forced", False)
                  for k in force_ingest if k in keys})
    return _split_held(instance, [Step(INGEST_JOB, k, stale[k][1], _state(stale[k][0]), stale[k][2])
                                  for k in keys if k in stale], force_ingest)


def _dedup_index_steps(instance: dg.DagsterInstance, recipe: Recipe, root: str,
                       built: list[str]) -> tuple[list[Step], list[Held]]:
    """Rebuild the dedup index when what it reads changed."""
    index = _latest(instance, DEDUP_INDEX, None)
    fingerprint = index_fingerprint(recipe)
    if built and _recorded(index, None) != fingerprint:
        return _split_held(instance, [Step(DEDUP_INDEX_JOB, None, "the filtered partitions changed since it was built",
                                           _state(fingerprint))])
    return [], []


def _deduplicate_steps(instance: dg.DagsterInstance, recipe: Recipe, root: str,
                       built: list[str]) -> tuple[list[Step], list[Held]]:
    """Deduplicate the partitions whose published files are damaged, or whose filtered documents
    or dedup verdicts changed."""
    deduplicated = _latest(instance, DEDUPLICATED, built)
    verdicts = verdict_digests(root)
    steps = []
    for k in built:
        source, snapshot = split_partition_key(k)
        fingerprint = deduplicated_fingerprint(recipe, source, snapshot, verdicts)
        why = k in deduplicated and verify_partition(root, DEDUPLICATED, source, snapshot)
        if why:
            steps.append(Step(DEDUPLICATE_JOB, k, why, _state(fingerprint), True))
        elif _recorded(deduplicated, k) != fingerprint:
            steps.append(Step(DEDUPLICATE_JOB, k, "its filtered documents or dedup verdicts changed", _state(fingerprint)))
    return _split_held(instance, steps)


def _mixture_steps(instance: dg.DagsterInstance, recipe: Recipe, root: str, built: list[str],
                   mixtures: list[str] | None, accept_drift: bool) -> tuple[list[Step], list[Held]]:
    """Rebuild the mixtures (of `mixtures`, when given) that are damaged or draw from a changed
    partition; drift holds one when `drift.remix` is false, unless `accept_drift`."""
    names = sorted(n for n in recipe.mixtures if mixtures is None or n in mixtures)
    mixed = _latest(instance, MIXTURE, names)
    filtered = _latest(instance, FILTERED, built)
    steps, held = [], []
    for name in names:
        fingerprint = mixture_fingerprint(recipe, name)
        why = name in mixed and verify(layout.mixture_dir(root, name))
        if why:
            steps.append(Step(MIX_JOB, name, why, _state(fingerprint), True))
            continue
        if _recorded(mixed, name) == fingerprint:
            continue
        step = Step(MIX_JOB, name, "a partition it draws from changed", _state(fingerprint))
        sources = {base_source(s) for s in recipe.mixture_sources(name)}
        drifted = {s: k for s, k in _drifted_sources(filtered, _sid(mixed, name)).items() if s in sources}
        if drifted and name in mixed and not recipe.drift.remix and not accept_drift:
            held.append(Held(step, f"drift in {', '.join(sorted(drifted.values()))} and drift.remix is false: "
                                   f"materialize it (UI) or run `mix-pipeline run` to accept"))
        else:
            steps.append(step)
    steps, h = _split_held(instance, steps)
    return steps, held + h


def _comparison_steps(instance: dg.DagsterInstance, recipe: Recipe) -> tuple[list[Step], list[Held]]:
    """Compare the mixtures again when one was rebuilt after the comparison."""
    if recipe.mixtures:
        comparison = _latest(instance, MIXTURE_COMPARISON, None)
        every = _latest(instance, MIXTURE, sorted(recipe.mixtures))
        newest_mix = max((r.storage_id for r in every.values()), default=-1)
        if every and _sid(comparison, None) < newest_mix:
            return _split_held(instance, [Step(COMPARE_JOB, None, "a mixture is newer than the comparison",
                                               _state(sorted((n, r.storage_id) for n, r in every.items())))])
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
