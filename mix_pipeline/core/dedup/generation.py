"""One generation's deduplication, phase by phase, and the statistics it reports.

`dedup_generation` clusters one generation (snapshot) of signature rows
(`core/dedup/signatures.py`) against an index of what earlier generations kept, in three phases
of datatrove steps launched through the stage's runner (local processes or Ray tasks), as
datatrove's MinHash and NeMo Curator's fuzzy dedup do:

1. `BucketPairs` (core/dedup/pairs.py), N tasks: each owns a share of the LSH buckets and content
   hashes and writes its candidate and verified pairs, as document keys;
2. `ResolveClusters` (core/dedup/clusters.py), one task: union-find over the documents in pairs
   only, and each group's verdict;
3. `WriteFates` (core/dedup/verdicts.py), a task per source (up to N): every document's fate and
   the keepers' signatures.

Within a generation the recipe's source priority picks the survivor, so a book copied onto the web
survives as the book; across generations the earlier copy survives, so a refresh never displaces
data already published. The driver only launches the phases and sums their statistics; which task
found a pair changes nothing, so the outputs are the same bytes whatever N.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from dataclasses import dataclass

import pyarrow.parquet as pq

from mix_pipeline.core.dedup.clusters import ResolveClusters
from mix_pipeline.core.dedup.pairs import BucketPairs
from mix_pipeline.core.dedup.verdicts import WriteFates

# Documents per pair task before another task (another worker process or Ray task) pays off: a
# task's start costs about a CPU-second, finding a document's pairs 10-20 µs, and every task reads
# every document's bands and signature again (benchmarks/bench_dedup_scale.py). Smaller
# generations run as one task, which the local runner runs in-process.
CLUSTER_TASK_DOCUMENTS = 250_000


@dataclass
class ClusterStats:
    """What one generation's deduplication found; summed over generations (the largest cluster is a max)."""

    documents: int
    duplicates: int
    exact_duplicates: int
    near_duplicates: int
    candidate_pairs: int
    verified_pairs: int
    clusters: int
    max_cluster_size: int

    def __add__(self, other: ClusterStats) -> ClusterStats:
        merged = {k: getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__}
        merged["max_cluster_size"] = max(self.max_cluster_size, other.max_cluster_size)
        return ClusterStats(**merged)


EMPTY_STATS = ClusterStats(0, 0, 0, 0, 0, 0, 0, 0)


def cluster_tasks(max_tasks: int, signature_files: list[str]) -> int:
    """Pair tasks for a generation: one per CLUSTER_TASK_DOCUMENTS signature rows, at most the
    recipe's tasks. The count only spreads work: verdicts do not depend on it."""
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in signature_files)
    return max(1, min(max_tasks, -(-rows // CLUSTER_TASK_DOCUMENTS)))


def run_in_process(pipeline: list, logging_dir: str | None, tasks: int) -> None:
    """Run every rank of a step list here, one after another (a runner with no workers)."""
    for rank in range(tasks):
        data = None
        for step in pipeline:
            data = step(data, rank, tasks)
        deque(data or (), maxlen=0)


def dedup_generation(
    snapshot: str,
    signature_files: list[str],
    index_files: list[str],
    source_rank: dict[str, int],
    clusters_dir: str,
    index_dir: str,
    threshold: float | None,
    exact: bool,
    duckdb_temp_dir: str,
    log=lambda msg: None,
    remove: bool = True,
    runner=None,
    tasks: int = 1,
    logging_dir: str | None = None,
) -> ClusterStats:
    """Deduplicate one generation (every source's documents of one snapshot) against the index
    of documents kept by earlier generations, and extend the index with this generation's keepers.

    Within the generation, duplicates group by union-find and the lowest (source rank, source, id)
    survives. A group that matches any indexed document is a duplicate of the earliest such
    document: data already published is never displaced by newer data. Writes
    `<clusters_dir>/<source>/<snapshot>.parquet` (a fate per document) and
    `<index_dir>/<source>/<snapshot>.parquet` (signatures of the keepers).
    `threshold=None` disables near-duplicate matching; `exact=False` disables content hashes.
    With `remove=False` every document's fate is `kept`, but copies still name their survivor
    (`duplicate_of`, `match`), which is what keys their split; the index still holds survivors only.

    `runner` (the stage's: `(steps, logging_dir, tasks)`, default `run_in_process`) runs the three
    phases: `tasks` pair tasks, one cluster task, a fates task per source (at most `tasks`). Their
    files go to a scratch folder under `duckdb_temp_dir`, which tasks must see (data_root's
    `_work` does), emptied before and removed afterwards; each task's DuckDB spills there too.
    """
    run = runner or run_in_process
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in signature_files)
    n_old = sum(pq.ParquetFile(f).metadata.num_rows for f in index_files)
    log(f"dedup[{snapshot}]: {n} documents against an index of {n_old}, pairs in {tasks} task(s)")
    os.makedirs(duckdb_temp_dir, exist_ok=True)
    work = _scratch(duckdb_temp_dir, snapshot)
    logs = logging_dir or os.path.join(work, "logs")
    try:
        pairs = os.path.join(work, "pairs")
        run([BucketPairs(signature_files, index_files, source_rank, pairs, threshold, exact)],
            os.path.join(logs, "pairs"), tasks)
        verdicts, found = os.path.join(work, "verdicts.parquet"), os.path.join(work, "clusters.json")
        run([ResolveClusters([os.path.join(pairs, f"{r:05d}.parquet") for r in range(tasks)], snapshot, verdicts,
                             found, os.path.join(work, "duckdb", "clusters"))], os.path.join(logs, "clusters"), 1)
        sources = sorted(source_rank)
        run([WriteFates(snapshot, signature_files, sources, verdicts, clusters_dir, index_dir, remove,
                        os.path.join(work, "fates"), os.path.join(work, "duckdb"))],
            os.path.join(logs, "fates"), max(1, min(tasks, len(sources))))
        stats = _stats(found, os.path.join(work, "fates"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"dedup[{snapshot}]: {stats.duplicates} duplicates ({stats.exact_duplicates} exact, "
        f"{stats.near_duplicates} near), largest cluster {stats.max_cluster_size}"
        + ("" if remove else "; all kept (remove: false)"))
    return stats


def _scratch(duckdb_temp_dir: str, snapshot: str) -> str:
    """The generation's scratch folder, emptied: one fixed folder per generation, so what a killed
    run left there (pair files can be large) is reclaimed by the next run instead of piling up."""
    work = os.path.join(duckdb_temp_dir, "clusters", snapshot)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return work


def _stats(clusters_file: str, fates_folder: str) -> ClusterStats:
    """The generation's ClusterStats from phase 2's counts and phase 3's documents (a document in
    no pair is a cluster of one)."""
    with open(clusters_file) as f:
        found = json.load(f)
    documents = 0
    for name in sorted(os.listdir(fates_folder)):
        with open(os.path.join(fates_folder, name)) as f:
            documents += json.load(f)["documents"]
    found["max_cluster_size"] = max(found["max_cluster_size"], 1 if documents else 0)
    return ClusterStats(documents=documents, **found)
