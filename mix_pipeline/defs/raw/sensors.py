"""New data in: a sensor that registers new snapshots (and new sources) as partitions and
requests their ingest runs, and the recipe's refresh schedule for inputs that changed."""

from __future__ import annotations

import dagster as dg

from mix_pipeline.core.lineage import input_fingerprint, published_problem
from mix_pipeline.defs.jobs import INGEST_JOB
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT
from mix_pipeline.defs.partitions import discovered_keys, parse, source_snapshots
from mix_pipeline.names import FILTERED, RAW
from mix_pipeline.recipe import Recipe


def recorded_fingerprint(instance: dg.DagsterInstance, asset: str, key: str) -> str | None:
    """The input fingerprint stored with a partition's latest materialization, if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    value = records[0].asset_materialization.metadata.get(INPUT_FINGERPRINT)
    return value.value if value is not None else None


def stale_keys(instance: dg.DagsterInstance, recipe: Recipe, keys: list[str]) -> dict[str, str]:
    """Partitions never built, or whose inputs or recipe entry changed since they were, with
    their current input fingerprint. A partition counts as built only when both raw and filtered
    recorded the current fingerprint: an ingest run killed between the two is redone. One whose
    published files no longer match their seal (a deleted shard) is rebuilt too."""
    out = {}
    for key in keys:
        fingerprint = input_fingerprint(recipe, *parse(recipe, key))
        if any(recorded_fingerprint(instance, asset, key) != fingerprint for asset in (RAW, FILTERED)):
            out[key] = fingerprint
        elif published_problem(recipe, *parse(recipe, key)):
            out[key] = fingerprint
    return out


def build(recipe: Recipe) -> tuple[list, list]:
    partitions = source_snapshots(recipe)

    @dg.sensor(
        name="new_snapshots",
        job_name=INGEST_JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers each new snapshot folder (and each new source) as a partition and "
        "requests its ingest run; downstream stages follow by automation.",
    )
    def new_snapshots(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        new = [k for k in discovered_keys(recipe) if k not in known]
        if new:
            context.log.info(f"new partitions: {new}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=k, run_key=f"new:{k}") for k in new],
            dynamic_partitions_requests=[partitions.build_add_request(new)] if new else [],
        )

    schedules = []
    if recipe.schedule is not None:

        @dg.schedule(
            name="refresh",
            cron_schedule=recipe.schedule.cron,
            execution_timezone=recipe.schedule.timezone,
            job_name=INGEST_JOB,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Re-ingests every registered partition whose input files or recipe entry changed.",
        )
        def refresh(context: dg.ScheduleEvaluationContext):
            known = [k for k in context.instance.get_dynamic_partitions(partitions.name)
                     if parse(recipe, k)[0] in recipe.sources]
            on_disk = set(discovered_keys(recipe))
            stale = stale_keys(context.instance, recipe, [k for k in known if k in on_disk])
            if not stale:
                return dg.SkipReason("no partition's input changed")
            # Keyed on the input state, so one change never launches two runs.
            return [dg.RunRequest(partition_key=k, run_key=f"refresh:{k}:{fp[:16]}") for k, fp in stale.items()]

        schedules.append(refresh)
    return [new_snapshots], schedules
