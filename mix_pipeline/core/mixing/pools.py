"""What a mixture can draw from: each source's deduplicated documents as a `Pool` of arrays.

A pool holds per-document arrays (units, tokens, a hash of the id, and which documents are
copies of another document, with their cluster survivor) and never text or Python strings, so
planning a mixture over millions of documents is arrays and sorting. This module also owns the
64-bit hashing the planner keys on: a document's seed-free identity (xxh3 of source and id) and
the bijective mix that derives a fresh uniform hash per salt from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

# Ids hashed per batch: bounds the Python strings alive at once.
_LOAD_BATCH_ROWS = 65_536

_U64 = np.uint64
_MIX1, _MIX2 = _U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53)
_SPLIT_SALT = xxhash.xxh3_64_intdigest(b"mix_pipeline/split")


def hash64(parts: list[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(p.encode("utf-8")) for p in parts), dtype=np.uint64, count=len(parts))


def mix64(h: np.ndarray, salt: int) -> np.ndarray:
    """A bijective 64-bit finaliser (murmur3's fmix64) of h XOR salt: a fresh uniform hash per salt."""
    h = h ^ _U64(salt)
    with np.errstate(over="ignore"):
        h ^= h >> _U64(33)
        h *= _MIX1
        h ^= h >> _U64(33)
        h *= _MIX2
        h ^= h >> _U64(33)
    return h


def document_hashes(source: str, ids: list[str]) -> np.ndarray:
    """The seed-free identity of each document: xxh3 of (source, id)."""
    return hash64([f"{source}\x1f{i}" for i in ids])


@dataclass
class Pool:
    """One source's documents as arrays, in file order.

    `units` is what the mixture counts (tokens, or 1 per document/example); `tokens` the token
    counts (the same array when the unit is tokens). `file_starts[k]` is the index of the
    first document of file k (for joining back to the shards by position). Splits are keyed on
    each document's cluster survivor: itself, except for the `copies` (sorted indices), whose
    survivor's identity hash and source are in `copy_hash` and `copy_source`. Kept sparse:
    16 bytes per document plus the copies."""

    source: str
    units: np.ndarray
    tokens: np.ndarray
    doc_hash: np.ndarray
    file_starts: np.ndarray
    copies: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    copy_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    copy_source: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __len__(self) -> int:
        return len(self.units)

    @property
    def available(self) -> int:
        return int(self.units.sum())

    def survivors(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For documents `idx`: the split hash of their survivor, and (positions in idx, survivor
        source) of those whose survivor is another document."""
        key = self.doc_hash[idx]
        at = np.zeros(0, np.int64)
        sources = np.zeros(0, dtype=object)
        if len(self.copies) and len(idx):
            pos = np.minimum(np.searchsorted(self.copies, idx), len(self.copies) - 1)
            at = np.flatnonzero(self.copies[pos] == idx)
            key = key.copy()
            key[at] = self.copy_hash[pos[at]]
            sources = self.copy_source[pos[at]]
        return mix64(key, _SPLIT_SALT), at, sources

    @classmethod
    def from_ids(cls, source: str, ids: list[str], units, tokens=None, survivors: dict[str, tuple[str, str]] | None = None) -> Pool:
        """An in-memory pool (library use and tests); `survivors[id] = (source, id)` of its cluster survivor."""
        units = np.asarray(units, dtype=np.int64)
        copies = [i for i, doc_id in enumerate(ids) if survivors and doc_id in survivors]
        pairs = [survivors[ids[i]] for i in copies]
        return cls(
            source=source,
            units=units,
            tokens=units if tokens is None else np.asarray(tokens, dtype=np.int64),
            doc_hash=document_hashes(source, ids),
            file_starts=np.array([0, len(ids)], dtype=np.int64),
            copies=np.array(copies, dtype=np.int64),
            copy_hash=hash64([f"{s}\x1f{i}" for s, i in pairs]),
            copy_source=np.array([s for s, _ in pairs], dtype=object),
        )


def read_survivors(cluster_files: list[str], source: str) -> pa.Table | None:
    """(id, duplicate_of_source, duplicate_of) of the source's documents that are copies of another,
    from the dedup index's cluster files of that source (one per snapshot)."""
    files = [f for f in cluster_files if os.path.exists(f)]
    if not files:
        return None
    table = pa.concat_tables(
        pq.read_table(f, columns=["source", "id", "duplicate_of_source", "duplicate_of"]) for f in sorted(files)
    )
    table = table.filter(pc.equal(table["source"], source)).drop(["source"])
    return table.filter(pc.is_valid(table["duplicate_of"]))


def load_pool(source: str, files: list[str], unit: str, survivors: pa.Table | None = None) -> Pool:
    """Read (id, n_tokens) of a source's deduplicated shards a file at a time (Arrow, compact),
    keeping only arrays."""
    tokens, doc_hashes, counts = [], [], []
    copies, copy_hash, copy_source = [], [], []
    offset = 0
    survivor_ids = survivors.column("id").combine_chunks() if survivors is not None and survivors.num_rows else None
    for path in files:
        table = pq.read_table(path, columns=["id", "n_tokens"])
        tokens.append(table.column("n_tokens").to_numpy().astype(np.int64))
        ids = table.column("id")
        # Hash in batches: only one batch of ids is ever alive as Python strings.
        for start in range(0, table.num_rows, _LOAD_BATCH_ROWS):
            doc_hashes.append(document_hashes(source, ids.slice(start, _LOAD_BATCH_ROWS).to_pylist()))
        if survivor_ids is not None:
            # One lookup per file: index_in rebuilds its hash table on every call.
            where = pc.index_in(ids, value_set=survivor_ids)
            hit = np.flatnonzero(where.is_valid().to_numpy(zero_copy_only=False))
            if len(hit):
                at = pa.array(where.to_numpy(zero_copy_only=False)[hit].astype(np.int64))
                s_sources = survivors.column("duplicate_of_source").take(at).to_pylist()
                s_ids = survivors.column("duplicate_of").take(at).to_pylist()
                copies.append(hit + offset)
                copy_hash.append(hash64([f"{s}\x1f{i}" for s, i in zip(s_sources, s_ids)]))
                copy_source.append(np.array(s_sources, dtype=object))
        counts.append(table.num_rows)
        offset += table.num_rows
    token_array = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
    return Pool(
        source=source,
        units=token_array if unit == "tokens" else np.ones(len(token_array), np.int64),
        tokens=token_array,
        doc_hash=np.concatenate(doc_hashes) if doc_hashes else np.zeros(0, np.uint64),
        file_starts=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        copies=np.concatenate(copies) if copies else np.zeros(0, np.int64),
        copy_hash=np.concatenate(copy_hash) if copy_hash else np.zeros(0, np.uint64),
        copy_source=np.concatenate(copy_source) if copy_source else np.zeros(0, dtype=object),
    )
