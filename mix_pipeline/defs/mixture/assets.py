import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core import catalog as cat
from mix_pipeline.core.comparison import COLUMNS as COMPARISON_COLUMNS
from mix_pipeline.core.comparison import JSON_FILE, MARKDOWN_FILE
from mix_pipeline.core.dataset_card import write_dataset_card
from mix_pipeline.core.provenance import sample_rows_markdown
from mix_pipeline.core.stages import mixture_dir, run_comparison, run_mixture
from mix_pipeline.defs.checks import check_specs, gated, to_result
from mix_pipeline.defs.env import CATALOG_POOL, stage_env
from mix_pipeline.defs.metadata import markdown_table
from mix_pipeline.defs.partitions import mixture_partitions
from mix_pipeline.names import DEDUPLICATED, MIXTURE, MIXTURE_COMPARISON
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor, catalog_connection

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
        check_specs=check_specs(MIXTURE, "mixture", partitions),
        description="A named mixture: documents sampled to the target weights, split into "
        "train/validation/test shards with a manifest.json and trainer exports.",
    )
    def mixture(
        context: dg.AssetExecutionContext, datatrove: DatatroveExecutor, catalog: DuckDBResource
    ):
        name = context.partition_key
        env = stage_env(recipe, datatrove, context)
        with catalog_connection(catalog) as con:
            cat.ensure_schema(con)
            rows = cat.conservation(con)
        result = yield from gated(lambda: run_mixture(env, name, conservation_rows=rows))
        manifest = result.stats
        ledger = [{"source": s, **row} for s, row in sorted(manifest["sources"].items())]
        out = mixture_dir(env, name)
        with catalog_connection(catalog) as con:
            cat.record_mixture(con, name, ledger)
            card = write_dataset_card(con, recipe, name, out)
            traced = sample_rows_markdown(con, recipe, name)
        yield dg.MaterializeResult(
            check_results=[to_result(o) for o in result.checks],
            metadata={
                "ledger": markdown_table(ledger, LEDGER_COLUMNS),
                "dagster/row_count": sum(s["documents"] for s in manifest["splits"].values()),
                "units": sum(row["units"] for row in ledger),
                "weighting": dg.MetadataValue.json(manifest["weighting"]),
                "rebalanced": dg.MetadataValue.json(manifest["rebalanced"]),
                "manifest": dg.MetadataValue.path(os.path.join(out, "manifest.json")),
                "output_sha256": manifest["output_sha256"],
                "dataset_card": dg.MetadataValue.path(card),
                "provenance": dg.MetadataValue.md(traced),
                "licenses": dg.MetadataValue.json(manifest.get("licenses", {})),
            }
        )

    @dg.asset(
        name=MIXTURE_COMPARISON,
        deps=[dg.AssetDep(MIXTURE, partition_mapping=dg.AllPartitionMapping())],
        group_name="mixtures",
        kinds={"json"},
        description="Every named mixture in one table (per-source weights, units, epochs, sizes), "
        "also written to mixtures/comparison.{json,md}.",
    )
    def mixture_comparison(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor):
        env = stage_env(recipe, datatrove, context)
        doc = run_comparison(env)
        folder = env.dir("mixtures")
        return dg.MaterializeResult(
            metadata={
                "comparison": markdown_table(doc["rows"], COMPARISON_COLUMNS),
                "mixtures": dg.MetadataValue.json(doc["mixtures"]),
                "not_built": dg.MetadataValue.json(doc["not_built"]),
                "json": dg.MetadataValue.path(os.path.join(folder, JSON_FILE)),
                "markdown": dg.MetadataValue.path(os.path.join(folder, MARKDOWN_FILE)),
            }
        )

    return [mixture, mixture_comparison]
