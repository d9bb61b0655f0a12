"""Fingerprints that say whether a partition's inputs changed since it was last built.

A refresh (the schedule, or `mix-pipeline run`) re-runs a partition only when its fingerprint
differs from the one recorded with its last materialization, so new data flows through
without reprocessing everything, and a changed rule (a filter threshold in the recipe) reruns
exactly the partitions it affects: a backfill.
"""

from __future__ import annotations

import hashlib
import json
import os

from mix_pipeline.core.provenance.forget import removals_fingerprint
from mix_pipeline.core.filters.quality_recipe import filter_fingerprint
from mix_pipeline.recipe import Recipe
from mix_pipeline.recipe.inputs import snapshots, source_files, source_root

# Source settings only the mixture stage reads (licenses): changing them rebuilds no partition.
MIXTURE_TIME_KEYS = {"license", "license_field", "detect_license"}


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(recipe: Recipe, source: str, snapshot: str) -> str:
    """What raw + filtered read: the source's recipe entry, its files (path, size, mtime) and its removals."""
    root = source_root(recipe, source, snapshot)
    files = []
    for path in source_files(recipe, source, snapshot):
        if "://" in path:  # on object storage: the object's size and ETag (core/io/storage.py)
            from mix_pipeline.core.io import storage

            files.append((storage.relpath(path, root), *storage.stat(path)))
            continue
        st = os.stat(path)
        files.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    payload = {"spec": recipe.sources[source].model_dump(exclude=MIXTURE_TIME_KEYS), "files": files}
    if (model := filter_fingerprint(recipe, source)) is not None:
        payload["quality_model"] = model  # a retrained model reruns the sources it scores
    # Removal requests of the partition (core/provenance/forget.py): a new one makes it stale.
    removals = removals_fingerprint(recipe.data_root_path, source, snapshot)
    if removals is not None:
        payload["removals"] = removals
    return _digest(payload)


def published_problem(recipe: Recipe, source: str, snapshot: str) -> str | None:
    """Why what raw + filtered published for a partition can no longer be trusted (a shard
    missing, changed or added since, see core.integrity), or None. Such a partition is stale
    whatever its input fingerprint says: ingesting it again rebuilds it."""
    from mix_pipeline.core.io.integrity import verify_partition
    from mix_pipeline.names import FILTERED, RAW

    for stage in (RAW, FILTERED):
        problem = verify_partition(recipe.data_root_path, stage, source, snapshot)
        if problem:
            return f"{stage}: {problem}"
    return None


# What the later stages are built from.
# Content, not time: each fingerprint below changes only when the bytes a stage reads change, so a
# refresh rebuilds a deduplicated partition only when its verdicts (or its filtered documents)
# changed, and a mixture only when a partition it draws from changed bytes. Each stage records its
# fingerprint with its materialization; the planner (defs/plan.py) computes the same function from
# what is on disk now and rebuilds on a difference. The seals (core/io/integrity.py) already hold every
# published file's sha256, so a partition's content costs one small file read, not a rehash.


def seal_digest(root: str, folder: str, source: str, snapshot: str) -> str | None:
    """sha256 of a published partition folder's seal (its files' names, sizes and sha256s), or None."""
    from mix_pipeline import layout
    from mix_pipeline.core.io.integrity import SEAL

    path = os.path.join(layout.partition_dir(root, folder, source, snapshot), SEAL)
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def verdict_digests(root: str) -> dict[str, str]:
    """{"source/snapshot": sha256 of its dedup verdicts}, as the published dedup index recorded them
    (core/stages/dedup_index.py): one small file read, however many partitions."""
    import json

    from mix_pipeline import layout

    try:
        with open(os.path.join(layout.dedup_index_dir(root), layout.DEDUP_STATE_FILE)) as f:
            return json.load(f).get("verdicts", {})
    except (FileNotFoundError, ValueError):
        return {}


def published_partitions(recipe: Recipe, folder: str, sources=None) -> list[tuple[str, str]]:
    """(source, snapshot) of the partitions the recipe discovers now whose `folder` stage is
    published, in generation order. A later stage reads these and nothing else: a snapshot folder
    the recipe no longer discovers (a changed layout, core/provenance/retire.py) is never read."""
    from mix_pipeline import layout
    from mix_pipeline.names import snapshot_order

    out = []
    for source in sorted(recipe.sources if sources is None else sources):
        for snapshot in sorted(snapshots(recipe, source), key=snapshot_order):
            if os.path.isdir(layout.partition_dir(recipe.data_root_path, folder, source, snapshot)):
                out.append((source, snapshot))
    return out


def index_fingerprint(recipe: Recipe) -> str:
    """What dedup_index reads: every published filtered partition's content and the dedup settings."""
    from mix_pipeline import layout

    root = recipe.data_root_path
    return _digest({"dedup": recipe.dedup.model_dump(), "priority": {s: recipe.priority_rank(s) for s in sorted(recipe.sources)},
                    "filtered": [(s, snap, seal_digest(root, layout.FILTERED_DIR, s, snap))
                                 for s, snap in published_partitions(recipe, layout.FILTERED_DIR)]})


def deduplicated_fingerprint(recipe: Recipe, source: str, snapshot: str, verdicts: dict | None = None) -> str:
    """What a deduplicated partition is built from: its filtered shards, its dedup verdicts, the
    tokenizer. `verdicts`: verdict_digests(), when the caller has read it already."""
    from mix_pipeline import layout

    root = recipe.data_root_path
    verdicts = verdict_digests(root) if verdicts is None else verdicts
    return _digest({"filtered": seal_digest(root, layout.FILTERED_DIR, source, snapshot),
                    "verdicts": verdicts.get(f"{source}/{snapshot}"),
                    "tokenizer": recipe.tokenizer.model_dump()})


def mixture_fingerprint(recipe: Recipe, name: str) -> str:
    """What a mixture is built from: the recipe (its manifest records the recipe's sha256) and the
    deduplicated partitions and dedup verdicts of the sources it draws from."""
    from mix_pipeline import layout

    root = recipe.data_root_path
    from mix_pipeline.core.filters.quality_recipe import base_source

    sources = {base_source(s) for s in recipe.mixture_sources(name)}
    parts = published_partitions(recipe, layout.DEDUPLICATED_DIR, sources)
    verdicts = verdict_digests(root)
    return _digest({"recipe": recipe.sha256, "mixture": name,
                    "deduplicated": [(s, snap, seal_digest(root, layout.DEDUPLICATED_DIR, s, snap),
                                      verdicts.get(f"{s}/{snap}")) for s, snap in parts]})
