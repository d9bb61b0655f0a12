"""The `mixture_comparison` asset: every built mixture side by side (core/stages/mixture_comparison.py)."""

import os

import dagster as dg

from mix_pipeline import layout
from mix_pipeline.core.mixing.comparison import COLUMNS as COMPARISON_COLUMNS
from mix_pipeline.core.mixing.comparison import JSON_FILE, MARKDOWN_FILE
from mix_pipeline.core.stages.mixture_comparison import run_comparison
from mix_pipeline.defs.env import stage_env
from mix_pipeline.defs.metadata import SHORT_HEADERS, markdown_table
from mix_pipeline.defs.partitions import mixture_partitions
from mix_pipeline.names import MIXTURE, MIXTURE_COMPARISON
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor


def build(recipe: Recipe) -> list:
    if mixture_partitions(recipe) is None:
        return []

    @dg.asset(
        name=MIXTURE_COMPARISON,
        deps=[dg.AssetDep(MIXTURE, partition_mapping=dg.AllPartitionMapping())],
        group_name="mixtures",
        kinds={"json"},
        description="Every named mixture side by side: `comparison` (per mixture and source: the unit, requested, "
        "target and achieved weights) and `comparison_sizes` (units, tokens, documents, rows, epochs and their cap); "
        "mixtures/comparison.{json,md} hold it as one table.",
    )
    def mixture_comparison(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor):
        env = stage_env(recipe, datatrove, context)
        doc = run_comparison(env)
        folder = layout.mixtures_dir(env.root)
        return dg.MaterializeResult(
            metadata={
                # Two tables narrow enough for the UI (defs/metadata.SHORT_HEADERS); the files hold it whole.
                "comparison": markdown_table(doc["rows"], COMPARISON_COLUMNS[:6], SHORT_HEADERS),
                "comparison_sizes": markdown_table(doc["rows"], ["mixture", "source", *COMPARISON_COLUMNS[6:]], SHORT_HEADERS),
                "mixtures": dg.MetadataValue.json(doc["mixtures"]),
                "not_built": dg.MetadataValue.json(doc["not_built"]),
                "json": dg.MetadataValue.path(os.path.join(folder, JSON_FILE)),
                "markdown": dg.MetadataValue.path(os.path.join(folder, MARKDOWN_FILE)),
            }
        )

    return [mixture_comparison]
