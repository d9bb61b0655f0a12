"""Partition definitions, built from the recipe: one partition per source, one per mixture."""

import dagster as dg

from mix_pipeline.recipe import Recipe


def source_partitions(recipe: Recipe) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(recipe.sources))


def mixture_partitions(recipe: Recipe) -> dg.StaticPartitionsDefinition | None:
    return dg.StaticPartitionsDefinition(sorted(recipe.mixtures)) if recipe.mixtures else None
