"""Writing a planned mixture: its rows joined with their documents, in output order, as shards.

Per split, the selected rows and their documents are spread over one file per range of the
output order (`order_key`), each range is sorted on its own by DuckDB, and the sorted rows are
cut into fixed-size shards of fixed-size row groups (`ShardWriter`), so memory holds a row group
and a range and not the split, and the same selection always gives the same bytes. This module
also writes each split's summary for the manifest (`split_summary`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mix_pipeline.core.arrays import runs
from mix_pipeline.core.io.documents import sql_strings
from mix_pipeline.core.io.faults import crash_point
from mix_pipeline.core.mixing.splits import SPLITS

# Chat turns as the `messages` column: a list of {role, content} (extra per-turn keys are dropped).
_MESSAGES_TYPE = '[{"role": "VARCHAR", "content": "VARCHAR"}]'

# A split is sorted one range of `order_key` at a time: its rows are first spread over range files
# (one pass over the documents), then each range is sorted alone. About this many tokens per range
# (~8 MB of text), so sorting holds one range's documents however large the mixture is...
SORT_RANGE_TOKENS = 2_000_000
# ...and no more ranges than this (files open at once while spreading); past it ranges grow, and
# DuckDB's sort spills a range that outgrows its memory limit.
MAX_SORT_RANGES = 256
# The documents' columns a mixture row carries.
_DOCUMENT_COLUMNS = ["id", "text", "source", "domain", "metadata", "n_tokens"]

# Rows per row group of a mixture shard (datatrove's ParquetWriter default): a shard is written
# a row group at a time, so writing holds one row group's documents, not a shard's.
ROW_GROUP_ROWS = 1_000


def write_mixture(
    selection: pa.Table,
    source_files: dict[str, list[str]],
    out_dir: str,
    shard_rows: int,
    duckdb_temp_dir: str,
    chat_sources: list[str] = (),
    jsonl: bool = False,
    log=lambda msg: None,
) -> dict[str, dict]:
    """Join the selection with the deduplicated documents and write shuffled shards per split.

    Rows are joined by position (file, row) and written in `order_key` order; pyarrow writes
    fixed-size shards, so the same selection always yields the same bytes. Chat sources get a
    `messages` column. Each split is written on its own (`write_split`), so the splits may as well
    be written by separate tasks: the bytes are the same.
    """
    return {
        split: write_split(split, selection.filter(pc.equal(selection["split"], split)), source_files, out_dir,
                           shard_rows, duckdb_temp_dir, chat_sources, jsonl, log)
        for split in SPLITS
    }


def write_split(
    split: str,
    rows: pa.Table,
    source_files: dict[str, list[str]],
    out_dir: str,
    shard_rows: int,
    duckdb_temp_dir: str,
    chat_sources: list[str] = (),
    jsonl: bool = False,
    log=lambda msg: None,
) -> dict:
    """Write one split's selected `rows` (the selection's rows of that split) as shards under
    `out_dir/split`; returns the split's summary for the manifest.

    The phases: the rows with their documents spread over one file per range of the output
    order (`_spread_by_range`, a row group of the documents at a time), each range sorted on its
    own by DuckDB (`_rows_in_order`), so memory holds a row group and a range and not the split;
    then fixed-size shards (`ShardWriter`) and the split's summary (`split_summary`).
    """
    metadata, extra = _output_columns(chat_sources)
    sums = rows.group_by(["split", "source"]).aggregate([("units", "sum"), ("tokens", "sum"), ("units", "count")])
    counted = {(r["split"], r["source"]): r for r in sums.to_pylist()}
    os.makedirs(duckdb_temp_dir, exist_ok=True)
    split_dir = os.path.join(out_dir, split)
    os.makedirs(split_dir, exist_ok=True)
    shards = ShardWriter(split_dir, shard_rows, jsonl)
    folder = tempfile.mkdtemp(prefix=f"mixture-{split}-", dir=duckdb_temp_dir)
    try:
        range_files = _spread_by_range(rows, sort_ranges(rows), source_files, folder)
        for batch in _rows_in_order(range_files, metadata, extra, duckdb_temp_dir):
            shards.write(batch)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    shards.close()
    log(f"mixture: {split}: {shards.rows} rows in {len(shards.files)} shard(s)")
    return split_summary(split, counted, sorted(source_files), out_dir, shards)


def _duckdb(temp_dir: str):
    """A DuckDB connection whose memory is bounded, spilling to `temp_dir`."""
    import duckdb

    os.makedirs(temp_dir, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{temp_dir}'")
    con.execute("SET memory_limit='1GB'")
    return con


def _output_columns(chat_sources: list[str]) -> tuple[str, str]:
    """(the SQL of the `metadata` column, extra columns): chat sources get their turns as a
    `messages` column, and no longer in metadata."""
    if not chat_sources:
        return "d.metadata", ""
    chat = sql_strings(list(chat_sources))
    extra = (f", CASE WHEN d.source IN ({chat}) THEN "
             f"json_transform(json_extract(d.metadata, '$.messages'), '{_MESSAGES_TYPE}') END AS messages")
    # The turns live in `messages`; keeping them in metadata too would store them twice.
    metadata = f"CASE WHEN d.source IN ({chat}) THEN json_merge_patch(d.metadata, '{{\"messages\": null}}') ELSE d.metadata END"
    return metadata, extra


def sort_ranges(rows: pa.Table) -> np.ndarray:
    """Each of a split's rows' range of `order_key`: consecutive key ranges of about
    `SORT_RANGE_TOKENS` tokens (rows count one token more, so documents without tokens still
    spread), numbered in key order. Rows with the same key share a range."""
    keys = rows.column("order_key").to_numpy()
    if not len(keys):
        return np.zeros(0, np.int32)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cumulative = np.cumsum(rows.column("tokens").to_numpy().astype(np.int64)[order] + 1)
    total = int(cumulative[-1])
    per_range = max(SORT_RANGE_TOKENS, -(-total // MAX_SORT_RANGES))
    cuts = np.searchsorted(cumulative, np.arange(per_range, total, per_range), side="right")
    first_keys = np.unique(sorted_keys[cuts])  # where each range after the first starts
    return np.searchsorted(first_keys, keys, side="right").astype(np.int32)


def _spread_by_range(rows: pa.Table, ranges: np.ndarray, source_files: dict[str, list[str]], folder: str) -> list[str]:
    """Write a split's selected `rows` with their documents to one Parquet file per sort range
    (`ranges`, see `sort_ranges`), reading the documents a row group at a time (and only row
    groups with a selected row); the files' paths, in range order. Each range is sorted later,
    so rows go in as they are read."""
    names, codes = np.unique(rows.column("source").to_numpy(zero_copy_only=False), return_inverse=True)
    row_numbers = rows.column("row").to_numpy()
    # Rows by (source, file, row): each file's rows are one slice, in file order.
    file_keys = (codes.astype(np.int64) << 32) | rows.column("file").to_numpy().astype(np.int64)
    order = np.lexsort((row_numbers, file_keys))
    file_keys = file_keys[order]
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for code, src in enumerate(names.tolist()):
            for k, path in enumerate(source_files[src]):
                lo, hi = np.searchsorted(file_keys, [(code << 32) | k, ((code << 32) | k) + 1])
                if hi == lo:
                    continue
                at = order[lo:hi]
                for group, positions, picked in _row_group_picks(pq.ParquetFile(path), row_numbers[at], at):
                    picked_rows = rows.take(pa.array(picked))
                    piece = group.take(pa.array(positions)).select(_DOCUMENT_COLUMNS)
                    piece = (piece.append_column("epoch", picked_rows["repeat"])
                             .append_column("order_key", picked_rows["order_key"])
                             .append_column("src", picked_rows["source"]))
                    _scatter(piece, ranges[picked], writers, folder)
    finally:
        for writer in writers.values():
            writer.close()
    return [writers[k].where for k in sorted(writers)]


def _row_group_picks(parquet: pq.ParquetFile, wanted: np.ndarray, ids: np.ndarray):
    """(row group table, positions in it, ids of those rows) for each row group holding one of the
    `wanted` row numbers (sorted; repeats allowed), in file order. Row groups with none are not read."""
    start = 0
    for g in range(parquet.metadata.num_row_groups):
        end = start + parquet.metadata.row_group(g).num_rows
        lo, hi = np.searchsorted(wanted, [start, end])
        if hi > lo:
            yield parquet.read_row_group(g, columns=_DOCUMENT_COLUMNS), wanted[lo:hi] - start, ids[lo:hi]
        start = end


def _scatter(piece: pa.Table, ranges: np.ndarray, writers: dict, folder: str) -> None:
    """Append each row of `piece` to its range's file (opened on first use)."""
    order = np.argsort(ranges, kind="stable")
    ranges, piece = ranges[order], piece.take(pa.array(order))
    starts, counts = runs(ranges)
    for start, count in zip(starts.tolist(), counts.tolist()):
        k = int(ranges[start])
        if k not in writers:
            # Read back once, right away: no compression, no dictionary, no statistics.
            writers[k] = pq.ParquetWriter(os.path.join(folder, f"range-{k:05d}.parquet"), piece.schema,
                                          compression="none", use_dictionary=False, write_statistics=False)
        writers[k].write_table(piece.slice(start, count))


def _rows_in_order(range_files: list[str], metadata: str, extra: str, temp_dir: str):
    """The rows of each range file, sorted in output order, as a stream of record batches. Each
    range has its own DuckDB connection: closing it gives back what the sort held."""
    for path in range_files:
        con = _duckdb(temp_dir)
        try:
            yield from con.sql(
                f"""SELECT d.id, d.text, d.source, d.domain, d.n_tokens, d.epoch, {metadata} AS metadata{extra}
                    FROM read_parquet({sql_strings([path])}) d
                    ORDER BY d.order_key, d.src, d.id, d.epoch"""
            ).to_arrow_reader(ROW_GROUP_ROWS)
        finally:
            con.close()
        os.remove(path)


class ShardWriter:
    """One split's shards: part-NNNNN.parquet (and .jsonl when asked) of exactly `shard_rows`
    rows each but the last, in row groups of `ROW_GROUP_ROWS` rows (the shard's last may be
    shorter). Both are cut at fixed row counts whatever batches arrive, so the same rows always
    give the same bytes."""

    def __init__(self, split_dir: str, shard_rows: int, jsonl: bool):
        self.split_dir, self.shard_rows, self.jsonl = split_dir, shard_rows, jsonl
        self.files: list[str] = []  # Parquet shards written, in order
        self.jsonl_files: list[str] = []
        self.rows = 0
        self._writer, self._jsonl_file, self._in_shard = None, None, 0
        self._pending: list[pa.RecordBatch] = []  # rows not written yet, fewer than a row group
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self._pending_rows and self._pending_rows >= self._group_rows():
            self._write_group(self._group_rows())

    def close(self) -> None:
        """Write what is pending and close the shard; call once, after the split's last batch."""
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._close_shard()

    def _group_rows(self) -> int:
        """Rows of the next row group: a full one, or what is left of the shard."""
        return min(ROW_GROUP_ROWS, self.shard_rows - self._in_shard)

    def _write_group(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending)
        group, rest = table.slice(0, rows), table.slice(rows)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows
        if self._writer is None:
            self._open(table.schema)
        self._writer.write_table(group, row_group_size=rows)
        crash_point("mixture.rows")
        if self._jsonl_file is not None:
            for piece in group.to_batches():
                _write_jsonl(self._jsonl_file, piece)
        self._in_shard += rows
        if self._in_shard == self.shard_rows:
            self._close_shard()

    def _open(self, schema: pa.Schema) -> None:
        path = os.path.join(self.split_dir, f"part-{len(self.files):05d}.parquet")
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.files.append(path)
        if self.jsonl:
            self.jsonl_files.append(path.removesuffix(".parquet") + ".jsonl")
            self._jsonl_file = open(self.jsonl_files[-1], "wb")

    def _close_shard(self) -> None:
        """Close the open shard, if any (the next row group opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._in_shard = 0
        if self._jsonl_file is not None:
            self._jsonl_file.close()
            self._jsonl_file = None


def split_summary(split: str, counted: dict, sources: list[str], out_dir: str, shards: ShardWriter) -> dict:
    """A split's manifest entry: documents, units and tokens (in all and per source), each
    source's share of the units, and its files relative to the mixture folder."""
    by_source = {}
    for s in sources:
        got = counted.get((split, s), {})
        by_source[s] = {"rows": got.get("units_count", 0), "units": got.get("units_sum", 0),
                        "tokens": got.get("tokens_sum", 0)}
    units = sum(v["units"] for v in by_source.values())
    summary = {
        "documents": shards.rows,
        "units": units,
        "tokens": sum(v["tokens"] for v in by_source.values()),
        "files": [os.path.relpath(f, out_dir) for f in shards.files],
        "sources": by_source,
        # Each source's share of the split's units (the mixture's unit), to compare with its weight.
        "shares": {s: round(v["units"] / units, 6) if units else 0.0 for s, v in by_source.items()},
    }
    if shards.jsonl:
        summary["jsonl_files"] = [os.path.relpath(f, out_dir) for f in shards.jsonl_files]
    return summary


def _write_jsonl(f, batch: pa.RecordBatch) -> None:
    import orjson

    for row in batch.to_pylist():
        # metadata is JSON text in Parquet; in JSONL it is the object itself.
        row["metadata"] = orjson.loads(row["metadata"]) if row.get("metadata") else {}
        f.write(orjson.dumps(row) + b"\n")
