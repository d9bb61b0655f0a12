"""What bounds the dedup_index clustering step: documents per generation against time and peak
memory, of the driver and of the largest task.

Clustering (core/dedup/generation.py `dedup_generation`) runs as three phases of datatrove steps:
pairs per bucket shard (N tasks), union-find over the pairs (one task), fates per source (a task
per source). This benchmark feeds it synthetic MinHash signatures (random signatures, with about a
tenth of the documents near copies of another: 120 of 128 values shared) for growing document
counts, one generation each, from a fresh driver process whose runner starts every task as a fresh
Python process (as a Ray task is; `--workers` at a time), and prints wall seconds, CPU seconds
(driver and tasks), the driver's peak RSS and the largest task's (with its phase). DuckDB, in the
cluster and fates tasks, is capped at `core.dedup.clusters.DUCKDB_MEMORY_LIMIT` and spills past it.

    python benchmarks/bench_dedup_scale.py --docs 100000 300000 1000000 --tasks 1 4
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


def write_signatures(folder: str, n: int, seed: int = 0, source: str = "web", prefix: str = "d",
                     copies_of: list[str] | None = None) -> list[str]:
    """Signature files of `n` synthetic documents: random signatures, about a tenth near copies of
    the previous document (120 of 128 values shared). With `copies_of` (an earlier generation's
    signature files), about 5% are near and 2% exact copies (same content hash) of its documents."""
    from mix_pipeline.core.dedup.signatures import band_matrix, signature_schema

    rng = np.random.default_rng(seed)
    earlier = pq.read_table(copies_of, columns=["content_hash", "signature"]) if copies_of else None
    files = []
    for start in range(0, n, ROWS_PER_FILE):
        m = min(ROWS_PER_FILE, n - start)
        sig = rng.integers(0, 2**32, size=(m, NUM_PERM), dtype=np.uint64).astype(np.uint32)
        copies = rng.random(m) < 0.1  # near copies of the previous document: 120 of 128 values shared
        idx = np.flatnonzero(copies[1:]) + 1
        sig[idx, :120] = sig[idx - 1, :120]
        hashes = rng.integers(-(2**62), 2**62, m)
        if earlier is not None and len(earlier):
            _copy_earlier(rng, earlier, sig, hashes)
        folded = band_matrix(sig, BANDS)
        ids = [f"{prefix}{start + i:09d}" for i in range(m)]
        table = pa.table({
            "source": pa.array([source] * m, pa.string()),
            "id": pa.array(ids, pa.string()),
            "content_hash": pa.array(hashes, pa.int64()),
            "n_chars": pa.array(np.full(m, 2000), pa.int64()),
            "signature": pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1), pa.uint32()), NUM_PERM),
            "bands": pa.FixedSizeListArray.from_arrays(pa.array(folded.reshape(-1), pa.int64()), BANDS),
        }, schema=signature_schema(NUM_PERM, BANDS))
        path = os.path.join(folder, f"sig-{start // ROWS_PER_FILE:05d}.parquet")
        pq.write_table(table, path)
        files.append(path)
    return files


def _copy_earlier(rng, earlier: pa.Table, sig: np.ndarray, hashes: np.ndarray) -> None:
    """Make about 5% of the rows near copies and 2% exact copies of random earlier documents."""
    m = len(sig)
    old_sig = earlier.column("signature").combine_chunks().flatten().to_numpy().reshape(len(earlier), -1)
    old_hash = earlier.column("content_hash").to_numpy()
    pick = rng.random(m)
    near, exact = np.flatnonzero(pick < 0.05), np.flatnonzero((pick >= 0.05) & (pick < 0.07))
    src = rng.integers(0, len(earlier), m)
    sig[near, :120] = old_sig[src[near], :120]
    sig[exact] = old_sig[src[exact]]
    hashes[exact] = old_hash[src[exact]]


class ProcessRunner:
    """A runner (`(steps, logging_dir, tasks)`) that runs each rank in a fresh Python process,
    `workers` at a time, and keeps each task's peak RSS and CPU seconds (as it reports them)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.tasks: list[dict] = []
        self.phase_wall: dict[str, float] = {}

    def __call__(self, pipeline: list, logging_dir: str, tasks: int) -> None:
        import pickle

        os.makedirs(logging_dir, exist_ok=True)
        steps = os.path.join(logging_dir, "steps.pickle")
        with open(steps, "wb") as f:
            pickle.dump(pipeline, f)
        start, running, ranks = time.monotonic(), [], list(range(tasks))
        while ranks or running:
            while ranks and len(running) < self.workers:
                rank = ranks.pop(0)
                running.append(subprocess.Popen([sys.executable, __file__, "--task", steps, str(rank), str(tasks)],
                                                stdout=subprocess.PIPE, text=True))
            done = running.pop(0)
            out, _ = done.communicate()
            if done.returncode:
                raise RuntimeError(f"task failed: {pipeline[0].name}")
            self.tasks.append(json.loads(out.strip().splitlines()[-1]) | {"phase": os.path.basename(logging_dir)})
        self.phase_wall[os.path.basename(logging_dir)] = round(time.monotonic() - start, 1)


def task(steps: str, rank: int, tasks: int) -> dict:
    """Run one rank of a pickled step list in this process; its peak RSS and CPU seconds."""
    import pickle
    from collections import deque

    with open(steps, "rb") as f:
        pipeline = pickle.load(f)
    data = None
    for step in pipeline:
        data = step(data, rank, tasks)
    deque(data or (), maxlen=0)
    return {"rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "cpu_s": time.process_time()}


def one(folder: str, tasks: int, workers: int) -> dict:
    """Cluster the generation in `folder`/sig from this process (the driver, which did not write
    it, so its peak RSS is the clustering's); the numbers as a dict."""
    from mix_pipeline.core.dedup.generation import dedup_generation

    files = sorted(os.path.join(folder, "sig", f) for f in os.listdir(os.path.join(folder, "sig")))
    out = os.path.join(folder, f"tasks{tasks}")
    runner = ProcessRunner(workers)
    cpu0, wall0 = time.process_time(), time.monotonic()
    stats = dedup_generation("s1", files, [], {"web": 0}, os.path.join(out, "clusters"), os.path.join(out, "index"),
                             threshold=THRESHOLD, exact=True, duckdb_temp_dir=os.path.join(out, "duckdb"),
                             runner=runner, tasks=tasks, logging_dir=os.path.join(out, "logs"))
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    largest = max(runner.tasks, key=lambda t: t["rss_mb"])
    phase_rss = {p: max(t["rss_mb"] for t in runner.tasks if t["phase"] == p) for p in runner.phase_wall}
    return {"documents": stats.documents, "tasks": tasks, "wall_s": round(wall, 1),
            "cpu_s": round(cpu + sum(t["cpu_s"] for t in runner.tasks), 1),
            "driver_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "task_rss_mb": largest["rss_mb"], "largest_task": largest["phase"],
            "phases": {p: f"{runner.phase_wall[p]} s, {phase_rss[p]} MB" for p in runner.phase_wall},
            "duplicates": stats.duplicates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 4], help="pair tasks (phase 1)")
    parser.add_argument("--workers", type=int, default=2, help="tasks running at once")
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--task", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        print(json.dumps(task(args.task[0], int(args.task[1]), int(args.task[2]))))
        return
    if args.write:
        os.makedirs(os.path.join(args.write[0], "sig"))
        write_signatures(os.path.join(args.write[0], "sig"), int(args.write[1]))
        return
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    print(f"{'documents':>10} {'tasks':>5} {'wall_s':>7} {'cpu_s':>7} {'driver_rss_mb':>13} {'task_rss_mb':>11} "
          f"{'(phase)':>9} {'duplicates':>10}  per phase: wall, largest task's peak RSS")
    for n in args.docs:
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run([sys.executable, __file__, "--write", folder, str(n)], check=True)
            for tasks in args.tasks:
                out = subprocess.run([sys.executable, __file__, "--one", folder, str(tasks), str(args.workers)],
                                     capture_output=True, text=True, check=True)
                _print_row(json.loads(out.stdout.strip().splitlines()[-1]))


def _print_row(r: dict) -> None:
    print(f"{r['documents']:>10,} {r['tasks']:>5} {r['wall_s']:>7} {r['cpu_s']:>7} {r['driver_rss_mb']:>13,} "
          f"{r['task_rss_mb']:>11,} {r['largest_task']:>9} {r['duplicates']:>10,}  {r['phases']}", flush=True)


if __name__ == "__main__":
    main()
