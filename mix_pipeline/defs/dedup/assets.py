import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core import catalog as cat
from mix_pipeline.core.documents import list_parts, partition_dir
from mix_pipeline.core.lineage import file_fingerprint
from mix_pipeline.core.stages import cluster_files, clusters_file, run_dedup_index, run_deduplicated
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT, markdown_table, numbers
from mix_pipeline.defs.partitions import parse, source_snapshots
from mix_pipeline.names import DEDUP_INDEX, DEDUPLICATED, FILTERED
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor, catalog_connection


def deduplicated_input_fingerprint(recipe: Recipe, root: str, source: str, snapshot: str, clusters: str) -> str:
    """What a deduplicated partition is built from: its filtered shards, its dedup verdicts, the tokenizer."""
    filtered = list_parts(partition_dir(root, "filtered", source, snapshot))
    return file_fingerprint(filtered + [clusters], extra=recipe.tokenizer.model_dump())


def build(recipe: Recipe) -> list:
    partitions = source_snapshots(recipe)

    @dg.asset(
        name=DEDUP_INDEX,
        deps=[dg.AssetDep(FILTERED, partition_mapping=dg.AllPartitionMapping())],
        group_name="dedup",
        kinds={"datatrove", "duckdb"},
        pool=CATALOG_POOL,
        check_specs=check_specs(DEDUP_INDEX, "dedup_index"),
        description="Exact and MinHash near-duplicate clusters across all sources, built snapshot by "
        "snapshot against an index of what earlier snapshots kept; unchanged snapshots are reused.",
    )
    def dedup_index(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        env = stage_env(recipe, datatrove, context)
        result = yield from gated(lambda: run_dedup_index(env))
        files = cluster_files(env)
        with catalog_connection(catalog) as con:
            cat.record_dedup(con, files)
            cat.record_stats(con, DEDUP_INDEX, "all", result.stats)
            per_source = con.execute(
                """SELECT source, count(*) FILTER (WHERE fate = 'kept') AS kept,
                          count(*) FILTER (WHERE reason = 'exact') AS exact,
                          count(*) FILTER (WHERE reason = 'near') AS near
                   FROM document_fates WHERE stage = 'dedup' GROUP BY source ORDER BY source"""
            ).fetchall()
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(result.stats),
                "path": dg.MetadataValue.path(env.dir("dedup_index")),
                "per_source": markdown_table(
                    [{"source": s, "kept": k, "exact duplicates": e, "near duplicates": n} for s, k, e, n in per_source]
                ),
            },
        )

    @dg.asset(
        name=DEDUPLICATED,
        deps=[FILTERED, DEDUP_INDEX],
        partitions_def=partitions,
        group_name="dedup",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(DEDUPLICATED, "deduplicated", partitions),
        description="A snapshot's filtered documents less the duplicates the index marked, with token counts.",
    )
    def deduplicated_documents(
        context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource
    ):
        source, snapshot = parse(recipe, context.partition_key)
        env = stage_env(recipe, datatrove, context)
        clusters = clusters_file(env, source, snapshot)
        fingerprint = deduplicated_input_fingerprint(recipe, env.root, source, snapshot, clusters)
        result = yield from gated(lambda: run_deduplicated(env, source, snapshot))
        with catalog_connection(catalog) as con:
            cat.record_stats(con, DEDUPLICATED, context.partition_key, result.stats)
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(result.stats),
                "dagster/row_count": result.stats["documents"],
                "path": dg.MetadataValue.path(partition_dir(env.root, "deduplicated", source, snapshot)),
                INPUT_FINGERPRINT: fingerprint if os.path.exists(clusters) else "",
            },
        )

    return [dedup_index, deduplicated_documents]
