"""What bounds the dedup_index clustering step on one node: documents per generation against time
and peak memory.

Clustering (core/dedup/generation.py `dedup_generation`) runs in the driver, in DuckDB, over one generation's
signatures and the index of earlier keepers: it cannot be spread over Ray tasks without sharding by
band (docs/scaling.md). This benchmark feeds it synthetic MinHash signatures (random signatures,
with about a tenth of the documents near copies of another: 120 of 128 values shared) for growing
document counts, one generation each in a fresh process, and prints wall seconds, CPU seconds and
the process's peak RSS, so the limit of one node can be read off (DuckDB's memory is capped at
`core.dedup.clusters.DUCKDB_MEMORY_LIMIT` and spills to disk past it).

    python benchmarks/bench_dedup_scale.py --docs 100000 300000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUM_PERM, BANDS, THRESHOLD = 128, 32, 0.8
ROWS_PER_FILE = 100_000


def write_signatures(folder: str, n: int, seed: int = 0) -> list[str]:
    from mix_pipeline.core.dedup.signatures import band_matrix, signature_schema

    rng = np.random.default_rng(seed)
    files = []
    for start in range(0, n, ROWS_PER_FILE):
        m = min(ROWS_PER_FILE, n - start)
        sig = rng.integers(0, 2**32, size=(m, NUM_PERM), dtype=np.uint64).astype(np.uint32)
        copies = rng.random(m) < 0.1  # near copies of the previous document: 120 of 128 values shared
        idx = np.flatnonzero(copies[1:]) + 1
        sig[idx, :120] = sig[idx - 1, :120]
        folded = band_matrix(sig, BANDS)
        ids = [f"d{start + i:09d}" for i in range(m)]
        table = pa.table({
            "source": pa.array(["web"] * m, pa.string()),
            "id": pa.array(ids, pa.string()),
            "content_hash": pa.array(rng.integers(-(2**62), 2**62, m), pa.int64()),
            "n_chars": pa.array(np.full(m, 2000), pa.int64()),
            "signature": pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1), pa.uint32()), NUM_PERM),
            "bands": pa.FixedSizeListArray.from_arrays(pa.array(folded.reshape(-1), pa.int64()), BANDS),
        }, schema=signature_schema(NUM_PERM, BANDS))
        path = os.path.join(folder, f"sig-{start // ROWS_PER_FILE:05d}.parquet")
        pq.write_table(table, path)
        files.append(path)
    return files


def one(n: int) -> dict:
    """Cluster one generation of `n` documents in this process; the numbers as a dict."""
    from mix_pipeline.core.dedup.generation import dedup_generation

    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "sig"))
        files = write_signatures(os.path.join(work, "sig"), n)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu0, wall0 = time.process_time(), time.monotonic()
        stats = dedup_generation("s1", files, [], {"web": 0}, os.path.join(work, "clusters"),
                                 os.path.join(work, "index"), threshold=THRESHOLD, exact=True,
                                 duckdb_temp_dir=os.path.join(work, "duckdb"))
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"documents": n, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_mb": round(peak),
            "rss_before_mb": round(rss_before), "duplicates": stats.duplicates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    print(f"{'documents':>10} {'wall_s':>8} {'cpu_s':>8} {'rss_before_mb':>14} {'peak_rss_mb':>12} {'duplicates':>11}")
    for n in args.docs:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['documents']:>10,} {r['wall_s']:>8} {r['cpu_s']:>8} {r['rss_before_mb']:>14,} {r['peak_rss_mb']:>12,} "
              f"{r['duplicates']:>11,}",
              flush=True)


if __name__ == "__main__":
    main()
