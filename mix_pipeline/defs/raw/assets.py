import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core import catalog as cat
from mix_pipeline.core.documents import list_parts, partition_dir
from mix_pipeline.core.lineage import input_fingerprint
from mix_pipeline.core.stages import run_raw
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT, markdown_table, numbers
from mix_pipeline.defs.partitions import parse, source_snapshots
from mix_pipeline.names import RAW
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor, catalog_connection


def build(recipe: Recipe) -> list:
    @dg.asset(
        name=RAW,
        partitions_def=source_snapshots(recipe),
        group_name="documents",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(RAW, "raw", source_snapshots(recipe)),
        description="One snapshot of a source's input files normalised to id, text, source, domain, "
        "metadata; unreadable records quarantined with a reason.",
    )
    def raw_documents(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        source, snapshot = parse(recipe, context.partition_key)
        env = stage_env(recipe, datatrove, context)
        fingerprint = input_fingerprint(recipe, source, snapshot)
        result = yield from gated(lambda: run_raw(env, source, snapshot))
        stats = result.stats
        raw_dir = partition_dir(env.root, "raw", source, snapshot)
        quarantine_dir = partition_dir(env.root, "quarantine", source, snapshot)
        with catalog_connection(catalog) as con:
            cat.record_raw(con, source, snapshot, list_parts(raw_dir), list_parts(quarantine_dir))
            cat.record_stats(con, RAW, context.partition_key, stats)
            reasons = con.execute(
                """SELECT reason, count(*) AS records FROM document_fates
                   WHERE stage = 'raw' AND source = ? AND snapshot = ? GROUP BY reason ORDER BY records DESC, reason""",
                [source, snapshot],
            ).fetchall()
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(stats),
                "dagster/row_count": stats["documents"],
                "path": dg.MetadataValue.path(raw_dir),
                "quarantine_reasons": markdown_table([{"reason": r, "records": n} for r, n in reasons]),
                INPUT_FINGERPRINT: fingerprint,
            },
        )

    return [raw_documents]
