"""The Dagster face of the pipeline, assembled from a recipe."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline import layout
from mix_pipeline.core.stages.executors import effective_spec
from mix_pipeline.defs import (
    dedup_index,
    deduplicated,
    filtered,
    jobs,
    mixture,
    mixture_comparison,
    mixture_lab,
    quality_model,
    raw,
    sensors,
)
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor

# One module per asset, in pipeline order; each builds its asset(s) from the recipe.
ASSET_MODULES = (quality_model, raw, filtered, dedup_index, deduplicated, mixture, mixture_comparison, mixture_lab)


def build_definitions(recipe: Recipe) -> dg.Definitions:
    assets = [asset for module in ASSET_MODULES for asset in module.build(recipe)]
    all_jobs = jobs.build(recipe)
    all_sensors, schedules = sensors.build(recipe, all_jobs)
    return dg.Definitions(
        assets=assets,
        jobs=list(all_jobs.values()),
        sensors=all_sensors,
        schedules=schedules,
        # Every run, the UI's Materialize and backfills too, in its run worker's process: each stage
        # parallelises inside itself, and the worker's pid names the run's owner (defs/orphans.py),
        # which a step subprocess ending mid-run would not.
        executor=dg.in_process_executor,
        resources={
            # Every executor setting but `tasks` (which the stages read from the recipe), with
            # MIX_PIPELINE_EXECUTOR's applied (core/stages/executors.py).
            "datatrove": DatatroveExecutor(**effective_spec(recipe).model_dump(exclude={"tasks"})),
            "catalog": DuckDBResource(database=layout.catalog_path(recipe.data_root_path)),
        },
    )
