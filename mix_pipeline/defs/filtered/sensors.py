"""Drift: when a filtered snapshot's drift check fails, re-mix every mixture that uses the
source (and, where the recipe says `drift.backfill`, re-ingest the source's other snapshots)."""

from __future__ import annotations

import dagster as dg

from mix_pipeline.defs.filtered.assets import DRIFT_EXCEEDED, DRIFT_SCORE
from mix_pipeline.defs.jobs import INGEST_JOB, MIX_JOB
from mix_pipeline.defs.partitions import source_snapshots
from mix_pipeline.names import FILTERED, split_partition_key
from mix_pipeline.recipe import Recipe


def drift_requests(recipe: Recipe, instance: dg.DagsterInstance, after: int | None) -> tuple[list, int | None]:
    """Run requests for filtered materializations after storage id `after` that drifted."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(FILTERED), after_storage_id=after), limit=500, ascending=True
    ).records
    requests, cursor = [], after
    known = instance.get_dynamic_partitions(source_snapshots(recipe).name)
    for record in records:
        cursor = record.storage_id
        meta = record.asset_materialization.metadata
        if DRIFT_EXCEEDED not in meta or not meta[DRIFT_EXCEEDED].value:
            continue
        key = record.asset_materialization.partition
        source, _ = split_partition_key(key)
        score = meta[DRIFT_SCORE].value
        if recipe.drift.remix:
            for name, mix in sorted(recipe.mixtures.items()):
                if mix.weights.get(source, 0) > 0:
                    requests.append(dg.RunRequest(job_name=MIX_JOB, partition_key=name,
                                                  run_key=f"drift:{record.storage_id}:{name}",
                                                  tags={"mix_pipeline/drift": f"{key} score {score:.3f}"}))
        if recipe.drift.backfill:
            for other in known:
                if other != key and split_partition_key(other)[0] == source:
                    requests.append(dg.RunRequest(job_name=INGEST_JOB, partition_key=other,
                                                  run_key=f"drift:{record.storage_id}:{other}"))
    return requests, cursor


def build(recipe: Recipe, jobs: dict) -> list:
    @dg.sensor(
        name="drift",
        jobs=[job for name, job in jobs.items() if name in (MIX_JOB, INGEST_JOB)],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-mixes (and optionally backfills) when a snapshot's drift check fails.",
    )
    def drift(context: dg.SensorEvaluationContext):
        after = int(context.cursor) if context.cursor else None
        requests, cursor = drift_requests(recipe, context.instance, after)
        if cursor is not None:
            context.update_cursor(str(cursor))
        return requests or dg.SkipReason("no drifted snapshot since the last tick")

    return [drift]
