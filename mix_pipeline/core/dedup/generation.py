"""One generation's deduplication, phase by phase, and the statistics it reports.

`dedup_generation` joins the signature rows (`core/dedup/signatures.py`) in DuckDB, one
generation (snapshot) at a time, against an index of what earlier generations kept: documents
sharing a content hash or an LSH band become candidate pairs; band candidates are verified
against the full signatures; a union-find groups them (`core/dedup/clusters.py`). Within a
generation the recipe's source priority picks the survivor, so a book copied onto the web
survives as the book; across generations the earlier copy survives, so a refresh never displaces
data already published (`core/dedup/verdicts.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mix_pipeline.core.dedup.clusters import Matches, UnionFind, exact_matches, load_generation, near_matches, open_duckdb
from mix_pipeline.core.dedup.verdicts import group_verdicts, write_generation


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

    The phases: load the generation and the index into DuckDB (`load_generation`), find pairs
    (`exact_matches`, `near_matches`), group them into verdicts (`group_verdicts`), write the
    fates and keepers (`write_generation`).
    """
    con = open_duckdb(duckdb_temp_dir)
    n, n_old = load_generation(con, signature_files, index_files, source_rank)
    log(f"dedup[{snapshot}]: {n} documents against an index of {n_old}")
    matches = Matches(UnionFind(n), np.full(n, -1, dtype=np.int64))
    if exact:
        exact_matches(con, matches)
    if threshold is not None:
        near_matches(con, matches, threshold)
    verdicts = group_verdicts(matches, n)
    duplicates, exact_duplicates, near_duplicates = write_generation(
        con, snapshot, verdicts, n, remove, clusters_dir, index_dir)
    con.close()
    stats = ClusterStats(
        documents=n,
        duplicates=int(duplicates),
        exact_duplicates=int(exact_duplicates),
        near_duplicates=int(near_duplicates),
        candidate_pairs=int(matches.candidates),
        verified_pairs=int(matches.verified),
        clusters=verdicts.clusters() if n else 0,
        max_cluster_size=int(verdicts.cluster_size.max()) if n else 0,
    )
    log(f"dedup[{snapshot}]: {stats.duplicates} duplicates ({stats.exact_duplicates} exact, "
        f"{stats.near_duplicates} near), largest cluster {stats.max_cluster_size}"
        + ("" if remove else "; all kept (remove: false)"))
    return stats
