"""The `mixture` asset: one named mixture built by core/stages/mixture.py."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline import layout
from mix_pipeline.core.provenance.lineage import mixture_fingerprint
from mix_pipeline.core.stages.mixture import run_mixture
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import INPUT_FINGERPRINT, SHORT_HEADERS, markdown_table
from mix_pipeline.defs.partitions import mixture_partitions
from mix_pipeline.names import DEDUPLICATED, MIXTURE
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor

# The ledger as two tables narrow enough for the UI (defs/metadata.SHORT_HEADERS): what was asked
# for and achieved, and what each source had to give.
LEDGER_COLUMNS = ["source", "requested_weight", "target_weight", "achieved_weight", "units", "tokens"]
SUPPLY_COLUMNS = ["source", "documents", "available_units", "epochs", "max_epochs", "shortfall_units"]


def build(recipe: Recipe) -> list:
    partitions = mixture_partitions(recipe)
    if partitions is None:
        return []

    @dg.asset(
        name=MIXTURE,
        output_required=False,  # a refused gate publishes nothing (defs/checks.gated)
        deps=[dg.AssetDep(DEDUPLICATED, partition_mapping=dg.AllPartitionMapping())],
        partitions_def=partitions,
        group_name="mixtures",
        kinds={"parquet"},
        pool=CATALOG_POOL,
        check_specs=check_specs(MIXTURE, partitions),
        description="A named mixture: documents sampled to the target weights, split into "
        "train/validation/test shards with a manifest.json and trainer exports. Its ledger is two tables: "
        "`ledger` (per source: requested, target and achieved weights, units, tokens) and `ledger_supply` "
        "(documents, available units, epochs against the cap, shortfall moved to other sources by rebalancing).",
    )
    def mixture(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource):
        name = context.partition_key
        env = stage_env(recipe, datatrove, context, catalog)
        fingerprint = mixture_fingerprint(recipe, name)  # what it reads, before it reads it
        result = yield from gated(lambda: run_mixture(env, name))
        if result is None:
            return
        manifest, report = result.stats, result.report
        ledger = report["ledger"]
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                "ledger": markdown_table(ledger, LEDGER_COLUMNS, SHORT_HEADERS),
                "ledger_supply": markdown_table(ledger, SUPPLY_COLUMNS, SHORT_HEADERS),
                "dagster/row_count": sum(s["documents"] for s in manifest["splits"].values()),
                "units": sum(row["units"] for row in ledger),
                "weighting": dg.MetadataValue.json(manifest["weighting"]),
                "rebalanced": dg.MetadataValue.json(manifest["rebalanced"]),
                "manifest": dg.MetadataValue.path(layout.manifest_path(env.root, name)),
                "output_sha256": manifest["output_sha256"],
                "dataset_card": dg.MetadataValue.path(report["dataset_card"]),
                "provenance": dg.MetadataValue.md(report["provenance"]),
                "licenses": dg.MetadataValue.json(manifest.get("licenses", {})),
                INPUT_FINGERPRINT: fingerprint,
            }
        )

    return [mixture]
