"""Entry point for `dagster dev` / `dagster definitions validate` (see workspace.yaml).

The recipe comes from MIX_PIPELINE_RECIPE (default: recipes/demo.yaml). An invalid recipe stops
the code location from loading with the same one-line message `mix-pipeline validate` prints.
"""

import os
from pathlib import Path

from mix_pipeline.defs import build_definitions
from mix_pipeline.recipe import load_recipe

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"


def recipe_path() -> str:
    return os.environ.get("MIX_PIPELINE_RECIPE") or str(DEFAULT_RECIPE)


defs = build_definitions(load_recipe(recipe_path()))
