import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core import catalog as cat
from mix_pipeline.core.documents import partition_dir
from mix_pipeline.core.lineage import input_fingerprint
from mix_pipeline.core.quality import snippet
from mix_pipeline.core.stages import dropped_files, kept_files, run_filtered
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import DRIFT_EXCEEDED, DRIFT_SCORE, INPUT_FINGERPRINT, markdown_table, numbers
from mix_pipeline.defs.partitions import parse, source_snapshots
from mix_pipeline.defs.quality_model import assets as quality_model_assets
from mix_pipeline.names import FILTERED, RAW
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor, catalog_connection

SAMPLES_PER_FILTER = 3


def build(recipe: Recipe) -> list:
    @dg.asset(
        name=FILTERED,
        deps=[RAW, *quality_model_assets.upstream_of_filtered(recipe)],
        partitions_def=source_snapshots(recipe),
        group_name="documents",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(FILTERED, "filtered", source_snapshots(recipe)),
        description="A snapshot's documents after decontamination and the recipe's filters; dropped documents "
        "are kept under `dropped/<source>/<snapshot>/<filter>/` with the reason and measured value. Profiles the "
        "snapshot for drift.",
    )
    def filtered_documents(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        source, snapshot = parse(recipe, context.partition_key)
        env = stage_env(recipe, datatrove, context)
        fingerprint = input_fingerprint(recipe, source, snapshot)
        with catalog_connection(catalog) as con:
            cat.ensure_schema(con)
            profiles = cat.profiles(con, source)
        result = yield from gated(lambda: run_filtered(env, source, snapshot, profiles))
        stats = result.stats
        drift = next(c for c in result.checks if c.name == "drift")
        drops = dropped_files(env, source, snapshot)
        with catalog_connection(catalog) as con:
            per_filter = cat.record_filtered(con, source, snapshot, kept_files(env, source, snapshot), drops)
            cat.record_stats(con, FILTERED, context.partition_key, stats)
            cat.record_profile(con, source, snapshot, result.profile, float(drift.observed or 0.0))
            report = cat.filtered_report(con, source, snapshot)
            samples = cat.dropped_samples(con, drops, per_filter=SAMPLES_PER_FILTER)
            history = cat.drift_history(con, source)
        n_in = stats["input_documents"]
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(stats),
                "dagster/row_count": stats["documents"],
                "path": dg.MetadataValue.path(partition_dir(env.root, "filtered", source, snapshot)),
                "drops_per_filter": markdown_table(
                    [{"filter": f, "dropped": n, "share_of_input": n / n_in if n_in else 0.0} for f, n in per_filter.items()]
                ),
                "drop_reasons": markdown_table([{"filter:reason": r["reason"], "documents": r["documents"]}
                                                for r in report["drop_reasons"]]),
                "dropped_samples": markdown_table(
                    [{**s, "text": snippet(s["text"], 120)} for s in samples], ["filter", "id", "reason", "detail", "text"]
                ),
                "language_shares": markdown_table(report["language_shares"]),
                "pii_redactions": markdown_table(report["pii"]),
                "safety": markdown_table(report["safety"]),
                "decontamination": markdown_table(report["decontamination"]),
                DRIFT_SCORE: dg.MetadataValue.float(float(drift.observed or 0.0)),
                DRIFT_EXCEEDED: dg.MetadataValue.bool(not drift.passed),
                "drift_history": markdown_table(history, ["snapshot", "documents", "tokens", "drift_score", "chart"]),
                INPUT_FINGERPRINT: fingerprint,
            },
        )

    return [filtered_documents]
