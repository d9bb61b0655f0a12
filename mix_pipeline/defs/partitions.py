"""Partition definitions built from the recipe.

Documents are partitioned by source × snapshot as one dynamic dimension with keys
"<source>:<snapshot>" (e.g. "web:2024-05-06", "books:default"; names.PARTITION_SEPARATOR): only combinations that exist
on disk appear, the snapshot sensor adds new ones as drops land, and a source's partitions
are the keys that start with "<source>:". Mixtures are static: one partition per named mixture;
so are mixture-lab experiments.
"""

import re

import dagster as dg

from mix_pipeline.names import partition_key, split_partition_key
from mix_pipeline.recipe import Recipe, inputs


def source_snapshots(recipe: Recipe) -> dg.DynamicPartitionsDefinition:
    # Named after the recipe so two recipes can share one Dagster instance.
    slug = re.sub(r"[^a-z0-9_]+", "_", recipe.name.lower()).strip("_") or "recipe"
    return dg.DynamicPartitionsDefinition(name=f"{slug}__source_snapshots")


def mixture_partitions(recipe: Recipe) -> dg.StaticPartitionsDefinition | None:
    return dg.StaticPartitionsDefinition(sorted(recipe.mixtures)) if recipe.mixtures else None


def experiment_partitions(recipe: Recipe) -> dg.StaticPartitionsDefinition | None:
    return dg.StaticPartitionsDefinition(sorted(recipe.experiments)) if recipe.experiments else None


def discovered_keys(recipe: Recipe) -> list[str]:
    """Partition keys of every (source, snapshot) with input files on disk now."""
    return [
        partition_key(source, snapshot)
        for source in sorted(recipe.sources)
        for snapshot in inputs.snapshots(recipe, source)
    ]


def register(instance: dg.DagsterInstance, recipe: Recipe) -> list[str]:
    """Add discovered partitions the instance does not know yet; returns the new keys."""
    name = source_snapshots(recipe).name
    known = set(instance.get_dynamic_partitions(name))
    new = [k for k in discovered_keys(recipe) if k not in known]
    if new:
        instance.add_dynamic_partitions(name, new)
    return new


def retire(instance: dg.DagsterInstance, recipe: Recipe, log=print) -> list[str]:
    """Retire what the recipe no longer discovers (core/provenance/retire.py: folders moved aside, catalog
    rows taken out) and drop those keys from the UI's partition list; returns the dropped keys.
    Keys of a source that discovers no snapshot at all are kept (an outage, not a new layout)."""
    from mix_pipeline.core.provenance.retire import retire as retire_folders

    snapshots = {s: inputs.snapshots(recipe, s) for s in recipe.sources}  # listed once, for both
    retire_folders(recipe, log=log, discovered=snapshots)
    name = source_snapshots(recipe).name
    discovered = {partition_key(s, snap) for s, snaps in snapshots.items() for snap in snaps}
    silent = {s for s, snaps in snapshots.items() if not snaps}
    gone = [k for k in instance.get_dynamic_partitions(name)
            if k not in discovered and split_partition_key(k)[0] not in silent]
    for key in gone:
        instance.delete_dynamic_partition(name, key)
    if gone:
        log(f"removed {len(gone)} partition(s) the recipe no longer discovers from the partition list: {', '.join(gone[:10])}")
    return gone


def parse(recipe: Recipe, key: str) -> tuple[str, str]:
    source, snapshot = split_partition_key(key)
    if source not in recipe.sources:
        raise ValueError(f"partition '{key}': source '{source}' is not in recipe '{recipe.name}'")
    return source, snapshot
