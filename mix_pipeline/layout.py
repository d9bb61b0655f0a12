"""Every path under a recipe's data_root, defined once.

The folder names are the output layout users and scripts rely on (docs/outputs.md): a stage's
documents live at `<folder>/<source>/<snapshot>/part-NNNNN.parquet`, a mixture at
`mixtures/<name>/`. Code asks this module for a path instead of joining folder names itself.
"""

from __future__ import annotations

import glob
import os

# Folders under data_root.
RAW_DIR = "raw"
QUARANTINE_DIR = "quarantine"
FILTERED_DIR = "filtered"
DROPPED_DIR = "dropped"
DEDUPLICATED_DIR = "deduplicated"
DEDUP_INDEX_DIR = "dedup_index"
MIXTURES_DIR = "mixtures"
LAB_DIR = "lab"
WORK_DIR = "_work"  # scratch: logs, DuckDB spill, locks; never an output
RETIRED_DIR = "_retired"  # partitions the recipe no longer discovers, moved aside (core/provenance/retire.py)

# Folders the pipeline writes under data_root: a source inside one would read the pipeline's output.
DATA_ROOT_OUTPUTS = (RAW_DIR, QUARANTINE_DIR, FILTERED_DIR, DROPPED_DIR, DEDUPLICATED_DIR, DEDUP_INDEX_DIR,
                     MIXTURES_DIR, LAB_DIR, WORK_DIR, RETIRED_DIR)

CATALOG_FILE = "catalog.duckdb"
MANIFEST_FILE = "manifest.json"
DEDUP_STATE_FILE = "state.json"


def partition_dir(data_root: str, folder: str, source: str, snapshot: str) -> str:
    """`<data_root>/<folder>/<source>/<snapshot>`: one source×snapshot partition of a stage."""
    return os.path.join(data_root, folder, source, snapshot)


def dropped_dir(data_root: str, source: str, snapshot: str, step: str | None = None) -> str:
    """Where the filtered stage keeps what `step` (a filter or decontamination) dropped."""
    base = partition_dir(data_root, DROPPED_DIR, source, snapshot)
    return base if step is None else os.path.join(base, step)


def snapshots_of(data_root: str, folder: str, source: str) -> list[str]:
    """Published snapshot folders of a source in a stage's folder, by name (hidden staging skipped)."""
    path = os.path.join(data_root, folder, source)
    return sorted(s for s in os.listdir(path) if not s.startswith(".")) if os.path.isdir(path) else []


def dedup_index_dir(data_root: str) -> str:
    return os.path.join(data_root, DEDUP_INDEX_DIR)


def clusters_file(data_root: str, source: str, snapshot: str) -> str:
    """The dedup verdicts (kept / duplicate of which id) of one partition's documents."""
    return os.path.join(data_root, DEDUP_INDEX_DIR, "clusters", source, f"{snapshot}.parquet")


def cluster_files(data_root: str, source: str = "*") -> list[str]:
    return sorted(glob.glob(os.path.join(data_root, DEDUP_INDEX_DIR, "clusters", source, "*.parquet")))


def mixtures_dir(data_root: str) -> str:
    return os.path.join(data_root, MIXTURES_DIR)


def mixture_dir(data_root: str, name: str) -> str:
    return os.path.join(data_root, MIXTURES_DIR, name)


def manifest_path(data_root: str, name: str) -> str:
    return os.path.join(data_root, MIXTURES_DIR, name, MANIFEST_FILE)


def lab_dir(data_root: str, experiment: str) -> str:
    return os.path.join(data_root, LAB_DIR, experiment)


def work_dir(data_root: str, *parts: str) -> str:
    return os.path.join(data_root, WORK_DIR, *parts)


def retired_dir(data_root: str, stamp: str) -> str:
    """Where one retirement (core/provenance/retire.py) moved the folders of partitions no longer discovered."""
    return os.path.join(data_root, RETIRED_DIR, stamp)


def catalog_path(data_root: str) -> str:
    return os.path.join(data_root, CATALOG_FILE)
