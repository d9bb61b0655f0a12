"""The `raw` asset: one source×snapshot partition read by core/stages/raw.py."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline import layout
from mix_pipeline.core.provenance.lineage import input_fingerprint
from mix_pipeline.core.stages.raw import run_raw
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT, markdown_table, numbers
from mix_pipeline.defs.partitions import parse, source_snapshots
from mix_pipeline.names import RAW
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor


def build(recipe: Recipe) -> list:
    @dg.asset(
        name=RAW,
        output_required=False,  # a refused gate publishes nothing (defs/checks.gated)
        partitions_def=source_snapshots(recipe),
        group_name="documents",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(RAW, source_snapshots(recipe)),
        description="One snapshot of a source's input files normalised to id, text, source, domain, "
        "metadata; unreadable records quarantined with a reason.",
    )
    def raw(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        source, snapshot = parse(recipe, context.partition_key)
        env = stage_env(recipe, datatrove, context, catalog)
        fingerprint = input_fingerprint(recipe, source, snapshot)
        result = yield from gated(lambda: run_raw(env, source, snapshot))
        if result is None:
            return
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(result.stats),
                "dagster/row_count": result.stats["documents"],
                "path": dg.MetadataValue.path(layout.partition_dir(env.root, layout.RAW_DIR, source, snapshot)),
                "quarantine_reasons": markdown_table(result.report["quarantine_reasons"]),
                INPUT_FINGERPRINT: fingerprint,
            },
        )

    return [raw]
