"""The `dedup_index` asset: near-duplicate verdicts across every filtered partition (core/stages/dedup_index.py)."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline import layout
from mix_pipeline.core.provenance.lineage import index_fingerprint
from mix_pipeline.core.stages.dedup_index import run_dedup_index
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT, markdown_table, numbers
from mix_pipeline.names import DEDUP_INDEX, FILTERED
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor


def build(recipe: Recipe) -> list:
    @dg.asset(
        name=DEDUP_INDEX,
        output_required=False,  # a refused gate publishes nothing (defs/checks.gated)
        deps=[dg.AssetDep(FILTERED, partition_mapping=dg.AllPartitionMapping())],
        group_name="dedup",
        kinds={"datatrove", "duckdb"},
        pool=CATALOG_POOL,
        check_specs=check_specs(DEDUP_INDEX),
        description="Exact and MinHash near-duplicate clusters across all sources, built snapshot by "
        "snapshot against an index of what earlier snapshots kept; unchanged snapshots are reused.",
    )
    def dedup_index(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        env = stage_env(recipe, datatrove, context, catalog)
        fingerprint = index_fingerprint(recipe)  # what it reads, before it reads it
        result = yield from gated(lambda: run_dedup_index(env))
        if result is None:
            return
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(result.stats),
                "path": dg.MetadataValue.path(layout.dedup_index_dir(env.root)),
                "per_source": markdown_table(result.report["per_source"]),
                INPUT_FINGERPRINT: fingerprint,
            },
        )

    return [dedup_index]
