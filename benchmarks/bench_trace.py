"""How fast `mix-pipeline trace` finds a document in a large catalog.

    python benchmarks/bench_trace.py --documents 3_000_000

Writes cluster files for N documents (ids in a shuffled order, as dedup writes them), records
them with catalog.record_dedup (which inserts in id order), and times id lookups in
document_fates, the query trace starts with, against the same table filled in arrival order.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mix_pipeline.core.provenance import catalog  # noqa: E402
from mix_pipeline.core.dedup.verdicts import CLUSTER_SCHEMA  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=3_000_000)
    parser.add_argument("--lookups", type=int, default=50)
    args = parser.parse_args()
    n = args.documents
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    ids = [f"web-{i:010d}" for i in order]
    with tempfile.TemporaryDirectory() as tmp:
        clusters = os.path.join(tmp, "clusters.parquet")
        pq.write_table(pa.table({
            "source": ["web"] * n, "snapshot": ["default"] * n, "id": ids, "fate": ["kept"] * n,
            "duplicate_of_source": pa.nulls(n, pa.string()), "duplicate_of_snapshot": pa.nulls(n, pa.string()),
            "duplicate_of": pa.nulls(n, pa.string()), "match": pa.nulls(n, pa.string()),
            "cluster_size": np.ones(n, np.int64)}, schema=CLUSTER_SCHEMA), clusters)
        probes = [f"web-{i:010d}" for i in rng.integers(0, n, args.lookups)]
        for label, sort in (("record_dedup (id order)", True), ("arrival order", False)):
            path = os.path.join(tmp, f"{sort}.duckdb")
            con = duckdb.connect(path)
            started = time.perf_counter()
            if sort:
                catalog.record_dedup(con, [clusters])
            else:
                catalog.ensure_schema(con)
                con.execute(f"""INSERT INTO document_fates (source, snapshot, id, stage, fate, reason)
                                SELECT source, snapshot, id, 'dedup', fate, match FROM read_parquet('{clusters}')""")
            write_s = time.perf_counter() - started
            con.close()
            con = duckdb.connect(path, read_only=True)
            started = time.perf_counter()
            for doc_id in probes:
                assert con.execute("SELECT fate FROM document_fates WHERE id = ?", [doc_id]).fetchall()
            lookup_ms = (time.perf_counter() - started) / len(probes) * 1000
            con.close()
            print(f"{label:<26} {n:>12,} fates: write {write_s:6.2f} s, lookup {lookup_ms:7.2f} ms")


if __name__ == "__main__":
    main()
