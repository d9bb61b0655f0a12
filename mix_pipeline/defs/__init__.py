"""The Dagster face of the pipeline, assembled from a recipe."""

from __future__ import annotations

import os

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core.executors import effective_spec  # issue 14
from mix_pipeline.defs import jobs, sensors
from mix_pipeline.defs.dedup import assets as dedup_assets
from mix_pipeline.defs.filtered import assets as filtered_assets
from mix_pipeline.defs.lab import assets as lab_assets
from mix_pipeline.defs.mixture import assets as mixture_assets
from mix_pipeline.defs.quality_model import assets as quality_model_assets
from mix_pipeline.defs.raw import assets as raw_assets
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor

CATALOG_FILE = "catalog.duckdb"


def catalog_path(recipe: Recipe) -> str:
    return os.path.join(recipe.data_root_path, CATALOG_FILE)


def build_definitions(recipe: Recipe) -> dg.Definitions:
    assets = raw_assets.build(recipe) + filtered_assets.build(recipe) + dedup_assets.build(recipe) + mixture_assets.build(recipe)
    assets += lab_assets.build(recipe) + quality_model_assets.build(recipe)
    all_jobs = jobs.build(recipe)
    all_sensors, schedules = sensors.build(recipe, all_jobs)
    return dg.Definitions(
        assets=assets,
        jobs=list(all_jobs.values()),
        sensors=all_sensors,
        schedules=schedules,
        resources={
            # issue 14: every executor setting but `tasks` (which the stages read from the recipe),
            # with MIX_PIPELINE_EXECUTOR's applied (core/executors.py).
            "datatrove": DatatroveExecutor(**effective_spec(recipe).model_dump(exclude={"tasks"})),
            "catalog": DuckDBResource(database=catalog_path(recipe)),
        },
    )
