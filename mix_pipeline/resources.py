"""Resources: where the catalog lives and which datatrove executor runs the pipelines."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core.stages import PipelineRunner, local_runner


class DatatroveExecutor(dg.ConfigurableResource):
    """Runs datatrove pipelines. `local` is datatrove's LocalPipelineExecutor (one process per
    worker); the pipelines are plain datatrove step lists, so a Slurm or Ray executor can be
    added here without touching the stages."""

    kind: str = "local"
    workers: int | None = None
    # issue 14 hook: kind "ray" runs the stages' tasks on a Ray cluster (core/executors.py).
    address: str | None = None
    cpus_per_task: float = 1
    memory_per_task_gb: float = 1

    def runner(self) -> PipelineRunner:
        if self.kind == "local":
            return local_runner(self.workers)
        from mix_pipeline.core.executors import runner_for

        return runner_for(self.kind, self.workers, self.address, self.cpus_per_task, self.memory_per_task_gb)


@contextlib.contextmanager
def catalog_connection(catalog: DuckDBResource) -> Iterator:
    """A catalog connection, creating the folder that holds the database on first use.

    Partition runs of one wave write the catalog from several processes. DuckDB admits one writing
    process and dagster-duckdb retries while another holds the file, but under load four parallel
    ingest runs once lost one run's rows; an exclusive `flock` on `catalog.duckdb.lock` makes the
    writers take turns outright (the kernel drops it if a process dies)."""
    path = os.path.abspath(catalog.database)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with catalog.get_connection() as con:
            yield con
