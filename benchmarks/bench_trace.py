"""How fast `mix-pipeline trace` finds a document, and what recording the fates costs the driver.

    python benchmarks/bench_trace.py --documents 1_000_000 [--partitions 4] [--lookups 20]

Writes a data root of N documents with random ids over P source x snapshot partitions, as the
stages publish them: 1% in quarantine shards, 30% in dropped shards (three filters), the rest in
id-ordered cluster files (100,000-row row groups, as core/dedup/verdicts.py writes them, 10% of
them duplicates). Records it in a fresh catalog (catalog.record_raw / record_filtered /
record_dedup: the rows of `fate_files`, one per file) and prints the record_dedup step's time, the
growth of the process's peak RSS and the catalog's size, then the median time (wall, and CPU, which
other load on the machine disturbs less) of the query trace starts with, `document_fates WHERE
id = ?`, for kept, duplicate, dropped and quarantined ids.

`--bloom` writes every file with a Parquet Bloom filter on `id` (pyarrow's bloom_filter_options),
which DuckDB reads to skip the row groups that cannot hold the id: what a lookup would cost if
the stages wrote their fate files that way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mix_pipeline import layout  # noqa: E402
from mix_pipeline.core.dedup.verdicts import CLUSTER_SCHEMA, ROW_GROUP_ROWS  # noqa: E402
from mix_pipeline.core.io.documents import DOCUMENT_SCHEMA, list_parts  # noqa: E402
from mix_pipeline.core.provenance import catalog  # noqa: E402
from mix_pipeline.core.provenance.trace import _document_fates  # noqa: E402

FILTERS = ("language", "gopher_quality", "c4")
SHARD_ROWS = 100_000
BLOOM = {}  # {"id": {...}} with --bloom: pyarrow's bloom_filter_options for every file written


def _write(table: pa.Table, path: str) -> None:
    """One Parquet file, ROW_GROUP_ROWS rows per row group (and an `id` Bloom filter with --bloom)."""
    with pq.ParquetWriter(path, table.schema, compression="zstd", bloom_filter_options=BLOOM or None) as out:
        out.write_table(table, row_group_size=ROW_GROUP_ROWS)


def _shards(folder: str, table: pa.Table) -> None:
    os.makedirs(folder, exist_ok=True)
    for k, start in enumerate(range(0, max(table.num_rows, 1), SHARD_ROWS)):
        _write(table.slice(start, SHARD_ROWS), os.path.join(folder, f"part-{k:05d}.parquet"))


def write_partition(root: str, source: str, snapshot: str, n: int, rng) -> None:
    """One partition's quarantine, dropped and cluster files (random ids, in arrival order but
    the cluster file, which is ordered by id)."""
    ids = np.array([f"{x:016x}" for x in rng.integers(0, 2**63, n)], dtype=object)
    draw = rng.random(n)

    def docs(mask, metadata: dict) -> pa.Table:
        m = int(mask.sum())
        return pa.table({"id": ids[mask], "text": [""] * m, "source": [source] * m, "domain": [source] * m,
                         "metadata": [json.dumps(metadata)] * m}, schema=DOCUMENT_SCHEMA)

    _shards(layout.partition_dir(root, layout.QUARANTINE_DIR, source, snapshot),
            docs(draw < 0.01, {"reason": "malformed_json", "detail": "unexpected character"}))
    for k, name in enumerate(FILTERS):
        mask = (draw >= 0.01 + 0.1 * k) & (draw < 0.11 + 0.1 * k)
        _shards(layout.dropped_dir(root, source, snapshot, name), docs(mask, {"filter_reason": "low", "filter_value": "{}"}))
    kept = ids[draw >= 0.31]
    dup = rng.random(len(kept)) < 0.1
    m = len(kept)
    clusters = pa.table({
        "source": [source] * m, "snapshot": [snapshot] * m, "id": kept, "fate": np.where(dup, "duplicate", "kept"),
        "duplicate_of_source": np.where(dup, source, None), "duplicate_of_snapshot": np.where(dup, snapshot, None),
        "duplicate_of": np.where(dup, np.roll(kept, 1), None), "match": np.where(dup, "near", None),
        "cluster_size": np.where(dup, 2, 1).astype(np.int64)}, schema=CLUSTER_SCHEMA).sort_by("id")
    path = layout.clusters_file(root, source, snapshot)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write(clusters, path)


def record(root: str, partitions: list[tuple[str, str]]) -> None:
    """Record the data root as the stages do; prints what the record_dedup step cost."""
    with catalog.connect(layout.catalog_path(root)) as con:
        for source, snapshot in partitions:
            catalog.record_raw(con, source, snapshot, [],
                               list_parts(layout.partition_dir(root, layout.QUARANTINE_DIR, source, snapshot)))
            catalog.record_filtered(con, source, snapshot, [], {
                f: list_parts(layout.dropped_dir(root, source, snapshot, f)) for f in FILTERS})
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        catalog.record_dedup(con, layout.cluster_files(root))
        took = time.perf_counter() - started
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    size = os.path.getsize(layout.catalog_path(root)) / 2**20
    print(f"record_dedup: {took:.2f} s, peak RSS +{grew:.0f} MiB, catalog {size:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--bloom", action="store_true", help="write an `id` Bloom filter into every file")
    args = parser.parse_args()
    if args.bloom:
        BLOOM["id"] = {"ndv": ROW_GROUP_ROWS, "fpp": 0.01}
    rng = np.random.default_rng(0)
    partitions = [(f"s{k % 2}", f"2024-{k // 2 + 1:02d}") for k in range(args.partitions)]
    with tempfile.TemporaryDirectory() as root:
        for source, snapshot in partitions:
            write_partition(root, source, snapshot, args.documents // len(partitions), rng)
        record(root, partitions)
        con = duckdb.connect(layout.catalog_path(root), read_only=True)
        for fate in ("kept", "duplicate", "dropped", "quarantined"):
            ids = [r[0] for r in con.execute(f"SELECT id FROM document_fates WHERE fate = '{fate}' "
                                             f"ORDER BY hash(id) LIMIT {int(args.lookups)}").fetchall()]
            wall, cpu = [], []
            for doc_id in ids:
                started, cpu_started = time.perf_counter(), time.process_time()
                assert _document_fates(con, doc_id, None)
                wall.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
            print(f"lookup of a {fate} id: {statistics.median(wall):.1f} ms, {statistics.median(cpu):.1f} ms CPU "
                  f"(median of {len(ids)})")
        con.close()


if __name__ == "__main__":
    main()
