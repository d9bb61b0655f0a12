"""Exact and MinHash near-duplicate detection across all sources.

Two halves:
- `ShardSignatures`, a datatrove step, reads our Parquet shards (every source of a generation in
  one launch) and writes one small row per document (content hash, MinHash signature, LSH band
  hashes); `SignatureWriter` does the same for a stream of Documents. Signatures come from `rensa`
  (compiled), one call per batch of documents.
- `dedup_generation` joins those rows in DuckDB, one generation (snapshot) at a time, against
  an index of what earlier generations kept: documents sharing a content hash or an LSH band
  become candidate pairs; band candidates are verified against the full signatures; a
  union-find groups them. Within a generation the recipe's source priority picks the
  survivor, so a book copied onto the web survives as the book; across generations the
  earlier copy survives, so a refresh never displaces data already published.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline.core.io.documents import sql_file_list
from mix_pipeline.names import FATE_DUPLICATE, FATE_KEPT

SIGNATURE_SCHEMA_FIELDS = [
    ("source", pa.string()),
    ("id", pa.string()),
    ("content_hash", pa.int64()),
    ("n_chars", pa.int64()),
]
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
_WORD = re.compile(r"\w+")
# Words handed to rensa per call (about as many shingles): a few MB of Python strings, whatever the batch's documents.
WORDS_PER_CALL = 100_000
DUCKDB_MEMORY_LIMIT = "1GB"
# Odd 64-bit multipliers to fold a band's rows into one hash (wrapping arithmetic is intended).
_FOLD = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], dtype=np.uint64)


def content_hash(text: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(text.encode("utf-8")) - (1 << 63)


# Shingles are hashed, not joined: how a shingle hash is made. Stored in the dedup state
# (stages/dedup_index.dedup_config), so a build whose signatures were made another way is
# recomputed, never matched against these.
SHINGLE_HASH = "rensa-word-hash-rolling-v1"
_ROLL = np.uint64(0x9E3779B97F4A7C15)


def shingle_words(text: str) -> list[str]:
    """Lower-cased words (runs of \\w), the units of a shingle."""
    return _WORD.findall(text.lower())


def shingle_hashes(word_hashes: list[int], ngram: int) -> np.ndarray:
    """One uint64 per shingle of `ngram` consecutive words, from the words' hashes by wrapping
    arithmetic (h = h * _ROLL + next); a text of at most `ngram` words is one shingle (no words:
    the hash 0). The same shingle hashes to the same value in every text and process."""
    h = np.asarray(word_hashes, dtype=np.uint64)
    m = max(1, len(h) - ngram + 1)
    out = h[:m].copy() if len(h) else np.zeros(1, dtype=np.uint64)
    for k in range(1, min(ngram, len(h))):
        out = out * _ROLL + h[k:k + m]
    return out


def band_matrix(signatures: np.ndarray, bands: int) -> np.ndarray:
    """LSH band hashes of a (documents × num_perm) signature matrix: each band's rows folded into
    one int64 (wrapping arithmetic)."""
    n, num_perm = signatures.shape
    rows = signatures.astype(np.uint64).reshape(n, bands, num_perm // bands)
    mult = np.resize(_FOLD, rows.shape[2])
    with np.errstate(over="ignore"):
        folded = (rows * mult).sum(axis=2, dtype=np.uint64)
    return folded.view(np.int64)


def signature_schema(num_perm: int, bands: int) -> pa.Schema:
    return pa.schema(
        SIGNATURE_SCHEMA_FIELDS
        + [("signature", pa.list_(pa.uint32(), num_perm)), ("bands", pa.list_(pa.int64(), bands))]
    )


def signature_batch(
    source: str, ids: list[str], texts: list[str], num_perm: int, bands: int, ngram: int, seed: int
) -> pa.Table:
    """Signature rows (SIGNATURE schema) for a batch of documents.

    Each document's words are hashed by rensa (`hash_token_sets`), its shingles hashed from
    them with array arithmetic (`shingle_hashes`: no string per shingle), and one call into
    rensa digests a whole chunk of documents (`digest_matrix_from_flat_token_hashes`, the same
    digests as `RMinHash` over each document's shingle hashes); band hashes are folded for the
    whole matrix at once.
    """
    from rensa import RMinHash

    n = len(texts)
    rows: list[list[int]] = []
    chunk: list[list[str]] = []
    pending = 0

    def digest() -> None:
        nonlocal pending
        if chunk:
            per_doc = [shingle_hashes(h, ngram) for h in RMinHash.hash_token_sets(chunk)]
            offsets = np.concatenate(([0], np.cumsum([len(h) for h in per_doc]))).astype(np.uint64)
            rows.extend(RMinHash.digest_matrix_from_flat_token_hashes(np.concatenate(per_doc), offsets,
                                                                      num_perm, seed).to_rows())
            chunk.clear()
            pending = 0

    for text in texts:
        chunk.append(shingle_words(text))
        pending += len(chunk[-1])
        if pending >= WORDS_PER_CALL:  # bounds the Python strings alive at once
            digest()
    digest()
    sig = np.array(rows, dtype=np.uint32).reshape(n, num_perm)
    folded = band_matrix(sig, bands)
    return pa.table(
        {
            "source": pa.array([source] * n, pa.string()),
            "id": pa.array(ids, pa.string()),
            "content_hash": pa.array([content_hash(t) for t in texts], pa.int64()),
            "n_chars": pa.array([len(t) for t in texts], pa.int64()),
            "signature": pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1), pa.uint32()), num_perm),
            "bands": pa.FixedSizeListArray.from_arrays(pa.array(folded.reshape(-1), pa.int64()), bands),
        },
        schema=signature_schema(num_perm, bands),
    )


class SignatureWriter(PipelineStep):
    """Terminal step: writes `<output_folder>/<rank>.parquet` with one signature row per document."""

    type = "🫂 - DEDUP"
    name = "✍️ MinHash signatures (rensa)"

    def __init__(self, output_folder: str, source: str, num_perm: int, bands: int, ngram: int, seed: int, batch_rows: int = 2000):
        super().__init__()
        self.output_folder = output_folder
        self.source = source
        self.num_perm = num_perm
        self.bands = bands
        self.ngram = ngram
        self.seed = seed
        self.batch_rows = batch_rows

    def schema(self) -> pa.Schema:
        return signature_schema(self.num_perm, self.bands)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        os.makedirs(self.output_folder, exist_ok=True)
        path = os.path.join(self.output_folder, f"{rank:05d}.parquet")
        ids: list[str] = []
        texts: list[str] = []
        with pq.ParquetWriter(path, self.schema(), compression="zstd") as writer:
            def flush():
                if ids:
                    with self.track_time("batch"):
                        writer.write_table(signature_batch(self.source, ids, texts, self.num_perm, self.bands,
                                                           self.ngram, self.seed))
                    self.stat_update("signatures", value=len(ids))
                    ids.clear()
                    texts.clear()

            for doc in data:
                ids.append(str(doc.id))
                texts.append(doc.text)
                if len(ids) >= self.batch_rows:
                    flush()
            flush()
        return
        yield  # a generator that yields nothing: this step ends the pipeline


class ShardSignatures(PipelineStep):
    """Reader and signature writer in one step, over our own Parquet shards of several sources.

    `shards` lists (source, path); rank r of N takes shards r, r+N, ... and writes, per source it
    read, `<output_folders[source]>/<rank>.parquet` with one signature row per document (the rows
    `SignatureWriter` writes). It reads only the `id` and `text` columns, batch by batch, and never
    builds a datatrove Document, so one launch can cover every source of a generation and memory
    stays at one batch whatever the shard size. Which rank hashed a document changes no verdict:
    `dedup_generation` orders documents by (source rank, source, id).
    """

    type = "🫂 - DEDUP"
    name = "✍️ MinHash signatures of shards (rensa)"

    def __init__(self, shards: list[tuple[str, str]], output_folders: dict[str, str], num_perm: int, bands: int,
                 ngram: int, seed: int, batch_rows: int = 512):
        super().__init__()
        self.shards = [tuple(s) for s in shards]
        self.output_folders = dict(output_folders)
        self.num_perm = num_perm
        self.bands = bands
        self.ngram = ngram
        self.seed = seed
        self.batch_rows = batch_rows

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        schema = signature_schema(self.num_perm, self.bands)
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for source, path in self.shards[rank::world_size]:
                if source not in writers:
                    folder = self.output_folders[source]
                    os.makedirs(folder, exist_ok=True)
                    writers[source] = pq.ParquetWriter(os.path.join(folder, f"{rank:05d}.parquet"), schema,
                                                       compression="zstd")
                for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_rows, columns=["id", "text"]):
                    with self.track_time("batch"):
                        table = signature_batch(source, batch.column("id").to_pylist(), batch.column("text").to_pylist(),
                                                self.num_perm, self.bands, self.ngram, self.seed)
                        writers[source].write_table(table)
                    self.stat_update("signatures", value=batch.num_rows)
        finally:
            for writer in writers.values():
                writer.close()
        return
        yield  # a generator that yields nothing: this step is the whole pipeline


@dataclass
class ClusterStats:
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


class _UnionFind:
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

    The phases: load the generation and the index into DuckDB (`_load_generation`), find pairs
    (`exact_matches`, `near_matches`), group them into verdicts (`group_verdicts`), write the
    fates and keepers (`write_generation`).
    """
    con = _duckdb(duckdb_temp_dir)
    n, n_old = _load_generation(con, signature_files, index_files, source_rank)
    log(f"dedup[{snapshot}]: {n} documents against an index of {n_old}")
    matches = Matches(_UnionFind(n), np.full(n, -1, dtype=np.int64))
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


def _duckdb(duckdb_temp_dir: str):
    """A DuckDB connection whose memory is bounded whatever the corpus: past DUCKDB_MEMORY_LIMIT it
    spills to `duckdb_temp_dir` (as mixing does)."""
    import duckdb

    os.makedirs(duckdb_temp_dir, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{duckdb_temp_dir}'")
    con.execute(f"SET memory_limit='{DUCKDB_MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order=false")
    return con


def _load_generation(con, signature_files: list[str], index_files: list[str], source_rank: dict[str, int]) -> tuple[int, int]:
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


@dataclass
class Matches:
    """The pairs found so far: within the generation (merged in `groups`) and against the index
    (`old_match`), with the candidate and verified pair counts the stats report."""

    groups: _UnionFind
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
