"""The stages, one module each, named as their Dagster assets: raw → filtered → dedup_index →
deduplicated → mixture → mixture_comparison (base.py holds what they share, executors.py where
their tasks run: local processes or Ray, worker_preload.py what each worker imports once).

Each `run_<stage>` runs, checks, publishes and records one partition; nothing here imports Dagster.
"""

from mix_pipeline.core.stages.base import PipelineRunner, ShardReader, StageEnv, StageResult, local_runner
from mix_pipeline.core.stages.dedup_index import run_dedup_index
from mix_pipeline.core.stages.deduplicated import StaleDedupIndex, run_deduplicated
from mix_pipeline.core.stages.filtered import dropped_files, kept_files, run_filtered
from mix_pipeline.core.stages.mixture import deduplicated_files, run_mixture
from mix_pipeline.core.stages.mixture_comparison import run_comparison
from mix_pipeline.core.stages.raw import run_raw

__all__ = [
    "PipelineRunner", "ShardReader", "StageEnv", "StageResult", "StaleDedupIndex", "deduplicated_files",
    "dropped_files", "kept_files", "local_runner", "run_comparison", "run_dedup_index", "run_deduplicated",
    "run_filtered", "run_mixture", "run_raw",
]
