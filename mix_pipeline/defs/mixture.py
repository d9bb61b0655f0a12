"""The `mixture` asset: one named mixture built by core/stages/mixture.py."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline import layout
from mix_pipeline.core.stages.mixture import run_mixture
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import markdown_table
from mix_pipeline.defs.partitions import mixture_partitions
from mix_pipeline.names import DEDUPLICATED, MIXTURE
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor

LEDGER_COLUMNS = ["source", "requested_weight", "target_weight", "achieved_weight", "units", "tokens", "documents",
                  "available_units", "epochs", "max_epochs", "shortfall_units"]


def build(recipe: Recipe) -> list:
    partitions = mixture_partitions(recipe)
    if partitions is None:
        return []

    @dg.asset(
        name=MIXTURE,
        deps=[dg.AssetDep(DEDUPLICATED, partition_mapping=dg.AllPartitionMapping())],
        partitions_def=partitions,
        group_name="mixtures",
        kinds={"parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(MIXTURE, partitions),
        description="A named mixture: documents sampled to the target weights, split into "
        "train/validation/test shards with a manifest.json and trainer exports.",
    )
    def mixture(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        name = context.partition_key
        env = stage_env(recipe, datatrove, context, catalog)
        result = yield from gated(lambda: run_mixture(env, name))
        manifest, report = result.stats, result.report
        ledger = report["ledger"]
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                "ledger": markdown_table(ledger, LEDGER_COLUMNS),
                "dagster/row_count": sum(s["documents"] for s in manifest["splits"].values()),
                "units": sum(row["units"] for row in ledger),
                "weighting": dg.MetadataValue.json(manifest["weighting"]),
                "rebalanced": dg.MetadataValue.json(manifest["rebalanced"]),
                "manifest": dg.MetadataValue.path(layout.manifest_path(env.root, name)),
                "output_sha256": manifest["output_sha256"],
                "dataset_card": dg.MetadataValue.path(report["dataset_card"]),
                "provenance": dg.MetadataValue.md(report["provenance"]),
                "licenses": dg.MetadataValue.json(manifest.get("licenses", {})),
            }
        )

    return [mixture]
