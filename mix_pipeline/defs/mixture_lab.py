"""The `mixture_lab` asset: one lab experiment (core/lab/search.py) and its recommended mixture."""

import os

import dagster as dg

from mix_pipeline import layout
from mix_pipeline.core.lab.report import candidate_rows, weight_rows
from mix_pipeline.core.lab.search import run_lab
from mix_pipeline.defs.env import stage_env
from mix_pipeline.defs.metadata import markdown_table
from mix_pipeline.defs.partitions import experiment_partitions
from mix_pipeline.names import DEDUPLICATED, MIXTURE_LAB
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor


def build(recipe: Recipe) -> list:
    partitions = experiment_partitions(recipe)
    if partitions is None:
        return []

    @dg.asset(
        name=MIXTURE_LAB,
        deps=[dg.AssetDep(DEDUPLICATED, partition_mapping=dg.AllPartitionMapping())],
        partitions_def=partitions,
        group_name="mixtures",
        kinds={"html", "json"},
        description="A mixture-lab experiment: candidate mixtures proxy-trained and scored on held-out "
        "sets, a weights→loss fit, and a recommended mixture (`lab/<experiment>/report.html`).",
    )
    def mixture_lab(context: dg.AssetExecutionContext, datatrove: DatatroveExecutor):
        name = context.partition_key
        env = stage_env(recipe, datatrove, context)
        results = run_lab(env, name)
        out = layout.lab_dir(env.root, name)
        rec = results["recommended"]
        transfer = results.get("transfer") or {}
        extra = {"transfer_verdict": dg.MetadataValue.text(transfer["verdict"])} if transfer else {}
        return dg.MaterializeResult(
            metadata={
                "candidates": markdown_table(candidate_rows(results)),
                "weights": markdown_table(weight_rows(results)),
                "recommended_weights": dg.MetadataValue.json(results["recommended_weights"]),
                "recommended_from": dg.MetadataValue.text(results["chosen"]["from"]),
                "proxies_trained": dg.MetadataValue.int(int(results["proxies_trained"])),
                "recommended_objective": dg.MetadataValue.float(float(rec["objective"])),
                "improvement_vs_uniform": dg.MetadataValue.float(float(results["improvement_vs_uniform"])),
                "improvement_vs_prior": dg.MetadataValue.float(float(results["improvement_vs_prior"])),
                "spearman_loo": dg.MetadataValue.float(float(results["spearman_loo"])),
                "report": dg.MetadataValue.path(os.path.join(out, "report.html")),
                "recommended_yaml": dg.MetadataValue.path(os.path.join(out, "recommended.yaml")),
                **extra,
            }
        )

    return [mixture_lab]
