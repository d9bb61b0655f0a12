"""Resources: where the catalog lives and which datatrove executor runs the pipelines."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from mix_pipeline.core.provenance.catalog import writer_lock
from mix_pipeline.core.stages.base import PipelineRunner, local_runner


class DatatroveExecutor(dg.ConfigurableResource):
    """Runs datatrove pipelines. `local` is datatrove's LocalPipelineExecutor (one process per
    worker); the pipelines are plain datatrove step lists, so a Slurm or Ray executor can be
    added here without touching the stages."""

    kind: str = "local"
    workers: int | None = None
    # kind "ray" runs the stages' tasks on a Ray cluster (core/stages/executors.py).
    address: str | None = None
    cpus_per_task: float = 1
    memory_per_task_gb: float = 1

    def runner(self) -> PipelineRunner:
        if self.kind == "local":
            return local_runner(self.workers)
        from mix_pipeline.core.stages.executors import runner_for

        return runner_for(self.kind, self.workers, self.address, self.cpus_per_task, self.memory_per_task_gb)


@contextlib.contextmanager
def catalog_connection(catalog: DuckDBResource) -> Iterator:
    """A writing connection from the catalog resource, taken under the catalog's writer lock
    (core/provenance/catalog.py `writer_lock`: writers from parallel partition runs take turns)."""
    with writer_lock(catalog.database), catalog.get_connection() as con:
        yield con
