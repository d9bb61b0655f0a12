import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core import catalog as cat
from mix_pipeline.core.documents import partition_dir
from mix_pipeline.core.stages import dropped_files, run_filtered
from mix_pipeline.defs.checks import AUTOMATION, check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import markdown_table, numbers
from mix_pipeline.defs.partitions import source_partitions
from mix_pipeline.names import DEFAULT_SNAPSHOT, FILTERED, RAW
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor, catalog_connection


def build(recipe: Recipe) -> list:
    @dg.asset(
        name=FILTERED,
        deps=[RAW],
        partitions_def=source_partitions(recipe),
        group_name="documents",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(FILTERED, "filtered"),
        automation_condition=AUTOMATION,
        description="The source's documents after the recipe's filters; dropped documents are "
        "kept under dropped/<source>/<snapshot>/<filter>/ with the reason.",
    )
    def filtered_documents(
        context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource
    ):
        source = context.partition_key
        env = stage_env(recipe, datatrove, context)
        result = yield from gated(lambda: run_filtered(env, source))
        stats = result.stats
        with catalog_connection(catalog) as con:
            cat.record_filtered(con, source, DEFAULT_SNAPSHOT, dropped_files(env, source))
            cat.record_stats(con, FILTERED, source, stats)
            reasons = con.execute(
                """SELECT reason, count(*) AS documents FROM document_fates
                   WHERE stage = 'filtered' AND source = ? GROUP BY reason ORDER BY documents DESC, reason""",
                [source],
            ).fetchall()
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(stats),
                "dagster/row_count": stats["documents"],
                "path": dg.MetadataValue.path(partition_dir(env.root, "filtered", source, DEFAULT_SNAPSHOT)),
                "drop_reasons": markdown_table([{"filter:reason": r, "documents": n} for r, n in reasons]),
            }
        )

    return [filtered_documents]
