"""The recipe: the project's public contract, what a user declares in YAML.

The package owns the recipe's schema (schema.py, with the lab's `experiments:` section in
experiments.py and cron checking in cron.py), loading a YAML file into it with one-line errors
(loading.py), listing the input files its sources and eval sets name (inputs.py), and checking
that those paths exist and stay inside the allowed folders (paths.py). The schema does no I/O.

The names below are re-exported so that `from mix_pipeline.recipe import Recipe, load_recipe`
keeps working; input listing is used as `inputs.source_files(recipe, source, snapshot)`.
"""

from mix_pipeline.errors import RecipeError
from mix_pipeline.recipe.cron import valid_cron
from mix_pipeline.recipe.experiments import ExperimentSpec, ProxySpec, TransferSpec
from mix_pipeline.recipe.loading import load_recipe, parse_recipe
from mix_pipeline.recipe.paths import check_data_root, check_file_name, check_source_paths
from mix_pipeline.recipe.schema import (
    DecontaminationSpec,
    DedupSpec,
    DriftSpec,
    ExecutorSpec,
    FilterSpec,
    MinhashSpec,
    MixtureSourceSpec,
    MixtureSpec,
    OutputsSpec,
    QualityModelSpec,
    Recipe,
    ScheduleSpec,
    SourceSpec,
    SplitsSpec,
    TokenizerSpec,
)

__all__ = [
    "DecontaminationSpec",
    "DedupSpec",
    "DriftSpec",
    "ExecutorSpec",
    "ExperimentSpec",
    "FilterSpec",
    "MinhashSpec",
    "MixtureSourceSpec",
    "MixtureSpec",
    "OutputsSpec",
    "ProxySpec",
    "QualityModelSpec",
    "Recipe",
    "RecipeError",
    "ScheduleSpec",
    "SourceSpec",
    "SplitsSpec",
    "TokenizerSpec",
    "TransferSpec",
    "check_data_root",
    "check_file_name",
    "check_source_paths",
    "load_recipe",
    "parse_recipe",
    "valid_cron",
]
