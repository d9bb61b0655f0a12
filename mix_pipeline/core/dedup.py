"""Exact and MinHash near-duplicate detection across all sources.

Two halves:
- `SignatureWriter`, a datatrove step, streams documents and writes one small row per document
  (content hash, MinHash signature, LSH band hashes). Signatures come from `rensa` (compiled).
- `cluster_signatures` joins those rows in DuckDB: documents sharing a content hash or an LSH
  band become candidate pairs; band candidates are verified against the full signatures; a
  union-find groups them. The survivor of each group is decided by the recipe's source
  priority, so a book copied onto the web survives as the book.
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
        ("id", pa.string()),
        ("fate", pa.string()),
        ("duplicate_of_source", pa.string()),
        ("duplicate_of", pa.string()),
        ("match", pa.string()),
        ("cluster_size", pa.int64()),
    ]
)
_WORD = re.compile(r"\w+")
# Odd 64-bit multipliers to fold a band's rows into one hash (wrapping arithmetic is intended).
_FOLD = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], dtype=np.uint64)


def content_hash(text: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(text.encode("utf-8")) - (1 << 63)


def shingles(text: str, ngram: int) -> list[str]:
    words = _WORD.findall(text.lower())
    if len(words) <= ngram:
        return [" ".join(words)]
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]


def band_hashes(signature: np.ndarray, bands: int) -> np.ndarray:
    rows = signature.astype(np.uint64).reshape(bands, -1)
    mult = np.resize(_FOLD, rows.shape[1])
    with np.errstate(over="ignore"):
        folded = (rows * mult).sum(axis=1, dtype=np.uint64)
    return folded.view(np.int64)


class SignatureWriter(PipelineStep):
    """Terminal step: writes `<output_folder>/<rank>.parquet` with one signature row per document."""

    type = "🫂 - DEDUP"
    name = "✍️ MinHash signatures (rensa)"

    def __init__(self, output_folder: str, source: str, num_perm: int, bands: int, ngram: int, seed: int, batch_rows: int = 5000):
        super().__init__()
        self.output_folder = output_folder
        self.source = source
        self.num_perm = num_perm
        self.bands = bands
        self.ngram = ngram
        self.seed = seed
        self.batch_rows = batch_rows

    def schema(self) -> pa.Schema:
        return pa.schema(
            SIGNATURE_SCHEMA_FIELDS
            + [("signature", pa.list_(pa.uint32(), self.num_perm)), ("bands", pa.list_(pa.int64(), self.bands))]
        )

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from rensa import RMinHash

        os.makedirs(self.output_folder, exist_ok=True)
        schema = self.schema()
        path = os.path.join(self.output_folder, f"{rank:05d}.parquet")
        columns: dict[str, list] = {name: [] for name in schema.names}
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            def flush():
                if columns["id"]:
                    writer.write_table(pa.table(columns, schema=schema))
                    for v in columns.values():
                        v.clear()

            for doc in data:
                with self.track_time():
                    mh = RMinHash(num_perm=self.num_perm, seed=self.seed)
                    mh.update(shingles(doc.text, self.ngram))
                    sig = np.asarray(mh.digest(), dtype=np.uint32)
                    columns["source"].append(self.source)
                    columns["id"].append(str(doc.id))
                    columns["content_hash"].append(content_hash(doc.text))
                    columns["n_chars"].append(len(doc.text))
                    columns["signature"].append(sig)
                    columns["bands"].append(band_hashes(sig, self.bands))
                self.stat_update("signatures")
                if len(columns["id"]) >= self.batch_rows:
                    flush()
            flush()
        return
        yield  # a generator that yields nothing: this step ends the pipeline


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

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


def cluster_signatures(
    signature_files: list[str],
    source_rank: dict[str, int],
    output_path: str,
    threshold: float | None,
    exact: bool,
    duckdb_temp_dir: str,
    log=lambda msg: None,
    remove: bool = True,
) -> ClusterStats:
    """Group duplicates across all signature files and write one fate row per document.

    `threshold=None` disables near-duplicate matching; `exact=False` disables content-hash
    matching. Within a group the winner is the lowest (source rank, source, id). With
    `remove=False` every document's fate is `kept`, but copies still name their survivor
    (`duplicate_of`, `match`), which is what keys their split.
    """
    import duckdb

    os.makedirs(duckdb_temp_dir, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{duckdb_temp_dir}'")
    con.execute("SET preserve_insertion_order=false")
    con.register("ranks", pa.table({"source": list(source_rank), "rank": list(source_rank.values())}))
    files = ", ".join(f"'{f}'" for f in signature_files)
    con.execute(
        f"""
        CREATE TABLE docs AS
        SELECT (row_number() OVER (ORDER BY r.rank, s.source, s.id) - 1)::BIGINT AS node,
               s.source, s.id, s.content_hash, s.signature, s.bands
        FROM read_parquet([{files}]) s JOIN ranks r USING (source)
        """
    )
    n = con.execute("SELECT count(*) FROM docs").fetchall()[0][0]
    log(f"dedup: {n} documents from {len(signature_files)} signature files")
    uf = _UnionFind(n)
    exact_pairs = 0
    if exact:
        for a, b in con.execute(
            """
            SELECT a, node FROM (SELECT node, min(node) OVER (PARTITION BY content_hash) AS a FROM docs)
            WHERE node <> a
            """
        ).fetchall():
            uf.union(a, b)
            exact_pairs += 1
    candidates = verified = 0
    if threshold is not None:
        # Each band bucket links its members to the bucket's first node; the link stands only
        # if the full signatures agree on at least `threshold` of their positions.
        con.execute(
            """
            CREATE TABLE pairs AS
            SELECT DISTINCT a, node AS b FROM (
                SELECT node, min(node) OVER (PARTITION BY band, h) AS a
                FROM (SELECT node, unnest(bands) AS h, generate_subscripts(bands, 1) AS band FROM docs)
            ) WHERE node <> a
            """
        )
        candidates = con.execute("SELECT count(*) FROM pairs").fetchall()[0][0]
        reader = con.sql(
            """
            SELECT p.a, p.b, da.signature AS sa, db.signature AS sb
            FROM pairs p JOIN docs da ON da.node = p.a JOIN docs db ON db.node = p.b
            """
        ).to_arrow_reader(50_000)
        for batch in reader:
            a = batch.column("a").to_numpy()
            b = batch.column("b").to_numpy()
            sa = batch.column("sa").flatten().to_numpy().reshape(len(a), -1)
            sb = batch.column("sb").flatten().to_numpy().reshape(len(a), -1)
            keep = (sa == sb).mean(axis=1) >= threshold
            for x, y in zip(a[keep].tolist(), b[keep].tolist()):
                uf.union(x, y)
            verified += int(keep.sum())
    roots = np.fromiter((uf.find(i) for i in range(n)), dtype=np.int64, count=n)
    sizes = np.bincount(roots, minlength=n)
    con.register("roots", pa.table({"node": np.arange(n, dtype=np.int64), "root": roots, "size": sizes[roots]}))
    table = con.sql(
        f"""
        SELECT d.source, d.id,
               CASE WHEN r.root = d.node OR NOT {remove} THEN '{FATE_KEPT}' ELSE '{FATE_DUPLICATE}' END AS fate,
               CASE WHEN r.root = d.node THEN NULL ELSE w.source END AS duplicate_of_source,
               CASE WHEN r.root = d.node THEN NULL ELSE w.id END AS duplicate_of,
               CASE WHEN r.root = d.node THEN NULL
                    WHEN w.content_hash = d.content_hash THEN 'exact' ELSE 'near' END AS match,
               r.size AS cluster_size
        FROM docs d JOIN roots r ON r.node = d.node JOIN docs w ON w.node = r.root
        ORDER BY d.source, d.id
        """
    ).to_arrow_table().cast(CLUSTER_SCHEMA)
    con.close()
    tmp = f"{output_path}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, output_path)
    fates = table.column("match").to_pylist()
    stats = ClusterStats(
        documents=n,
        duplicates=int(n - len(set(roots.tolist()))),
        exact_duplicates=fates.count("exact"),
        near_duplicates=fates.count("near"),
        candidate_pairs=int(candidates) + exact_pairs,
        verified_pairs=verified + exact_pairs,
        clusters=int((sizes > 1).sum()),
        max_cluster_size=int(sizes.max()) if n else 0,
    )
    log(f"dedup: {stats.duplicates} duplicates ({stats.exact_duplicates} exact, {stats.near_duplicates} near), "
        f"largest cluster {stats.max_cluster_size}" + ("" if remove else "; all kept (remove: false)"))
    return stats


class DropDuplicates(PipelineStep):
    """Passes only documents the cluster table marks `kept` for this source."""

    type = "🫂 - DEDUP"
    name = "🧹 Drop duplicates"

    def __init__(self, clusters_path: str, source: str):
        super().__init__()
        self.clusters_path = clusters_path
        self.source = source

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow.compute as pc

        table = pq.read_table(self.clusters_path, columns=["source", "id", "fate"],
                              filters=[("source", "=", self.source), ("fate", "=", FATE_DUPLICATE)])
        duplicates = set(pc.cast(table.column("id"), pa.string()).to_pylist())
        for doc in data:
            if doc.id in duplicates:
                self.stat_update("duplicates")
                continue
            self.stat_update("kept")
            yield doc
