"""The `filtered` asset: one source×snapshot partition through core/stages/filtered.py."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline import layout
from mix_pipeline.core.filters.registry import DECONTAMINATION, PII, SAFETY
from mix_pipeline.core.provenance.lineage import input_fingerprint
from mix_pipeline.core.gates.checks import snippet
from mix_pipeline.core.stages.filtered import run_filtered
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import DRIFT_EXCEEDED, DRIFT_SCORE, INPUT_FINGERPRINT, markdown_table, numbers
from mix_pipeline.defs.partitions import parse, source_snapshots
from mix_pipeline.defs.quality_model import upstream_of_filtered
from mix_pipeline.names import FILTERED, RAW
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor


def build(recipe: Recipe) -> list:
    @dg.asset(
        name=FILTERED,
        output_required=False,  # a refused gate publishes nothing (defs/checks.gated)
        deps=[RAW, *upstream_of_filtered(recipe)],
        partitions_def=source_snapshots(recipe),
        group_name="documents",
        kinds={"datatrove", "parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(FILTERED, source_snapshots(recipe)),
        description="A snapshot's documents after decontamination and the recipe's filters; dropped documents "
        "are kept under `dropped/<source>/<snapshot>/<filter>/` with the reason and measured value. Profiles the "
        "snapshot for drift.",
    )
    def filtered(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        source, snapshot = parse(recipe, context.partition_key)
        env = stage_env(recipe, datatrove, context, catalog)
        fingerprint = input_fingerprint(recipe, source, snapshot)
        result = yield from gated(lambda: run_filtered(env, source, snapshot))
        if result is None:
            return
        stats, report = result.stats, result.report
        drift = next(c for c in result.checks if c.name == "drift")
        n_in = stats["input_documents"]
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                **numbers(stats),
                "dagster/row_count": stats["documents"],
                "path": dg.MetadataValue.path(layout.partition_dir(env.root, layout.FILTERED_DIR, source, snapshot)),
                "drops_per_filter": markdown_table(
                    [{"filter": f, "dropped": n, "share_of_input": n / n_in if n_in else 0.0}
                     for f, n in report["per_filter"].items()]
                ),
                "drop_reasons": markdown_table([{"filter:reason": r["reason"], "documents": r["documents"]}
                                                for r in report["drop_reasons"]]),
                "dropped_samples": markdown_table(
                    [{**s, "text": snippet(s["text"], 120)} for s in report["samples"]],
                    ["filter", "id", "reason", "detail", "text"],
                ),
                "language_shares": markdown_table(report["language_shares"]),
                "pii_redactions": markdown_table(report[PII]),
                SAFETY: markdown_table(report[SAFETY]),
                DECONTAMINATION: markdown_table(report[DECONTAMINATION]),
                DRIFT_SCORE: dg.MetadataValue.float(float(drift.observed or 0.0)),
                DRIFT_EXCEEDED: dg.MetadataValue.bool(not drift.passed),
                "drift_history": markdown_table(report["drift_history"],
                                                ["snapshot", "documents", "tokens", "drift_score", "chart"]),
                INPUT_FINGERPRINT: fingerprint,
            },
        )

    return [filtered]
