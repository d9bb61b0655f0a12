"""What every stage asset needs from Dagster: the recipe's StageEnv and a catalog connection."""

import dagster as dg

from mix_pipeline.core.stages import StageEnv
from mix_pipeline.recipe import Recipe
from mix_pipeline.resources import DatatroveExecutor

# Assets that write the DuckDB catalog share this pool; DuckDB allows one writing process.
CATALOG_POOL = "mix_pipeline_catalog"


def stage_env(recipe: Recipe, executor: DatatroveExecutor, context: dg.AssetExecutionContext) -> StageEnv:
    return StageEnv(recipe, runner=executor.runner(), log=context.log.info)
