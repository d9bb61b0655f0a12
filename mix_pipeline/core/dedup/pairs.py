"""Candidate pairs per bucket shard: the first of clustering's three phases, run as tasks.

Rank r of N owns a share of the LSH buckets and of the content hashes (`owned_cells`, content
hash mod N == r). Every bucket and every content-hash group lies wholly in one rank, so the pairs
found, and every verdict, are the same whatever N. A task reads only the columns it needs of the
generation's signature files and of the index (earlier keepers), batch by batch, and keeps its
share: one int64 per document and owned band (`scan`), then keys and signatures of the documents
in a shared bucket only (`fetch`). It writes `<output_folder>/<rank>.parquet` (PAIR_SCHEMA): each
pair as document keys, not node numbers, so ranks need no common numbering.

The pairs are those the driver used to find in one DuckDB process:
- exact, within the generation: each content-hash group's first document (by priority:
  source rank, source, id) paired with every other member (a star);
- exact, across: each new document with the earliest indexed document of its content hash
  (by snapshot, source rank, source, id);
- near, within: each (band, hash) bucket's first document paired with every other member (a star,
  so two members that only share buckets with a third are not paired), verified by their full
  signatures agreeing on ≥ threshold of positions;
- near, across: every (new, indexed) pair sharing a bucket, verified likewise.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

PAIR_SCHEMA = pa.schema([
    ("kind", pa.string()),  # 'exact' (same content hash) or 'near' (a shared LSH bucket)
    ("across", pa.bool_()),  # b is an indexed document of an earlier generation
    ("verified", pa.bool_()),  # exact pairs always; near pairs when the signatures agree
    ("a_rank", pa.int64()), ("a_source", pa.string()), ("a_id", pa.string()), ("a_hash", pa.int64()),
    ("b_snapshot", pa.string()),  # null within the generation
    ("b_rank", pa.int64()), ("b_source", pa.string()), ("b_id", pa.string()), ("b_hash", pa.int64()),
])
FETCHED_TYPES = {"snapshot": pa.string(), "source": pa.string(), "id": pa.string(), "content_hash": pa.int64(),
                 "signature": pa.list_(pa.uint32())}
# Rows read per batch, and pairs compared per block when verifying (bounds the temporaries).
BATCH_ROWS = 65_536
VERIFY_BLOCK = 50_000


def owned_cells(rank: int, world_size: int, bands: int) -> dict[int, list[int]]:
    """{band: hash slices} this rank owns. A band is cut into S = ceil(N / bands) slices by its
    hash (h mod S); cell (band, slice) = band·S + slice belongs to rank cell mod N. With N ≤ bands
    a rank owns whole bands (and reads only their columns); with more ranks, slices of one."""
    slices = -(-world_size // bands)
    owned: dict[int, list[int]] = {}
    for cell in range(rank, bands * slices, world_size):
        owned.setdefault(cell // slices, []).append(cell % slices)
    return owned


def band_count(files: list[str]) -> int:
    """Bands per signature (the length of the first row's `bands`); 0 when there are no rows."""
    for path in files:
        parquet = pq.ParquetFile(path)
        if parquet.metadata.num_rows:
            batch = next(parquet.iter_batches(batch_size=1, columns=["bands"]))
            return len(batch.column("bands")[0])
    return 0


class Scan:
    """One int64 per document and owned band, the document's source rank (-1: a source the
    recipe does not rank, which is skipped) and content hash; row i is the i-th row of the files
    read in order, the position `fetch` reads back."""

    def __init__(self, files: list[str], source_rank: dict[str, int], hashes: bool, bands: list[int]):
        n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        sources = pa.array(list(source_rank), pa.string())
        rank_of = np.array(list(source_rank.values()) + [-1], dtype=np.int64)
        self.rank = np.empty(n, dtype=np.int64)
        self.content_hash = np.empty(n if hashes else 0, dtype=np.int64)
        self.bands = np.empty((len(bands), n), dtype=np.int64)
        columns = ["source"] + (["content_hash"] if hashes else []) + (["bands"] if bands else [])
        at = 0
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                m = batch.num_rows
                if not m:
                    continue
                where = pc.fill_null(pc.index_in(batch.column("source"), value_set=sources), -1)
                self.rank[at:at + m] = rank_of[where.to_numpy()]
                if hashes:
                    self.content_hash[at:at + m] = batch.column("content_hash").to_numpy()
                if bands:
                    matrix = batch.column("bands").flatten().to_numpy().reshape(m, -1)
                    self.bands[:, at:at + m] = matrix[:, bands].T
                at += m

    def valid(self) -> np.ndarray:
        return self.rank >= 0


def fetch(files: list[str], rows: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows at positions `rows` (sorted, distinct) of `files` read in order, only `columns`;
    row groups holding none of them are not read."""
    parts = []
    at = 0
    for path in files:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.metadata.num_row_groups):
            m = parquet.metadata.row_group(group).num_rows
            lo, hi = np.searchsorted(rows, [at, at + m])
            if hi > lo:
                table = parquet.read_row_group(group, columns=columns)
                parts.append(table.take(pa.array(rows[lo:hi] - at)))
            at += m
    if not parts:
        return pa.schema([(c, FETCHED_TYPES[c]) for c in columns]).empty_table()
    return pa.concat_tables(parts).combine_chunks()


def shared_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, group) of the entries of `keys` whose value another entry shares; entries of
    one value get the same group number."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = np.cumsum(starts) - 1
    keep = np.bincount(group)[group] > 1 if len(group) else np.zeros(0, dtype=bool)
    return order[keep], group[keep]


def equal_pairs(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with left[i] == right[j]."""
    order = np.argsort(right, kind="stable")
    ordered = right[order]
    lo = np.searchsorted(ordered, left, "left")
    count = np.searchsorted(ordered, left, "right") - lo
    i = np.repeat(np.arange(len(left)), count)
    first = np.repeat(lo - (np.cumsum(count) - count), count)
    return i, order[np.arange(len(i)) + first]


def star_pairs(group: np.ndarray, member: np.ndarray, priority: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, other) for each group: its member of lowest priority number paired with each other
    member. `member` indexes `priority`."""
    order = np.lexsort((priority[member], group))
    g, m = group[order], member[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    head = m[first][np.cumsum(first) - 1]
    return head[~first], m[~first]


def distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (a, b) pairs."""
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def priority(table: pa.Table, keys: list[str]) -> np.ndarray:
    """Each row's position when the rows are sorted by `keys` (byte order for strings, as DuckDB)."""
    order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]).to_numpy()
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(len(order))
    return out


def agreeing(sig_a: np.ndarray, sig_b: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    """Whether signatures sig_a[a[k]] and sig_b[b[k]] agree on ≥ threshold of their positions."""
    out = np.empty(len(a), dtype=bool)
    for s in range(0, len(a), VERIFY_BLOCK):
        agree = sig_a[a[s:s + VERIFY_BLOCK]] == sig_b[b[s:s + VERIFY_BLOCK]]
        out[s:s + VERIFY_BLOCK] = agree.mean(axis=1) >= threshold
    return out


def signature_matrix(table: pa.Table) -> np.ndarray:
    """The `signature` column as a (rows × permutations) uint32 matrix."""
    column = table.column("signature").combine_chunks()
    return column.flatten().to_numpy().reshape(len(table), -1) if len(table) else np.zeros((0, 0), np.uint32)


class Candidates:
    """The pairs a rank found, as row positions of the generation (`a`, `b` within) or of the index
    (`b` across), until `keyed` turns them into document keys."""

    def __init__(self):
        self.exact_groups: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, group) of shared content hashes
        self.near_groups: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, group) of shared buckets
        self.exact_across: list[tuple[np.ndarray, np.ndarray]] = []  # (new row, old row), same content hash
        self.near_across: list[tuple[np.ndarray, np.ndarray]] = []  # (new row, old row), same bucket

    def new_rows(self) -> np.ndarray:
        parts = [r for r, _ in self.exact_groups + self.near_groups] + [a for a, _ in self.exact_across + self.near_across]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def old_rows(self) -> np.ndarray:
        parts = [b for _, b in self.exact_across + self.near_across]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def exact_candidates(found: Candidates, new: Scan, old: Scan, rank: int, world_size: int) -> None:
    """This rank's content hashes (content_hash mod N == rank): the groups sharing one within the
    generation, and every (new, indexed) pair sharing one."""
    new_rows = np.flatnonzero(new.valid() & (np.mod(new.content_hash, world_size) == rank))
    old_rows = np.flatnonzero(old.valid() & (np.mod(old.content_hash, world_size) == rank))
    pos, group = shared_keys(new.content_hash[new_rows])
    found.exact_groups.append((new_rows[pos], group))
    i, k = equal_pairs(new.content_hash[new_rows], old.content_hash[old_rows])
    found.exact_across.append((new_rows[i], old_rows[k]))


def near_candidates(found: Candidates, new: Scan, old: Scan, owned: dict[int, list[int]], slices: int) -> None:
    """This rank's buckets: per owned band, the documents sharing a hash within the generation,
    and every (new, indexed) pair sharing one."""
    groups = 0
    for j, band in enumerate(sorted(owned)):
        cut = np.array(owned[band])
        new_rows = np.flatnonzero(new.valid() & np.isin(np.mod(new.bands[j], slices), cut))
        old_rows = np.flatnonzero(old.valid() & np.isin(np.mod(old.bands[j], slices), cut))
        pos, group = shared_keys(new.bands[j][new_rows])
        found.near_groups.append((new_rows[pos], group + groups))
        groups += len(new_rows)
        i, k = equal_pairs(new.bands[j][new_rows], old.bands[j][old_rows])
        found.near_across.append((new_rows[i], old_rows[k]))


class Members:
    """The documents in some candidate pair, fetched once: keys, content hashes, signatures, and
    each one's priority among them."""

    def __init__(self, files: list[str], rows: np.ndarray, ranks: np.ndarray, keys: list[str], signatures: bool):
        self.rows = rows
        columns = [k for k in keys if k != "rank"]
        self.table = fetch(files, rows, columns + ["content_hash"] + (["signature"] if signatures else []))
        self.table = self.table.append_column("rank", pa.array(ranks[rows], pa.int64()))
        self.priority = priority(self.table, keys)
        self.signatures = signature_matrix(self.table) if signatures else None

    def index(self, rows: np.ndarray) -> np.ndarray:
        """Positions in this table of documents at file positions `rows`."""
        return np.searchsorted(self.rows, rows)

    def columns(self, prefix: str, at: np.ndarray) -> dict[str, pa.Array]:
        out = {f"{prefix}_{c}": self.table.column(c).take(pa.array(at, pa.int64()))
               for c in ("rank", "source", "id")}
        out[f"{prefix}_hash"] = self.table.column("content_hash").take(pa.array(at, pa.int64()))
        if "snapshot" in self.table.column_names:
            out[f"{prefix}_snapshot"] = self.table.column("snapshot").take(pa.array(at, pa.int64()))
        return out


def pair_table(kind: str, a: Members, ia: np.ndarray, b: Members, ib: np.ndarray, verified: np.ndarray) -> pa.Table:
    """Rows of PAIR_SCHEMA for pairs (a[ia[k]], b[ib[k]])."""
    across = "snapshot" in b.table.column_names
    columns = {"kind": pa.array([kind] * len(ia), pa.string()), "across": pa.array(np.full(len(ia), across)),
               "verified": pa.array(verified)}
    columns |= a.columns("a", ia) | b.columns("b", ib)
    if not across:
        columns["b_snapshot"] = pa.nulls(len(ia), pa.string())
    return pa.table(columns).select(PAIR_SCHEMA.names).cast(PAIR_SCHEMA)


def earliest(a: np.ndarray, b: np.ndarray, priority: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct `a`, the `b` of lowest priority among its pairs."""
    order = np.lexsort((priority[b], a))
    a, b = a[order], b[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = a[1:] != a[:-1]
    return a[first], b[first]


def keyed_pairs(found: Candidates, new: Members, old: Members, threshold: float | None) -> pa.Table:
    """The candidates as PAIR_SCHEMA rows: stars within the generation, the earliest indexed match
    for exact pairs across, every distinct pair for near ones across; near pairs verified."""
    tables = []
    for rows, group in found.exact_groups:
        a, b = star_pairs(group, new.index(rows), new.priority)
        tables.append(pair_table("exact", new, a, new, b, np.ones(len(a), dtype=bool)))
    for rows_a, rows_b in found.exact_across:
        a, b = earliest(new.index(rows_a), old.index(rows_b), old.priority)
        tables.append(pair_table("exact", new, a, old, b, np.ones(len(a), dtype=bool)))
    stars = [star_pairs(group, new.index(rows), new.priority) for rows, group in found.near_groups]
    if stars:
        a, b = distinct_pairs(np.concatenate([s[0] for s in stars]), np.concatenate([s[1] for s in stars]))
        tables.append(pair_table("near", new, a, new, b, agreeing(new.signatures, new.signatures, a, b, threshold)))
    across = [(new.index(x), old.index(y)) for x, y in found.near_across]
    if across:
        a, b = distinct_pairs(np.concatenate([x for x, _ in across]), np.concatenate([y for _, y in across]))
        tables.append(pair_table("near", new, a, old, b, agreeing(new.signatures, old.signatures, a, b, threshold)))
    return pa.concat_tables(tables) if tables else PAIR_SCHEMA.empty_table()


class BucketPairs(PipelineStep):
    """Phase 1 of clustering: rank r of N finds the candidate pairs of its share of the buckets and
    content hashes, verifies the near ones, and writes `<output_folder>/<rank>.parquet`
    (PAIR_SCHEMA). Plain attributes, so the step pickles to a worker or a Ray task."""

    type = "🫂 - DEDUP"
    name = "🪣 Duplicate pairs of a bucket shard"

    def __init__(self, signature_files: list[str], index_files: list[str], source_rank: dict[str, int],
                 output_folder: str, threshold: float | None, exact: bool):
        super().__init__()
        self.signature_files = list(signature_files)
        self.index_files = list(index_files)
        self.source_rank = dict(source_rank)
        self.output_folder = output_folder
        self.threshold = threshold
        self.exact = exact

    def pairs(self, rank: int, world_size: int) -> pa.Table:
        """This rank's pairs (see the module's docstring)."""
        bands = band_count(self.signature_files) if self.threshold is not None else 0
        owned = owned_cells(rank, world_size, bands) if bands else {}
        if not (self.exact or owned):
            return PAIR_SCHEMA.empty_table()
        new = Scan(self.signature_files, self.source_rank, self.exact, sorted(owned))
        old = Scan(self.index_files, self.source_rank, self.exact, sorted(owned))
        found = Candidates()
        if self.exact:
            exact_candidates(found, new, old, rank, world_size)
        if owned:
            near_candidates(found, new, old, owned, -(-world_size // bands))
        new_members = Members(self.signature_files, found.new_rows(), new.rank, ["rank", "source", "id"], bool(owned))
        old_members = Members(self.index_files, found.old_rows(), old.rank, ["snapshot", "rank", "source", "id"],
                              bool(owned))
        return keyed_pairs(found, new_members, old_members, self.threshold)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        os.makedirs(self.output_folder, exist_ok=True)
        with self.track_time("pairs"):
            table = self.pairs(rank, world_size)
        pq.write_table(table, os.path.join(self.output_folder, f"{rank:05d}.parquet"), compression="zstd")
        self.stat_update("candidate_pairs", value=len(table))
        self.stat_update("verified_pairs", value=pc.sum(table.column("verified")).as_py() or 0)
        return
        yield  # a generator that yields nothing: this step is the whole pipeline
