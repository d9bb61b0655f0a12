"""The on-disk document format shared by every stage, and atomic publication of folders."""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import hashlib
import json
import os
import shutil
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from mix_pipeline.core.io.faults import crash_point

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
    crash_point("write.document")
    meta = dict(document.metadata)
    row = {"id": str(document.id), "text": document.text}
    for key in _COLUMN_KEYS:
        if key in meta:
            row[key] = meta.pop(key)
    row["metadata"] = json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)
    return row


# Documents per Parquet row group, and per batch a worker holds before writing it (datatrove's
# default is 1,000): a filtered worker has one writer per filter plus the kept one, so with
# 1,000 its memory grew with the corpus until every buffer was full (≈ 5 MB each on web text).
WRITE_BATCH = 200


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
        batch_size=WRITE_BATCH,
    )


def list_parts(folder: str) -> list[str]:
    """The published Parquet shards of a folder, sorted."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("part-") and f.endswith(".parquet"))


def staging_dir(final_dir: str) -> str:
    """A fresh sibling folder to write into before publishing; readers never look at it.

    Leftovers of an earlier run that was killed (see `recover`) are cleared first.
    """
    parent, name = os.path.split(final_dir.rstrip("/"))
    os.makedirs(parent, exist_ok=True)
    recover(final_dir)
    path = os.path.join(parent, f".{name}{_TMP}{uuid.uuid4().hex[:12]}")
    os.makedirs(path)
    return path


_TMP, _OLD = ".tmp-", ".old-"


def recover(final_dir: str) -> list[str]:
    """Undo what a killed run left beside `final_dir`; returns the leftovers removed.

    A run killed mid-stage leaves a hidden staging folder; one killed inside the fallback
    publication (no atomic exchange) can leave `final_dir` missing and the previous version
    moved aside, which is put back so readers see the last complete version.
    """
    parent, name = os.path.split(final_dir.rstrip("/"))
    if not os.path.isdir(parent):
        return []
    tmp_prefix, old_prefix = f".{name}{_TMP}", f".{name}{_OLD}"
    leftovers = sorted(e for e in os.listdir(parent) if e.startswith((tmp_prefix, old_prefix)))
    olds = [e for e in leftovers if e.startswith(old_prefix)]
    if olds and not os.path.lexists(final_dir):
        os.replace(os.path.join(parent, olds[-1]), final_dir)
        leftovers.remove(olds[-1])
    for entry in leftovers:
        _remove(os.path.join(parent, entry))
    return leftovers


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


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


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _renameat2
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    if _renameat2 is False:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # filesystem or kernel without it
        return False
    raise OSError(err, os.strerror(err), b)


_renameat2 = None


def publish_dir(staged: str, final_dir: str) -> None:
    """Replace `final_dir` with `staged` as a whole.

    Where the filesystem can swap two folders atomically, readers see the old version or the new
    one, never neither. Elsewhere the old folder is moved aside first and removed only after the
    new one is in place; a kill between the two renames is undone by `recover` on the next run.
    """
    final_dir = final_dir.rstrip("/")
    crash_point("publish.staged")
    parent, name = os.path.split(final_dir)
    if os.path.exists(final_dir) and _exchange(staged, final_dir):
        # `staged` now holds the previous version.
        crash_point("publish.swapped")
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = None
    if os.path.exists(final_dir):
        old = os.path.join(parent, f".{name}{_OLD}{uuid.uuid4().hex[:12]}")
        os.replace(final_dir, old)
        crash_point("publish.moved_aside")
    os.replace(staged, final_dir)
    crash_point("publish.swapped")
    if old:
        shutil.rmtree(old, ignore_errors=True)


def drop_rows(path: str, drop: set[int], rename: dict[int, str] | None = None) -> None:
    """Rewrite one Parquet shard without the rows at `drop` (0-based), and with the ids of the rows
    at `rename` replaced, one batch at a time."""
    source = pq.ParquetFile(path)
    tmp = path + ".rewrite"
    offset = 0
    with pq.ParquetWriter(tmp, source.schema_arrow, compression="zstd") as out:
        for batch in source.iter_batches(batch_size=1000):
            if rename and any(offset + i in rename for i in range(batch.num_rows)):
                ids = [rename.get(offset + i, v) for i, v in enumerate(batch.column("id").to_pylist())]
                columns = [pa.array(ids, pa.string()) if n == "id" else batch.column(n) for n in batch.schema.names]
                batch = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
            keep = [offset + i not in drop for i in range(batch.num_rows)]
            offset += batch.num_rows
            out.write_batch(batch.filter(pa.array(keep)))
    source.close()
    os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
    """Write a whole file under a hidden temporary name, then rename it over `path`."""
    recover(path)
    parent, name = os.path.split(path)
    tmp = os.path.join(parent, f".{name}{_TMP}{uuid.uuid4().hex[:12]}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def sql_strings(values: list[str]) -> str:
    """SQL string literals, comma-separated, quotes escaped: for `IN (...)` and list literals."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def sql_file_list(paths: list[str]) -> str:
    """A DuckDB list literal of file paths, for read_parquet([...])."""
    return "[" + sql_strings(paths) + "]"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Where in-memory DuckDB connections spill: a stage points it under its data_root/_work, so no
# query of a stage writes outside data_root (DuckDB's own default is ./.tmp in the working folder).
_SCRATCH = contextvars.ContextVar("duckdb_scratch", default=None)


@contextlib.contextmanager
def duckdb_scratch(folder: str):
    token = _SCRATCH.set(folder)
    try:
        yield
    finally:
        _SCRATCH.reset(token)


def scratch_connection():
    """An in-memory DuckDB connection that spills into the current stage's scratch folder."""
    import duckdb

    folder = _SCRATCH.get()
    if folder is None:
        return duckdb.connect()
    os.makedirs(folder, exist_ok=True)
    return duckdb.connect(config={"temp_directory": folder})
