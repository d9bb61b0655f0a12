"""The `deduplicated` stage: a snapshot's filtered documents less those the dedup index marked
duplicate, with each document's token count, in one streaming pass. Checked, sealed, published,
recorded."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mix_pipeline import layout
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.io.documents import (
    DEDUPLICATED_SCHEMA,
    DOCUMENT_SCHEMA,
    list_parts,
    normalise_shard_names,
    publish_dir,
    staging_dir,
)
from mix_pipeline.core.io.faults import crash_point
from mix_pipeline.core.io.integrity import require_intact, seal
from mix_pipeline.core.stages.base import StageEnv, StageResult, count_rows, gate, scratch_in_data_root
from mix_pipeline.core.mixing.tokens import TokenCounter
from mix_pipeline.names import DEDUP_INDEX, DEDUPLICATED, DEFAULT_SNAPSHOT, FATE_DUPLICATE, FILTERED, partition_key


class StaleDedupIndex(RuntimeError):
    pass


# A deduplicated shard is closed and the next one started once it reaches this size (as
# datatrove's ParquetWriter does with the same max_file_size in parquet_writer).
DEDUPLICATED_MAX_FILE_BYTES = 256 * 2**20


def write_deduplicated(inputs: list[str], clusters: str, out_dir: str, tasks: int, counter: TokenCounter,
                       max_file_bytes: int = DEDUPLICATED_MAX_FILE_BYTES, batch_rows: int = 1000,
                       ranks: list[int] | None = None) -> None:
    """Filtered shards less the documents `clusters` marks duplicate, with `n_tokens`, in one pass.

    The layout is the one datatrove's pipeline (ShardReader → DropDuplicates → CountTokens →
    parquet_writer with `tasks` tasks) writes: output r holds inputs r, r+N, ... in order, named
    `<file>_<rank>.parquet` as its writer names them, and normalise_shard_names orders them the
    same way; rows, columns and token counts are the same too. It runs in this process, batch by
    batch, with no Document per row: this is a filter and a copy, cheaper than a worker pool's
    start-up. Nothing depends on the worker count.
    """
    duplicates = set(
        pq.read_table(clusters, columns=["id"], filters=[("fate", "=", FATE_DUPLICATE)]).column("id").to_pylist()
    )
    names = [f.name for f in DOCUMENT_SCHEMA]
    for rank in range(tasks) if ranks is None else ranks:  # `ranks`: one cluster task's share (core/stages/executors.py)
        file_id, sink, writer = 0, None, None
        try:
            for path in inputs[rank::tasks]:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=names):
                    if duplicates:
                        batch = batch.filter(pa.array([i not in duplicates for i in batch.column("id").to_pylist()]))
                    if not batch.num_rows:
                        continue
                    columns = [batch.column(n) for n in names]
                    # ShardReader reads a missing metadata as {}, which the writer stores as "{}".
                    columns[names.index("metadata")] = pc.fill_null(batch.column("metadata"), "{}")
                    table = pa.Table.from_arrays(columns + [counter.count_array(batch.column("text"))],
                                                 schema=DEDUPLICATED_SCHEMA)
                    if writer is None:
                        sink = open(os.path.join(out_dir, f"{file_id:03d}_{rank:05d}.parquet"), "wb")
                        writer = pq.ParquetWriter(sink, DEDUPLICATED_SCHEMA, compression="zstd")
                    writer.write_table(table)
                    crash_point("deduplicated.batch")
                    if sink.tell() >= max_file_bytes:
                        writer.close()
                        sink.close()
                        file_id, sink, writer = file_id + 1, None, None
        finally:
            if writer is not None:
                writer.close()
            if sink is not None:
                sink.close()


class DeduplicateRanks:
    """The deduplicated pass (write_deduplicated) as a datatrove pipeline callable:
    rank r writes output r (inputs r, r+N, ...), the same files the in-process pass writes, so a
    cluster spreads the copy without changing a byte. Locally the pass stays in-process (cheaper
    than a worker pool's start-up); on Ray each rank is a task."""

    def __init__(self, inputs: list[str], clusters: str, out_dir: str, tasks: int, counter):
        self.inputs, self.clusters, self.out_dir, self.tasks, self.counter = inputs, clusters, out_dir, tasks, counter

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        os.makedirs(self.out_dir, exist_ok=True)
        write_deduplicated(self.inputs, self.clusters, self.out_dir, self.tasks, self.counter, ranks=[rank])
        return data


@scratch_in_data_root
def run_deduplicated(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    recipe = env.recipe
    require_intact(env.root, FILTERED, source, snapshot)
    inputs = list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, source, snapshot))
    clusters = layout.clusters_file(env.root, source, snapshot)
    indexed = pq.read_metadata(clusters).num_rows if os.path.exists(clusters) else 0
    if indexed != count_rows(inputs):
        raise StaleDedupIndex(
            f"{DEDUP_INDEX} lists {indexed} documents of {partition_key(source, snapshot)} but {FILTERED} has "
            f"{count_rows(inputs)}: materialize {DEDUP_INDEX} again before {DEDUPLICATED}"
        )
    final = layout.partition_dir(env.root, layout.DEDUPLICATED_DIR, source, snapshot)
    tmp = staging_dir(final)
    tok = recipe.tokenizer
    if inputs:
        counter = TokenCounter(tok.kind, recipe.resolve(tok.path) if tok.path else None)
        if getattr(env.runner, "distributed", False):  # one cluster task per output rank (core/stages/executors.py)
            env.runner([DeduplicateRanks(inputs, clusters, tmp, env.tasks_for(len(inputs)), counter)],
                       env.logging_dir(DEDUPLICATED, source, snapshot), env.tasks_for(len(inputs)))
        else:
            write_deduplicated(inputs, clusters, tmp, env.tasks_for(len(inputs)), counter)
    parts = normalise_shard_names(tmp)
    tokens = sum(int(pc.sum(pq.read_table(p, columns=["n_tokens"])["n_tokens"]).as_py() or 0) for p in parts)
    stats = {"input_documents": count_rows(inputs), "documents": count_rows(parts), "tokens": tokens}
    stats["duplicates"] = stats["input_documents"] - stats["documents"]
    env.log(f"deduplicated[{partition_key(source, snapshot)}]: kept {stats['documents']} of {stats['input_documents']} ({tokens} tokens)")
    checks = quality.deduplicated_checks(stats["input_documents"], stats["documents"], recipe.sources[source].checks)
    gate(f"{DEDUPLICATED}[{partition_key(source, snapshot)}]", checks, [tmp])
    seal(tmp)
    publish_dir(tmp, final)
    with env.connect() as con:
        catalog.record_stats(con, DEDUPLICATED, partition_key(source, snapshot), stats)
    return StageResult(stats, checks)
