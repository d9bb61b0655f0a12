"""Verdicts: the keeper of each cluster, and the files that record it.

A group matching the index is a duplicate of its earliest indexed match, otherwise its root (the
recipe's priority winner) survives (`group_verdicts`). `write_generation` writes each document's
fate (`CLUSTER_SCHEMA`, one file per source and generation) and the keepers' signatures (the
index later generations are matched against); `DropDuplicates` applies the fates to Documents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline.core.dedup.clusters import Matches
from mix_pipeline.names import FATE_DUPLICATE, FATE_KEPT

CLUSTER_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("snapshot", pa.string()),
        ("id", pa.string()),
        ("fate", pa.string()),
        ("duplicate_of_source", pa.string()),
        ("duplicate_of_snapshot", pa.string()),
        ("duplicate_of", pa.string()),
        ("match", pa.string()),
        ("cluster_size", pa.int64()),
    ]
)


@dataclass
class Verdicts:
    """Per new node: its group's root (the generation's survivor), the indexed document the
    group is a duplicate of (-1: none) and its cluster's size (the index match counted)."""

    roots: np.ndarray
    group_old: np.ndarray  # per root: the earliest indexed match of any member, or -1
    winner_old: np.ndarray
    sizes: np.ndarray  # per root: members in this generation
    cluster_size: np.ndarray

    def clusters(self) -> int:
        """Groups of more than one document, or matching the index."""
        return int(((self.sizes > 1) | (self.group_old >= 0))[np.unique(self.roots)].sum())


def group_verdicts(matches: Matches, n: int) -> Verdicts:
    """Resolve the pairs into verdicts: a group matching the index is a duplicate of the
    earliest indexed match of any member; otherwise its root survives."""
    roots = matches.groups.roots()
    old_match = matches.old_match
    group_old = np.full(n, -1, dtype=np.int64)
    for node in np.flatnonzero(old_match >= 0).tolist():
        r = roots[node]
        if group_old[r] < 0 or old_match[node] < group_old[r]:
            group_old[r] = old_match[node]
    winner_old = group_old[roots]
    sizes = np.bincount(roots, minlength=n)
    return Verdicts(roots, group_old, winner_old, sizes, sizes[roots] + (winner_old >= 0))


def write_generation(con, snapshot: str, verdicts: Verdicts, n: int, remove: bool, clusters_dir: str,
                     index_dir: str) -> tuple[int, int, int]:
    """Write each source's fates (`<clusters_dir>/<source>/<snapshot>.parquet`) and keepers'
    signatures (`<index_dir>/<source>/<snapshot>.parquet`). Fates and keepers stay in DuckDB
    (which spills past memory_limit) and stream to one file per source: nothing here holds a whole
    generation in Python. Returns (duplicates, exact duplicates, near duplicates)."""
    con.register("verdicts", pa.table({
        "node": np.arange(n, dtype=np.int64), "root": verdicts.roots, "old": verdicts.winner_old,
        "size": verdicts.cluster_size,
    }))
    con.execute(
        f"""CREATE TABLE fates AS SELECT d.source, '{snapshot}' AS snapshot, d.id,
               CASE WHEN (v.old < 0 AND v.root = d.node) OR NOT {remove} THEN '{FATE_KEPT}' ELSE '{FATE_DUPLICATE}' END AS fate,
               CASE WHEN v.old >= 0 THEN o.source WHEN v.root <> d.node THEN w.source END AS duplicate_of_source,
               CASE WHEN v.old >= 0 THEN o.snapshot WHEN v.root <> d.node THEN '{snapshot}' END AS duplicate_of_snapshot,
               CASE WHEN v.old >= 0 THEN o.id WHEN v.root <> d.node THEN w.id END AS duplicate_of,
               CASE WHEN v.old < 0 AND v.root = d.node THEN NULL
                    WHEN coalesce(o.content_hash, w.content_hash) = d.content_hash THEN 'exact' ELSE 'near' END AS match,
               v.size AS cluster_size
            FROM new d JOIN verdicts v ON v.node = d.node JOIN new w ON w.node = v.root
            LEFT JOIN old o ON o.node = v.old"""
    )
    keepers = f"""SELECT d.source, '{snapshot}' AS snapshot, d.id, d.content_hash, d.signature, d.bands
                  FROM new d JOIN verdicts v ON v.node = d.node WHERE v.old < 0 AND v.root = d.node"""
    for (source,) in con.sql("SELECT DISTINCT source FROM new ORDER BY source").fetchall():
        quoted = "'" + source.replace("'", "''") + "'"
        _write_query(con, f"SELECT * FROM fates WHERE source = {quoted} ORDER BY id",
                     os.path.join(clusters_dir, source, f"{snapshot}.parquet"), CLUSTER_SCHEMA)
        _write_query(con, f"SELECT * FROM ({keepers}) WHERE source = {quoted} ORDER BY id",
                     os.path.join(index_dir, source, f"{snapshot}.parquet"))
    return con.sql(
        "SELECT count(match), count(*) FILTER (WHERE match = 'exact'), count(*) FILTER (WHERE match = 'near') FROM fates"
    ).fetchall()[0]


# Rows per Parquet row group of cluster and index files. Row groups are cut at fixed row counts
# (not at DuckDB's batch boundaries, which can vary between runs), so reruns write the same bytes.
ROW_GROUP_ROWS = 100_000


def _write_query(con, sql: str, path: str, schema: pa.Schema | None = None) -> None:
    """Stream a query's rows into one Parquet file, ROW_GROUP_ROWS rows per row group."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    reader = con.sql(sql).to_arrow_reader(ROW_GROUP_ROWS)
    schema = schema or reader.schema
    pending: list[pa.RecordBatch] = []
    rows = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in reader:
            pending.append(batch.cast(schema) if batch.schema != schema else batch)
            rows += batch.num_rows
            while rows >= ROW_GROUP_ROWS:
                table = pa.Table.from_batches(pending, schema)
                writer.write_table(table.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                rest = table.slice(ROW_GROUP_ROWS)
                pending, rows = rest.to_batches(), rest.num_rows
        if rows:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=ROW_GROUP_ROWS)


class DropDuplicates(PipelineStep):
    """Passes only documents the partition's cluster file marks `kept` (for datatrove pipelines over
    Documents; `deduplicated_documents` applies the same verdicts with `stages.write_deduplicated`)."""

    type = "🫂 - DEDUP"
    name = "🧹 Drop duplicates"

    def __init__(self, clusters_file: str):
        super().__init__()
        self.clusters_file = clusters_file

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        table = pq.read_table(self.clusters_file, columns=["id", "fate"], filters=[("fate", "=", FATE_DUPLICATE)])
        duplicates = set(table.column("id").to_pylist())
        for doc in data:
            if doc.id in duplicates:
                self.stat_update("duplicates")
                continue
            self.stat_update("kept")
            yield doc
