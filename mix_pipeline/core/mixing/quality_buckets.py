"""Quality buckets as mixture sources: `source@bucket` draws the documents of a scored source
whose quality score lies in the bucket's range (bucket names and checks: core/filters/quality_recipe.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from mix_pipeline.core.filters.quality_recipe import BUCKET_SEPARATOR, base_source, split_bucket
from mix_pipeline.names import META_QUALITY_SCORE


def bucket_bounds(recipe, name: str) -> tuple[float, float]:
    """[low, high) score bounds of `source@bucket` (the top bucket includes 1.0)."""
    buckets = sorted(recipe.quality_model.buckets.items(), key=lambda kv: kv[1])
    _, bucket = split_bucket(name)
    i = [b for b, _ in buckets].index(bucket)
    high = buckets[i + 1][1] if i + 1 < len(buckets) else math.inf
    return buckets[i][1], high


def write_bucket(files: list[str], low: float, high: float, out_dir: str) -> list[str]:
    """Copy the documents whose score lies in [low, high) into shards under `out_dir`, one per
    input shard, in order, a batch at a time. Returns the shards written (empty ones are not)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    out, con = [], duckdb.connect()
    try:
        for k, path in enumerate(files):
            target = os.path.join(out_dir, f"part-{k:05d}.parquet")
            writer = None
            for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
                meta = pa.table({"m": batch.column(batch.schema.get_field_index("metadata"))})
                con.register("b", meta)
                scores = con.execute(f"SELECT CAST(json_extract(m, '$.{META_QUALITY_SCORE}') AS DOUBLE) AS s FROM b"
                                     ).fetchnumpy()["s"]
                con.unregister("b")
                scores = np.asarray(np.ma.filled(scores, np.nan), dtype=np.float64)
                mask = (scores >= low) & (scores < high)
                if mask.any():
                    if writer is None:
                        writer = pq.ParquetWriter(target, batch.schema, compression="zstd")
                    writer.write_table(pa.Table.from_batches([batch.filter(pa.array(mask))]))
            if writer is not None:
                writer.close()
                out.append(target)
    finally:
        con.close()
    return out


def mixture_files(recipe, name: str, sources: list[str], files_of, work_dir: str) -> dict[str, list[str]]:
    """The shards each mixture source draws from: a plain source's own (`files_of(source)`), a
    bucket's the documents of its source in the bucket's score range, written under `work_dir`."""
    import shutil

    out = {}
    for s in sources:
        if BUCKET_SEPARATOR not in s:
            out[s] = files_of(s)
            continue
        folder = os.path.join(work_dir, "buckets", name, s.replace(BUCKET_SEPARATOR, "__"))
        shutil.rmtree(folder, ignore_errors=True)
        out[s] = write_bucket(files_of(base_source(s)), *bucket_bounds(recipe, s), folder)
    return out


def bucket_pool(pool, name: str):
    """A bucket's pool: documents hashed by their own source (so splits agree with every other
    copy of them), ordered under the bucket's name."""
    return replace(pool, source=name)


def manifest_buckets(recipe, sources: list[str]) -> dict:
    out = {}
    for s in sources:
        if BUCKET_SEPARATOR in s:
            low, high = bucket_bounds(recipe, s)
            out[s] = {"source": base_source(s), "bucket": split_bucket(s)[1], "min_score": low,
                      "max_score": None if math.isinf(high) else high}
    return out
