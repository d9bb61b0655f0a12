import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core import catalog as cat
from mix_pipeline.core.documents import partition_dir
from mix_pipeline.core.stages import clusters_path, run_dedup_index, run_deduplicated
from mix_pipeline.defs.checks import AUTOMATION, check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import markdown_table, numbers
from mix_pipeline.defs.partitions import source_partitions
from mix_pipeline.names import DEDUP_INDEX, DEDUPLICATED, DEFAULT_SNAPSHOT, FILTERED
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor, catalog_connection


def build(recipe: Recipe) -> list:
    sources = source_partitions(recipe)

    @dg.asset(
        name=DEDUP_INDEX,
        deps=[dg.AssetDep(FILTERED, partition_mapping=dg.AllPartitionMapping())],
        group_name="dedup",
        kinds={"datatrove", "duckdb"},
        pool=CATALOG_POOL,
        check_specs=check_specs(DEDUP_INDEX, "dedup_index"),
        automation_condition=AUTOMATION,
        description="Exact and MinHash near-duplicate clusters across all sources; the recipe's "
        "source priority picks each cluster's survivor.",
    )
    def dedup_index(
        context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource
    ):
        env = stage_env(recipe, datatrove, context)
        result = yield from gated(lambda: run_dedup_index(env))
        stats = result.stats
        with catalog_connection(catalog) as con:
            cat.record_dedup(con, clusters_path(env), DEFAULT_SNAPSHOT)
            cat.record_stats(con, DEDUP_INDEX, "all", stats)
            per_source = con.execute(
                """SELECT source, count(*) FILTER (WHERE fate = 'kept') AS kept,
                          count(*) FILTER (WHERE match = 'exact') AS exact,
                          count(*) FILTER (WHERE match = 'near') AS near
                   FROM read_parquet(?) GROUP BY source ORDER BY source""",
                [clusters_path(env)],
            ).fetchall()
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(stats),
                "path": dg.MetadataValue.path(clusters_path(env)),
                "per_source": markdown_table(
                    [{"source": s, "kept": k, "exact duplicates": e, "near duplicates": n} for s, k, e, n in per_source]
                ),
            }
        )

    @dg.asset(
        name=DEDUPLICATED,
        deps=[FILTERED, DEDUP_INDEX],
        partitions_def=sources,
        group_name="dedup",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(DEDUPLICATED, "deduplicated"),
        automation_condition=AUTOMATION,
        description="The source's filtered documents less the duplicates the index marked, with token counts.",
    )
    def deduplicated_documents(
        context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource
    ):
        source = context.partition_key
        env = stage_env(recipe, datatrove, context)
        result = yield from gated(lambda: run_deduplicated(env, source))
        stats = result.stats
        with catalog_connection(catalog) as con:
            cat.record_stats(con, DEDUPLICATED, source, stats)
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(stats),
                "dagster/row_count": stats["documents"],
                "path": dg.MetadataValue.path(partition_dir(env.root, "deduplicated", source, DEFAULT_SNAPSHOT)),
            }
        )

    return [dedup_index, deduplicated_documents]
