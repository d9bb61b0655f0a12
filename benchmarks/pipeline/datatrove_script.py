"""The "datatrove" variant: the script a datatrove user would write for the same work, per
source read → the same filters → Parquet, then datatrove's four MinHash stages."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from benchmarks.pipeline.process_tree import session_cpu_s
from benchmarks.pipeline.settings import (
    DT_HASHES_PER_BUCKET,
    DT_NUM_BUCKETS,
    FILTERS,
    MINHASH_SEED,
    NGRAM,
    SOURCES,
    TASKS,
)

# datatrove's four MinHash stages.
DT_NEARDUP_STAGES = ("minhash_signature", "minhash_buckets", "minhash_cluster", "minhash_filter")


def document_row(self, doc) -> dict:
    """ParquetWriter adapter. datatrove infers a Parquet schema from the first batch, and our
    metadata keys vary per document (`pii_redacted` only where something was redacted), so
    metadata is stored as JSON text, which datatrove's readers decode back into a dict."""
    return {"id": doc.id, "text": doc.text, "metadata": json.dumps(doc.metadata)}


def datatrove_filter(name: str, params: dict, exclusion_writer=None):
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from mix_pipeline.core.filters.language import LanguageIdFilter
    from mix_pipeline.core.filters.pii import PIIRedactor

    class Py3langidFilter(LanguageIdFilter):
        """The language filter as a datatrove user writes it with py3langid: its own `classify`
        (ours computes the same answer with array operations, see core.fastlang)."""

        def identify(self, texts: list[str]) -> list[tuple[str, float]]:
            from mix_pipeline.core.filters.language import language_identifier

            return [(lang, float(prob)) for lang, prob in (language_identifier().classify(t[:10_000]) for t in texts)]

    classes = {
        "language": Py3langidFilter,
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4": C4QualityFilter,
        "fineweb": FineWebQualityFilter,
        "pii": PIIRedactor,
    }
    if exclusion_writer is not None:
        params = params | {"exclusion_writer": exclusion_writer}
    return classes[name](**params)


def datatrove_reader(corpus: Path, source: str):
    from datatrove.pipeline.readers import JsonlReader, ParquetReader

    pattern, fmt = SOURCES[source]
    folder, _, glob_pattern = pattern.partition("/")
    tag = {"source": source}  # carried through to score the dedup by (source, id)
    if fmt == "parquet":
        return ParquetReader(str(corpus / folder), glob_pattern=glob_pattern, default_metadata=tag)
    compression = "zstd" if glob_pattern.endswith(".zst") else "gzip"
    return JsonlReader(str(corpus / folder), glob_pattern=glob_pattern, compression=compression, default_metadata=tag)


# What run_datatrove imports before its clock starts, so that no stage's time includes them.
DATATROVE_MODULES = (
    "datatrove.executor",
    "datatrove.pipeline.dedup",
    "datatrove.pipeline.dedup.minhash",
    "datatrove.pipeline.readers",
    "datatrove.pipeline.writers",
    "datatrove.utils.hashing",
)


class _Script:
    """Runs the script's pipelines one after another, timing each (wall and whole-tree CPU)."""

    def __init__(self, work: Path, workers: int):
        self.work, self.workers = work, workers
        self.stages: dict[str, float] = {}
        self.stage_cpu: dict[str, float] = {}

    def execute(self, name: str, pipeline: list, tasks: int) -> None:
        from datatrove.executor import LocalPipelineExecutor

        started, cpu0 = time.monotonic(), session_cpu_s()
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(self.workers, tasks),
            logging_dir=str(self.work / "logs" / name),
            skip_completed=False,
        ).run()
        self.stages[name] = time.monotonic() - started
        self.stage_cpu[name] = session_cpu_s() - cpu0

    def writer(self, folder: str):
        from datatrove.pipeline.writers import ParquetWriter

        return ParquetWriter(str(self.work / folder), adapter=document_row, compression="zstd")


def run_datatrove(work: Path, corpus: Path, workers: int) -> dict:
    for name in DATATROVE_MODULES:
        importlib.import_module(name)
    script = _Script(work, workers)
    started, cpu0 = time.monotonic(), session_cpu_s()
    for source in SOURCES:
        # Dropped documents are written with datatrove's `filter_reason`, so the benchmark can
        # compare each document's fate with ours (filter_agreement).
        steps = [datatrove_reader(corpus, source)] + [
            datatrove_filter(n, p, script.writer(f"dropped/{source}/{n}") if n != "pii" else None)
            for n, p in FILTERS[source]
        ]
        script.execute(f"filter[{source}]", steps + [script.writer(f"filtered/{source}")], TASKS)
    minhash_dedup(script, work)
    return {
        "pipeline_s": time.monotonic() - started,
        "pipeline_cpu_s": session_cpu_s() - cpu0,
        "stages": script.stages,
        "stage_cpu_s": script.stage_cpu,
    }


def minhash_dedup(script: _Script, work: Path) -> None:
    """datatrove's four MinHash stages over the three filtered outputs, then the final writer."""
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(
        n_grams=NGRAM,
        num_buckets=DT_NUM_BUCKETS,
        hashes_per_bucket=DT_HASHES_PER_BUCKET,
        seed=MINHASH_SEED,
        # The default xxhash shingle hash passes str to xxhash, which xxhash 4 (our pin) rejects.
        hash_config=HashConfig(precision=64, hash_fc="sha1"),
    )

    # Stages 1 and 4 must read the same documents in the same order per rank: datatrove
    # identifies a document by (rank, position).
    def filtered_reader() -> ParquetReader:
        return ParquetReader(str(work / "filtered"), glob_pattern="*/*.parquet")

    minhash = work / "minhash"
    script.execute(
        "minhash_signature",
        [filtered_reader(), MinhashDedupSignature(str(minhash / "signatures"), config=config)],
        TASKS,
    )
    script.execute(
        "minhash_buckets",
        [MinhashDedupBuckets(str(minhash / "signatures"), str(minhash / "buckets"), config=config)],
        DT_NUM_BUCKETS,  # datatrove needs a multiple of num_buckets here
    )
    script.execute(
        "minhash_cluster",
        [MinhashDedupCluster(str(minhash / "buckets"), str(minhash / "remove_ids"), config=config)],
        1,
    )
    script.execute(
        "minhash_filter",
        [
            filtered_reader(),
            MinhashDedupFilter(str(minhash / "remove_ids"), exclusion_writer=script.writer("dedup_removed")),
            script.writer("deduplicated"),
        ],
        TASKS,
    )
