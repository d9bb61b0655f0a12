"""Fates: the third of clustering's phases (tasks over sources), and the files that record them.

Phase 2 (core/dedup/clusters.py) resolved the verdicts of the documents in some pair; `WriteFates`
joins every document of a source with them and writes its fate (`CLUSTER_SCHEMA`, one file per
source and generation) and the keepers' signatures (the index later generations are matched
against); `DropDuplicates` applies the fates to Documents.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline.core.dedup.clusters import open_duckdb
from mix_pipeline.core.io.documents import sql_file_list, sql_strings
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


def fates_sql(source: str, snapshot: str, signature_files: list[str], verdicts_file: str,
              remove: bool) -> tuple[str, str, str]:
    """SQL for one source: (its signature rows; every document's fate, CLUSTER_SCHEMA rows ordered
    by id; the keepers' signature rows, the index). A document in no verdict (in no pair) is kept,
    alone; with `remove` false every document is kept, copies still naming their survivor; the
    index holds survivors only either way."""
    quoted, snap = sql_strings([source]), sql_strings([snapshot])
    docs = f"""(SELECT source, id, content_hash, signature, bands FROM read_parquet({sql_file_list(signature_files)})
                WHERE source = {quoted})"""
    verdicts = f"(SELECT * FROM read_parquet({sql_file_list([verdicts_file])}) WHERE source = {quoted})"
    fates = f"""SELECT d.source, {snap} AS snapshot, d.id,
                   CASE WHEN v.id IS NULL OR v.survivor OR NOT {remove} THEN '{FATE_KEPT}' ELSE '{FATE_DUPLICATE}' END AS fate,
                   v.duplicate_of_source, v.duplicate_of_snapshot, v.duplicate_of, v.match,
                   coalesce(v.cluster_size, 1) AS cluster_size
                FROM {docs} d LEFT JOIN {verdicts} v ON v.id = d.id ORDER BY d.id"""
    keepers = f"""SELECT d.source, {snap} AS snapshot, d.id, d.content_hash, d.signature, d.bands
                  FROM {docs} d LEFT JOIN {verdicts} v ON v.id = d.id WHERE v.id IS NULL OR v.survivor ORDER BY d.id"""
    return docs, fates, keepers


class WriteFates(PipelineStep):
    """Phase 3 of clustering: rank r of N takes sources[r::N] and writes, for each that has
    documents in this generation, `<clusters_dir>/<source>/<snapshot>.parquet` (every document's
    fate) and `<index_dir>/<source>/<snapshot>.parquet` (the keepers' signature rows), joining the
    signature rows with the verdicts of phase 2; `<stats_folder>/<rank>.json` counts the documents."""

    type = "🫂 - DEDUP"
    name = "🗂️ Duplicate fates per source"

    def __init__(self, snapshot: str, signature_files: list[str], sources: list[str], verdicts_file: str,
                 clusters_dir: str, index_dir: str, remove: bool, stats_folder: str, duckdb_temp_dir: str):
        super().__init__()
        self.snapshot = snapshot
        self.signature_files = list(signature_files)
        self.sources = list(sources)
        self.verdicts_file = verdicts_file
        self.clusters_dir = clusters_dir
        self.index_dir = index_dir
        self.remove = remove
        self.stats_folder = stats_folder
        self.duckdb_temp_dir = duckdb_temp_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        con = open_duckdb(os.path.join(self.duckdb_temp_dir, f"fates-{rank:05d}"))
        documents = 0
        try:
            for source in self.sources[rank::world_size]:
                docs, fates, keepers = fates_sql(source, self.snapshot, self.signature_files, self.verdicts_file,
                                                 self.remove)
                n = con.sql(f"SELECT count(*) FROM {docs}").fetchall()[0][0]
                if not n:
                    continue
                with self.track_time("source"):
                    _write_query(con, fates, os.path.join(self.clusters_dir, source, f"{self.snapshot}.parquet"),
                                 CLUSTER_SCHEMA)
                    _write_query(con, keepers, os.path.join(self.index_dir, source, f"{self.snapshot}.parquet"))
                documents += n
                self.stat_update("documents", value=n)
        finally:
            con.close()
        os.makedirs(self.stats_folder, exist_ok=True)
        with open(os.path.join(self.stats_folder, f"{rank:05d}.json"), "w") as f:
            json.dump({"documents": documents}, f)
        return
        yield  # a generator that yields nothing: this step is the whole pipeline


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
