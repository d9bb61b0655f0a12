"""Partitions the recipe no longer discovers: retired, never read again.

A changed source layout (a source moved from one folder to dated `{snapshot}` folders, a snapshot
folder renamed or deleted) leaves published partitions that no input produces any more. Left in
place they would poison what reads every folder: dedup would take the old `default` partition's
documents as the originals of the first dated snapshot, all of it "duplicate". The later stages
read only the partitions the recipe discovers now (core/provenance/lineage.py `published_partitions`); this
module also moves the undiscovered ones' folders aside, to `data_root/_retired/<when>/<folder>/
<source>/<snapshot>` (nothing is deleted: moving one back restores it), and takes their rows out of
the catalog, recording each in `retired_partitions`. The result is what a fresh run with the new
layout gives.

Only the recipe's own sources are looked at: a source removed from the recipe is simply not read
(its folders may belong to another recipe sharing the data root). A source that discovers no
snapshot at all (its input folder missing, perhaps an unmounted disk) keeps its partitions: that
looks like an outage, not a new layout; the caller is told.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from mix_pipeline import layout
from mix_pipeline.core.provenance import catalog, fates
from mix_pipeline.names import partition_key
from mix_pipeline.recipe import inputs

# The stage folders that hold one folder per source×snapshot partition.
PARTITION_FOLDERS = (layout.RAW_DIR, layout.QUARANTINE_DIR, layout.FILTERED_DIR, layout.DROPPED_DIR,
                     layout.DEDUPLICATED_DIR)
# Catalog tables with one row set per (source, snapshot). `fate_files` lists the files the
# `document_fates` view reads (core/provenance/fates.py): its rows go, and the view is re-created
# without the moved files, so nothing reads a retired partition's fates from `_retired`.
_PARTITION_TABLES = ("source_inputs", "fate_files", "filter_counts", "snapshot_profiles")


@dataclass(frozen=True)
class Retired:
    source: str
    snapshot: str
    moved_to: str  # '' when nothing of it was left on disk
    records: int  # input records the catalog had for it


def _catalog_partitions(con, sources: list[str]) -> set[tuple[str, str]]:
    rows = con.execute("SELECT DISTINCT source, snapshot FROM source_inputs").fetchall()
    return {(s, snap) for s, snap in rows if s in sources}


def undiscovered(recipe, discovered: dict[str, list[str]], con=None) -> tuple[list[tuple[str, str]], list[str]]:
    """((source, snapshot) published on disk or recorded in the catalog that the recipe no longer
    discovers, sources kept because they discover no snapshot at all). `discovered`: each
    source's snapshots now (recipe/inputs.py, snapshots)."""
    root = recipe.data_root_path
    found, silent = set(), []
    discovered = {s: set(snaps) for s, snaps in discovered.items()}
    for source in sorted(recipe.sources):
        if not discovered[source]:
            silent.append(source)
            continue
        for folder in PARTITION_FOLDERS:
            for snapshot in layout.snapshots_of(root, folder, source):
                if snapshot not in discovered[source]:
                    found.add((source, snapshot))
    if con is not None:
        found |= {(s, snap) for s, snap in _catalog_partitions(con, sorted(recipe.sources))
                  if discovered[s] and snap not in discovered[s]}
    return sorted(found), silent


def retire(recipe, log=print, discovered: dict[str, list[str]] | None = None) -> list[Retired]:
    """Move the undiscovered partitions' folders aside and take them out of the catalog. Call it
    only while nothing else writes the data root (the CLI's lock; the sensor with nothing in flight).
    `discovered`: each source's snapshots, when the caller has listed them already."""
    if discovered is None:
        discovered = {s: inputs.snapshots(recipe, s) for s in recipe.sources}
    root = recipe.data_root_path
    path = layout.catalog_path(root)
    has_catalog = os.path.exists(path)
    if has_catalog:
        with catalog.connect(path) as con:
            catalog.ensure_schema(con)
            partitions, silent = undiscovered(recipe, discovered, con)
    else:
        partitions, silent = undiscovered(recipe, discovered)
    for source in silent:
        log(f"source '{source}' discovers no snapshot at {recipe.sources[source].path}; its published "
            "partitions are kept as they are (restore the input, or remove the source from the recipe)")
    if not partitions:
        return []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = {}
    for source, snapshot in partitions:
        for folder in PARTITION_FOLDERS:
            here = layout.partition_dir(root, folder, source, snapshot)
            if os.path.isdir(here):
                there = layout.partition_dir(layout.retired_dir(root, stamp), folder, source, snapshot)
                os.makedirs(os.path.dirname(there), exist_ok=True)
                os.replace(here, there)
                moved[(source, snapshot)] = layout.retired_dir(root, stamp)
    out = []
    records = {}
    if has_catalog:
        with catalog.connect(path) as con, catalog.transaction(con):
            for source, snapshot in partitions:
                n = con.execute("SELECT coalesce(sum(records), 0) FROM source_inputs WHERE source = ? AND snapshot = ?",
                                [source, snapshot]).fetchone()[0]
                records[(source, snapshot)] = int(n)
                for table in _PARTITION_TABLES:
                    con.execute(f"DELETE FROM {table} WHERE source = ? AND snapshot = ?", [source, snapshot])
                con.execute("DELETE FROM stage_stats WHERE partition = ?", [partition_key(source, snapshot)])
                con.execute("INSERT INTO retired_partitions VALUES (?, ?, ?, ?, ?)",
                            [source, snapshot, stamp, moved.get((source, snapshot), ""), records[(source, snapshot)]])
            fates.sync_view(con)
    for source, snapshot in partitions:
        r = Retired(source, snapshot, moved.get((source, snapshot), ""), records.get((source, snapshot), 0))
        out.append(r)
        log(f"retired {partition_key(source, snapshot)}: the recipe no longer discovers it"
            + (f"; its folders are under {r.moved_to}" if r.moved_to else ""))
    return out
