"""MinHash signatures: the first phase of deduplication, run on the executors.

Each document becomes one small row (content hash, MinHash signature, LSH band hashes). Words
are the units of a shingle; shingles are hashed by array arithmetic, and signatures come from
`rensa` (compiled), one call per batch of documents. `ShardSignatures`, a datatrove step, reads
our Parquet shards (every source of a generation in one launch); `SignatureWriter` does the same
for a stream of Documents. The rows are clustered by `core/dedup/clusters.py`.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

SIGNATURE_SCHEMA_FIELDS = [
    ("source", pa.string()),
    ("id", pa.string()),
    ("content_hash", pa.int64()),
    ("n_chars", pa.int64()),
]
_WORD = re.compile(r"\w+")
# Words handed to rensa per call (about as many shingles): a few MB of Python strings, whatever the batch's documents.
WORDS_PER_CALL = 100_000
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
