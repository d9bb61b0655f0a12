"""On-disk formats of the sources: gzip JSON Lines (web), Parquet (books), zstd JSON Lines
(papers), plain files (code) and JSON Lines (evals), all byte-reproducible.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from mix_pipeline.sample.docs import Doc

PARQUET_ROW_GROUP = 32


def _jsonl(docs: list[Doc], extra: str) -> bytes:
    return "".join(
        json.dumps({"id": d.id, "text": d.text, extra: d.meta[extra]}, ensure_ascii=False) + "\n" for d in docs
    ).encode()


def write_web(files: list[list[Doc]], folder: Path) -> None:
    for i, docs in enumerate(files):
        with open(folder / f"part-{i:05d}.jsonl.gz", "wb") as raw:
            # filename="" and mtime=0 keep the gzip header free of paths and timestamps.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                gz.write(_jsonl(docs, "url"))


def write_papers(files: list[list[Doc]], folder: Path) -> None:
    compressor = zstandard.ZstdCompressor(level=3)
    for i, docs in enumerate(files):
        (folder / f"part-{i:05d}.jsonl.zst").write_bytes(compressor.compress(_jsonl(docs, "title")))


def write_books(files: list[list[Doc]], folder: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("title", pa.string())])
    for i, docs in enumerate(files):
        table = pa.table(
            {"id": [d.id for d in docs], "text": [d.text for d in docs], "title": [d.meta["title"] for d in docs]},
            schema=schema,
        )
        pq.write_table(table, folder / f"part-{i:05d}.parquet", row_group_size=PARQUET_ROW_GROUP)


def write_code(files: list[tuple[str, bytes]], folder: Path) -> None:
    for rel, data in files:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_evals(evals: dict[str, list[dict]], folder: Path) -> None:
    for name, records in sorted(evals.items()):
        (folder / f"{name}.jsonl").write_bytes(
            "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode())
