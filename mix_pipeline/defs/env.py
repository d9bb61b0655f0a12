"""What every stage asset needs from Dagster: the recipe's StageEnv, with the configured executor,
the run's log and the catalog resource's connection."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core.stages.base import StageEnv
from mix_pipeline.defs.orphans import tag_worker
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor, catalog_connection

# Assets that write the DuckDB catalog share this pool; DuckDB allows one writing process.
CATALOG_POOL = "mix_pipeline_catalog"


def stage_env(recipe: Recipe, executor: DatatroveExecutor, context: dg.AssetExecutionContext,
              catalog: DuckDBResource | None = None) -> StageEnv:
    tag_worker(context)  # a daemon-launched run names its worker's pid, so a killed one is seen (defs/orphans.py)
    return StageEnv(recipe, runner=executor.runner(), log=context.log.info,
                    catalog=None if catalog is None else (lambda: catalog_connection(catalog)))
