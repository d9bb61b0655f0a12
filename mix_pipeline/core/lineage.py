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

from mix_pipeline.core.provenance import removals_fingerprint
from mix_pipeline.core.quality_model import filter_fingerprint
from mix_pipeline.recipe import Recipe

# Source settings only the mixture stage reads (licenses): changing them rebuilds no partition.
MIXTURE_TIME_KEYS = {"license", "license_field", "detect_license"}


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(recipe: Recipe, source: str, snapshot: str) -> str:
    """What raw + filtered read: the source's recipe entry, its files (path, size, mtime) and its removals."""
    root = recipe.source_root(source, snapshot)
    files = []
    for path in recipe.source_files(source, snapshot):
        if "://" in path:  # issue 14: an object's size and ETag (core/storage.py)
            from mix_pipeline.core import storage

            files.append((storage.relpath(path, root), *storage.stat(path)))
            continue
        st = os.stat(path)
        files.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
    payload = {"spec": recipe.sources[source].model_dump(exclude=MIXTURE_TIME_KEYS), "files": files}
    if (model := filter_fingerprint(recipe, source)) is not None:
        payload["quality_model"] = model  # a retrained model reruns the sources it scores
    # Removal requests of the partition (core/provenance.py): a new one makes it stale.
    removals = removals_fingerprint(recipe.data_root_path, source, snapshot)
    if removals is not None:
        payload["removals"] = removals
    return _digest(payload)


def published_problem(recipe: Recipe, source: str, snapshot: str) -> str | None:
    """Why what raw + filtered published for a partition can no longer be trusted (a shard
    missing, changed or added since, see core.integrity), or None. Such a partition is stale
    whatever its input fingerprint says: ingesting it again rebuilds it."""
    from mix_pipeline.core.integrity import verify_partition
    from mix_pipeline.names import FILTERED, RAW

    for stage in (RAW, FILTERED):
        problem = verify_partition(recipe.data_root_path, stage, source, snapshot)
        if problem:
            return f"{stage}: {problem}"
    return None


def file_fingerprint(paths: list[str], extra=None) -> str:
    """Content fingerprint of published files (used where outputs, not inputs, are compared)."""
    from mix_pipeline.core.documents import file_sha256

    return _digest({"files": [(os.path.basename(p), file_sha256(p)) for p in paths if os.path.exists(p)], "extra": extra})
