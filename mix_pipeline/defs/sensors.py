"""The unattended paths: the `pipeline` sensor, the recipe's `refresh` schedule and the `drift` sensor.

All three are on as soon as the code location loads (`make ui`, or a deployed `dagster-daemon`).
The sensor and the schedule ask the planner (defs/plan.py) for the next wave of stale work, the
same function `mix-pipeline run` follows, and request one run per step; a new snapshot folder thus
flows raw → filtered → dedup_index → deduplicated → mixture → comparison, one wave per tick, with
no click. The drift sensor adds what the recipe asks for when a snapshot drifts.
"""

from __future__ import annotations

import os

import dagster as dg

from mix_pipeline.core.io.locks import lock_holder
from mix_pipeline.defs.jobs import INGEST_JOB
from mix_pipeline.defs.metadata import DRIFT_EXCEEDED, DRIFT_SCORE
from mix_pipeline.defs.orphans import fail_orphaned_runs
from mix_pipeline.defs.partitions import register, retire, source_snapshots
from mix_pipeline.defs.plan import PLANNED_TAG, STEP_TAG, attempts, mark_held, next_wave, runs_in_flight
from mix_pipeline.names import DEDUPLICATED, FILTERED, split_partition_key
from mix_pipeline.recipe import Recipe

# How often the sensors look (seconds); tests and impatient demos set it lower.
INTERVAL_ENV = "MIX_PIPELINE_SENSOR_SECONDS"


def interval() -> int:
    return int(os.environ.get(INTERVAL_ENV) or 30)


def planned_requests(recipe: Recipe, instance: dg.DagsterInstance) -> list[dg.RunRequest] | dg.SkipReason:
    """Register new snapshot partitions, then request the planner's next wave (or say why not)."""
    pid = lock_holder(recipe.data_root_path)
    if pid is not None:
        return dg.SkipReason(f"a mix-pipeline run (pid {pid}) holds the data root; it builds what is stale")
    new = register(instance, recipe)
    # A run whose process is gone (a killed run worker, or daemon) would be in flight for ever.
    fail_orphaned_runs(instance, daemon_running=True, log=dg.get_dagster_logger().warning)
    in_flight = runs_in_flight(instance)
    if in_flight:
        return dg.SkipReason(f"waiting for what is in flight: {', '.join(in_flight[:5])}")
    retire(instance, recipe, log=dg.get_dagster_logger().info)
    steps, held = next_wave(instance, recipe)
    mark_held(instance, held)
    for h in held:
        dg.get_dagster_logger().info(f"held: {h.step.label}: {h.reason}")
    if not steps:
        why = "; ".join(f"{h.step.label} held: {h.reason}" for h in held) or "everything is up to date"
        return dg.SkipReason(f"registered {len(new)} new partition(s); {why}" if new else why)
    # The run key counts attempts: a step retried after a killed run gets a key Dagster has not used.
    return [dg.RunRequest(job_name=s.job, partition_key=s.partition, run_key=f"{s.run_key}#{attempts(instance, s)}",
                          tags={PLANNED_TAG: recipe.name, STEP_TAG: s.run_key, "mix_pipeline/why": s.why[:200]})
            for s in steps]


def drift_backfill_requests(recipe: Recipe, instance: dg.DagsterInstance, after: int | None) -> tuple[list, int | None]:
    """Ingest runs of a source's other snapshots for each drifted filtered materialization after
    storage id `after`, once dedup has taken the drifted snapshot in (`drift.backfill`)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(FILTERED), after_storage_id=after), limit=500, ascending=True
    ).records
    requests, cursor = [], after
    known = instance.get_dynamic_partitions(source_snapshots(recipe).name)
    for record in records:
        meta, key = record.asset_materialization.metadata, record.asset_materialization.partition
        if recipe.drift.backfill and DRIFT_EXCEEDED in meta and meta[DRIFT_EXCEEDED].value:
            taken_in = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(DEDUPLICATED), asset_partitions=[key], after_storage_id=record.storage_id), limit=1)
            if not taken_in.records:
                break  # look again next tick
            source = split_partition_key(key)[0]
            requests += [dg.RunRequest(job_name=INGEST_JOB, partition_key=other, run_key=f"drift:{record.storage_id}:{other}",
                                       tags={PLANNED_TAG: recipe.name,
                                             "mix_pipeline/drift": f"{key} score {meta[DRIFT_SCORE].value:.3f}"})
                         for other in sorted(known) if other != key and split_partition_key(other)[0] == source]
        cursor = record.storage_id
    return requests, cursor


def build(recipe: Recipe, jobs: dict) -> tuple[list, list]:
    @dg.sensor(
        name="pipeline",
        jobs=list(jobs.values()),
        minimum_interval_seconds=interval(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers each new snapshot folder (and new source) as a partition and starts the next "
        "wave of stale work (ingest → dedup_index → deduplicate → mixture → comparison), one wave at a time.",
    )
    def pipeline(context: dg.SensorEvaluationContext):
        return planned_requests(recipe, context.instance)

    @dg.sensor(
        name="drift",
        jobs=[jobs[INGEST_JOB]],
        minimum_interval_seconds=interval(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="With `drift.backfill`, re-ingests a source's other snapshots once dedup has taken in a "
        "snapshot whose drift check failed. Re-mixing needs no sensor: the `pipeline` sensor rebuilds every "
        "mixture whose inputs changed (or holds it, with `drift.remix: false`).",
    )
    def drift(context: dg.SensorEvaluationContext):
        after = int(context.cursor) if context.cursor else None
        requests, cursor = drift_backfill_requests(recipe, context.instance, after)
        if cursor is not None:
            context.update_cursor(str(cursor))
        return requests or dg.SkipReason("no drifted snapshot to backfill since the last tick")

    schedules = []
    if recipe.schedule is not None:

        @dg.schedule(
            name="refresh",
            cron_schedule=recipe.schedule.cron,
            execution_timezone=recipe.schedule.timezone,
            job=jobs[INGEST_JOB],
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Looks for new and changed input on the recipe's schedule and ingests it (the planner's "
            "first wave); the `pipeline` sensor carries it through the later stages.",
        )
        def refresh(context: dg.ScheduleEvaluationContext):
            requests = planned_requests(recipe, context.instance)
            if isinstance(requests, list) and any(r.job_name != INGEST_JOB for r in requests):
                return dg.SkipReason("no input changed; the pipeline sensor carries the later stages")
            return requests

        schedules.append(refresh)
    return [pipeline, drift], schedules
