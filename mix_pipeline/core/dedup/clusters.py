"""Candidate pairs and connected components: the second phase of deduplication, in the driver.

One generation's signature rows and the index of earlier keepers are loaded into DuckDB
(`load_generation`); documents sharing a content hash (`exact_matches`) or an LSH band whose full
signatures then agree (`near_matches`) become pairs, merged by a union-find within the generation
or attached to the earliest indexed document they match (`Matches`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mix_pipeline.core.io.documents import sql_file_list

DUCKDB_MEMORY_LIMIT = "1GB"


def open_duckdb(duckdb_temp_dir: str):
    """A DuckDB connection whose memory is bounded whatever the corpus: past DUCKDB_MEMORY_LIMIT it
    spills to `duckdb_temp_dir` (as mixing does)."""
    import duckdb

    os.makedirs(duckdb_temp_dir, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{duckdb_temp_dir}'")
    con.execute(f"SET memory_limit='{DUCKDB_MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order=false")
    return con


def load_generation(con, signature_files: list[str], index_files: list[str], source_rank: dict[str, int]) -> tuple[int, int]:
    """Tables `new` (this generation's signatures) and `old` (the index; empty when there is
    none), each with a `node` number in priority order: (source rank, source, id) for `new`,
    (snapshot, rank, source, id) for `old`, so a smaller node is the earlier/preferred document.
    Returns (documents in `new`, documents in `old`)."""
    con.register("ranks", pa.table({"source": list(source_rank), "rank": list(source_rank.values())}))
    con.execute(
        f"""CREATE TABLE new AS
            SELECT (row_number() OVER (ORDER BY r.rank, s.source, s.id) - 1)::BIGINT AS node,
                   s.source, s.id, s.content_hash, s.signature, s.bands
            FROM read_parquet({sql_file_list(signature_files)}) s JOIN ranks r USING (source)"""
    )
    if index_files:
        con.execute(
            f"""CREATE TABLE old AS
                SELECT (row_number() OVER (ORDER BY i.snapshot, r.rank, i.source, i.id) - 1)::BIGINT AS node,
                       i.source, i.snapshot, i.id, i.content_hash, i.signature, i.bands
                FROM read_parquet({sql_file_list(index_files)}) i JOIN ranks r USING (source)"""
        )
    else:
        con.execute("CREATE TABLE old AS SELECT * FROM (SELECT 0::BIGINT AS node, ''::VARCHAR AS source, "
                    "''::VARCHAR AS snapshot, ''::VARCHAR AS id, 0::BIGINT AS content_hash, "
                    "[]::UINTEGER[] AS signature, []::BIGINT[] AS bands) WHERE false")
    n = con.sql("SELECT count(*) FROM new").fetchall()[0][0]
    n_old = con.sql("SELECT count(*) FROM old").fetchall()[0][0]
    return n, n_old


class UnionFind:
    """Roots are always the smallest node of a set, so the root is the priority winner."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return int(root)

    def roots(self) -> np.ndarray:
        """Every node's root, by pointer jumping over the whole parent array (no per-node loop)."""
        parent = self.parent.copy()
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


def _verified(con, pairs_sql: str, left: str, right: str, threshold: float):
    """Yield (a, b) pairs from `pairs_sql` whose signatures agree on ≥ threshold of positions."""
    reader = con.sql(
        f"""SELECT p.a, p.b, x.signature AS sa, y.signature AS sb
            FROM ({pairs_sql}) p JOIN {left} x ON x.node = p.a JOIN {right} y ON y.node = p.b"""
    ).to_arrow_reader(50_000)
    for batch in reader:
        a = batch.column("a").to_numpy()
        b = batch.column("b").to_numpy()
        sa = batch.column("sa").flatten().to_numpy().reshape(len(a), -1)
        sb = batch.column("sb").flatten().to_numpy().reshape(len(a), -1)
        keep = (sa == sb).mean(axis=1) >= threshold
        yield from zip(a[keep].tolist(), b[keep].tolist())


@dataclass
class Matches:
    """The pairs found so far: within the generation (merged in `groups`) and against the index
    (`old_match`), with the candidate and verified pair counts the stats report."""

    groups: UnionFind
    old_match: np.ndarray  # per new node: the earliest indexed document it matches, or -1
    candidates: int = 0
    verified: int = 0

    def attach(self, node: int, old: int) -> None:
        """Record that new `node` matches indexed `old`, keeping the earliest such match."""
        if self.old_match[node] < 0 or old < self.old_match[node]:
            self.old_match[node] = old


def exact_matches(con, matches: Matches) -> None:
    """Documents sharing a content hash: merged within the generation, attached to the index."""
    for a, b in con.sql(
        "SELECT a, node FROM (SELECT node, min(node) OVER (PARTITION BY content_hash) AS a FROM new) WHERE node <> a"
    ).fetchall():
        matches.groups.union(a, b)
        matches.candidates += 1
        matches.verified += 1
    for node, old in con.sql(
        "SELECT n.node, min(o.node) FROM new n JOIN old o USING (content_hash) GROUP BY n.node"
    ).fetchall():
        matches.attach(node, old)
        matches.candidates += 1
        matches.verified += 1


def near_matches(con, matches: Matches, threshold: float) -> None:
    """LSH: documents sharing a band hash are candidates; the full signatures must then agree on
    ≥ threshold of positions. Verified pairs are merged (within) or attached (against the index)."""
    con.execute(
        "CREATE TABLE new_bands AS SELECT node, unnest(bands) AS h, generate_subscripts(bands, 1) AS band FROM new"
    )
    con.execute(
        "CREATE TABLE old_bands AS SELECT node, unnest(bands) AS h, generate_subscripts(bands, 1) AS band FROM old"
    )
    within = """SELECT DISTINCT a, node AS b FROM (
                    SELECT node, min(node) OVER (PARTITION BY band, h) AS a FROM new_bands) WHERE node <> a"""
    across = """SELECT DISTINCT n.node AS a, o.node AS b FROM new_bands n JOIN old_bands o USING (band, h)"""
    matches.candidates += con.sql(f"SELECT count(*) FROM ({within})").fetchall()[0][0]
    matches.candidates += con.sql(f"SELECT count(*) FROM ({across})").fetchall()[0][0]
    for a, b in _verified(con, within, "new", "new", threshold):
        matches.groups.union(a, b)
        matches.verified += 1
    for a, b in _verified(con, across, "new", "old", threshold):
        matches.attach(a, b)
        matches.verified += 1
