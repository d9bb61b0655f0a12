"""What every stage shares: the environment a stage runs in, its result, the gate, the runner.

A stage module (raw, filtered, dedup_index, deduplicated, mixture, mixture_comparison) runs its
datatrove pipeline through `env.runner` (local processes by default; the Dagster layer passes the
configured executor), writes into a hidden staging folder, checks the staged output, publishes the
whole partition, and records its rows in the catalog through `env.catalog`, so every caller (the
Dagster asset, the CLI, the lab, a test) leaves the same catalog behind. Nothing here imports Dagster.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline import layout
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.io import logs as _datatrove_logs  # noqa: F401  (quiet datatrove's terminal echo)
from mix_pipeline.core.io.documents import duckdb_scratch
from mix_pipeline.core.gates.checks import CheckOutcome, GateFailed
from mix_pipeline.recipe import Recipe

# (pipeline, logging_dir, tasks) → None
PipelineRunner = Callable[[list, str, int], None]


# What every worker of ours needs: imported (and warmed) once in datatrove's forkserver, which
# forks each pool worker with it already loaded instead of every worker of every stage importing
# datatrove, pyarrow, DuckDB, spaCy and loading the language-ID model again.
WORKER_PRELOAD = ("__main__", "mix_pipeline.core.stages.worker_preload")


def preload_workers() -> None:
    """Ask datatrove's forkserver (`multiprocess`, start method "forkserver") to preload
    WORKER_PRELOAD. Takes effect when the forkserver starts, i.e. before this process's first
    pool; later calls change nothing. `__main__` stays first, as multiprocessing's default."""
    import multiprocess

    multiprocess.get_context("forkserver").set_forkserver_preload(list(WORKER_PRELOAD))


def release_workers() -> None:
    """Stop the forkserver `preload_workers` started in this process, if any. It holds what it
    preloaded (~290 MB) while idle; a process that runs stage after stage (the CLI) calls this once
    no pool is left to start (the next pool would start a new one, preloading again). multiprocess
    has no public call for this: `_stop` is the one its own tests use."""
    from multiprocess import forkserver

    forkserver._forkserver._stop()


def local_runner(workers: int | None = None) -> PipelineRunner:
    """datatrove's LocalPipelineExecutor; `workers` processes (default: all cores)."""

    def run(pipeline: list, logging_dir: str, tasks: int) -> None:
        from datatrove.executor import LocalPipelineExecutor

        n_workers = max(1, min(workers or os.cpu_count() or 1, tasks))
        if n_workers > 1:
            preload_workers()
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=n_workers,
            logging_dir=logging_dir,
            # Reruns must redo the work: outputs are replaced whole, never appended to.
            skip_completed=False,
        ).run()

    return run


@dataclass
class StageResult:
    """What a stage reports: its numbers and the outcome of each of its quality checks."""

    stats: dict
    checks: list[CheckOutcome] = field(default_factory=list)
    # The filtered stage's snapshot profile (see core.drift), stored in the catalog.
    profile: dict | None = None
    # What the stage read back from the catalog after recording, for the UI (per stage).
    report: dict = field(default_factory=dict)


def gate(stage: str, checks: list[CheckOutcome], staged: list[str]) -> None:
    """Discard the staged output and raise if an error-severity check failed."""
    if any(c.blocks for c in checks):
        for path in staged:
            shutil.rmtree(path, ignore_errors=True)
        raise GateFailed(stage, checks)


@dataclass
class StageEnv:
    """What a stage needs: the recipe, a runner for datatrove pipelines, a log, and the catalog.

    `catalog` opens a writing connection to the catalog (one writer at a time); by default the
    recipe's `catalog.duckdb` under data_root. The Dagster layer passes its DuckDB resource's."""

    recipe: Recipe
    runner: PipelineRunner = field(default_factory=local_runner)
    log: Callable[[str], None] = print
    catalog: Callable[[], contextlib.AbstractContextManager] | None = None

    @property
    def root(self) -> str:
        return self.recipe.data_root_path

    def dir(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def work_dir(self, *parts: str) -> str:
        return layout.work_dir(self.root, *parts)

    def logging_dir(self, *parts: str) -> str:
        path = self.work_dir("logs", *parts)
        shutil.rmtree(path, ignore_errors=True)
        return path

    @contextlib.contextmanager
    def connect(self):
        """A writing catalog connection, with its schema in place."""
        opened = self.catalog() if self.catalog is not None else catalog.connect(layout.catalog_path(self.root))
        with opened as con:
            catalog.ensure_schema(con)
            yield con

    def tasks_for(self, n_inputs: int) -> int:
        return max(1, min(self.recipe.executor.tasks, n_inputs))

    def scan(self, where: tuple[str, ...], function: str, **kwargs):
        """Run `function` (a dotted path) with `kwargs` as one executor task (`ScanTask`) and return
        its result. For the queries over every document of a partition: on a cluster they run on a
        worker, so the driver's memory does not grow with the partition; locally (one task) they run
        in this process, as a plain call would. `where` is (stage, partition...), naming the task's
        log folder."""
        logging_dir = self.logging_dir(*where, "scan")  # emptied: no earlier result is left
        result_path = os.path.join(logging_dir, SCAN_RESULT)
        self.runner([ScanTask(function, kwargs, result_path, self.work_dir("duckdb"))], logging_dir, 1)
        return read_result(result_path)


SCAN_RESULT = "result.json"


def write_result(path: str, result) -> None:
    """A task's small result for the driver, written whole (renamed into place)."""
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def read_result(path: str):
    with open(path) as f:
        return json.load(f)


def outcomes_as_rows(checks: list[CheckOutcome]) -> list[dict]:
    """Check outcomes as JSON-ready rows, for a task's result (`outcomes_from_rows` rebuilds them)."""
    return [asdict(c) for c in checks]


def outcomes_from_rows(rows: list[dict]) -> list[CheckOutcome]:
    return [CheckOutcome(**r) for r in rows]


class ScanTask(PipelineStep):
    """One plain function as an executor task (run as one task, see `StageEnv.scan`): imports
    `function` (a dotted path), calls it with `kwargs` (plain picklable values) with DuckDB spilling
    into `scratch`, and writes its JSON-serialisable result to `result_path` for the driver."""

    type = "🔎 - SCAN"
    name = "🔎 Scan a partition"

    def __init__(self, function: str, kwargs: dict, result_path: str, scratch: str):
        super().__init__()
        self.function, self.kwargs, self.result_path, self.scratch = function, kwargs, result_path, scratch

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        module, _, name = self.function.rpartition(".")
        with duckdb_scratch(self.scratch):
            result = getattr(importlib.import_module(module), name)(**self.kwargs)
        os.makedirs(os.path.dirname(self.result_path), exist_ok=True)
        write_result(self.result_path, result)
        return
        yield  # a generator that yields nothing: this step is the whole pipeline


class ShardReader(PipelineStep):
    """Reads our own Parquet shards back into Documents (rank r reads files[r::N])."""

    type = "📖 - READER"
    name = "📒 Stage shards"

    def __init__(self, files: list[str], batch_size: int = 200):
        super().__init__()
        self.files = files
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import json

        for path in self.files[rank::world_size]:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    meta = json.loads(row.pop("metadata") or "{}")
                    doc = Document(text=row.pop("text"), id=row.pop("id"), metadata=meta | row)
                    self.update_doc_stats(doc)
                    yield doc


def scratch_in_data_root(stage: Callable) -> Callable:
    """Run a stage with DuckDB's spill folder under its data_root (see documents.duckdb_scratch)."""

    @functools.wraps(stage)
    def run(env: StageEnv, *args, **kwargs):
        with duckdb_scratch(env.work_dir("duckdb")):
            return stage(env, *args, **kwargs)

    return run


def count_rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
