"""The on-disk document format shared by every stage, and atomic publication of folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid

import pyarrow as pa

# Every stage writes the same columns, so any stage's shards can be read with the same code
# (and loaded by `datasets`). `metadata` is JSON text: its keys vary by source.
DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("metadata", pa.string()),
    ]
)
DEDUPLICATED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("n_tokens", pa.int64()))

# Metadata keys the pipeline lifts into columns; everything else stays in `metadata`.
_COLUMN_KEYS = ("source", "domain", "n_tokens")


def document_row(document) -> dict:
    """A datatrove Document as a row of DOCUMENT_SCHEMA (or DEDUPLICATED_SCHEMA)."""
    meta = dict(document.metadata)
    row = {"id": str(document.id), "text": document.text}
    for key in _COLUMN_KEYS:
        if key in meta:
            row[key] = meta.pop(key)
    row["metadata"] = json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)
    return row


def parquet_writer(output_folder: str, schema: pa.Schema = DOCUMENT_SCHEMA, max_file_size: int = 256 * 2**20):
    """datatrove's ParquetWriter configured for our layout: `${rank}` shards, fixed schema."""
    from datatrove.pipeline.writers import ParquetWriter

    return ParquetWriter(
        output_folder,
        output_filename="${rank}.parquet",
        adapter=lambda self, doc: document_row(doc),
        schema=schema,
        compression="zstd",
        max_file_size=max_file_size,
    )


def partition_dir(data_root: str, stage_dir: str, source: str, snapshot: str) -> str:
    return os.path.join(data_root, stage_dir, source, snapshot)


def list_parts(folder: str) -> list[str]:
    """The published Parquet shards of a folder, sorted."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("part-") and f.endswith(".parquet"))


def staging_dir(final_dir: str) -> str:
    """A fresh sibling folder to write into before publishing; readers never look at it."""
    parent, name = os.path.split(final_dir.rstrip("/"))
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
    os.makedirs(path)
    return path


def normalise_shard_names(folder: str) -> list[str]:
    """Rename datatrove's `<rank>.parquet` / `<rank>_<n>.parquet` outputs to `part-NNNNN.parquet`.

    Order follows (rank, file number), so the layout only depends on the task count.
    """
    def key(name: str) -> tuple[int, int]:
        stem = name.removesuffix(".parquet")
        rank, _, n = stem.partition("_")
        return int(rank), int(n or -1)

    names = sorted((f for f in os.listdir(folder) if f.endswith(".parquet") and f[0].isdigit()), key=key)
    out = []
    for i, name in enumerate(names):
        target = os.path.join(folder, f"part-{i:05d}.parquet")
        os.replace(os.path.join(folder, name), target)
        out.append(target)
    return out


def publish_dir(staged: str, final_dir: str) -> None:
    """Replace `final_dir` with `staged` as a whole.

    The old folder is moved aside first and removed only after the new one is in place, so a
    crash leaves either the old or the new complete folder at `final_dir` (plus a hidden leftover).
    """
    final_dir = final_dir.rstrip("/")
    old = None
    if os.path.exists(final_dir):
        parent, name = os.path.split(final_dir)
        old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(final_dir, old)
    os.replace(staged, final_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def sql_file_list(paths: list[str]) -> str:
    """A DuckDB list literal of file paths (quotes escaped), for read_parquet([...])."""
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
