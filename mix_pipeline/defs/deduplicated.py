"""The `deduplicated` asset: one source×snapshot partition less its duplicates (core/stages/deduplicated.py)."""

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline import layout
from mix_pipeline.core.provenance.lineage import deduplicated_fingerprint
from mix_pipeline.core.stages.deduplicated import run_deduplicated
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT, numbers
from mix_pipeline.defs.partitions import parse, source_snapshots
from mix_pipeline.names import DEDUP_INDEX, DEDUPLICATED, FILTERED
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor


def build(recipe: Recipe) -> list:
    partitions = source_snapshots(recipe)

    @dg.asset(
        name=DEDUPLICATED,
        output_required=False,  # a refused gate publishes nothing (defs/checks.gated)
        deps=[FILTERED, DEDUP_INDEX],
        partitions_def=partitions,
        group_name="dedup",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(DEDUPLICATED, partitions),
        description="A snapshot's filtered documents less the duplicates the index marked, with token counts.",
    )
    def deduplicated(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        source, snapshot = parse(recipe, context.partition_key)
        env = stage_env(recipe, datatrove, context, catalog)
        clusters = layout.clusters_file(env.root, source, snapshot)
        fingerprint = deduplicated_fingerprint(recipe, source, snapshot)  # what it reads, before it reads it
        result = yield from gated(lambda: run_deduplicated(env, source, snapshot))
        if result is None:
            return
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(result.stats),
                "dagster/row_count": result.stats["documents"],
                "path": dg.MetadataValue.path(layout.partition_dir(env.root, layout.DEDUPLICATED_DIR, source, snapshot)),
                INPUT_FINGERPRINT: fingerprint if os.path.exists(clusters) else "",
            },
        )

    return [deduplicated]
