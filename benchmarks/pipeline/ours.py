"""The "ours" variant: a recipe shaped like recipes/demo.yaml, run through `run_recipe` (real
Dagster jobs) with each stage function timed."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.pipeline.process_tree import session_cpu_s
from benchmarks.pipeline.settings import (
    BANDS,
    DEDUP_PRIORITY,
    FILTERS,
    MINHASH_SEED,
    MIX_TOKENS_PER_MB,
    MIX_WEIGHTS,
    NGRAM,
    NUM_PERM,
    SOURCES,
    TASKS,
    THRESHOLD,
)


def write_recipe(path: Path, corpus: Path, data_root: Path, workers: int, size_mb: float) -> Path:
    """A recipe with demo.yaml's structure over the benchmark corpus (absolute paths)."""
    import yaml

    recipe = {
        "name": "bench",
        "data_root": str(data_root),
        "allowed_roots": [str(corpus)],
        "tokenizer": {"kind": "estimate"},
        "executor": {"kind": "local", "tasks": TASKS, "workers": workers},
        "sources": {
            source: {
                "path": str(corpus / pattern),
                "format": fmt,
                "domain": source,
                "filters": [name if not params else {name: params} for name, params in FILTERS[source]],
            }
            for source, (pattern, fmt) in SOURCES.items()
        },
        "dedup": {
            "exact": True,
            "minhash": {
                "threshold": THRESHOLD,
                "ngram": NGRAM,
                "num_perm": NUM_PERM,
                "bands": BANDS,
                "seed": MINHASH_SEED,
            },
            "priority": DEDUP_PRIORITY,
        },
        "mixtures": {
            "general": {
                "unit": "tokens",
                "total": max(1, int(MIX_TOKENS_PER_MB * size_mb)),
                "weights": MIX_WEIGHTS,
                "max_epochs": 4,
                "splits": {"validation": 0.01, "test": 0.01},
                "seed": 1234,
            }
        },
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def dagster_step_seconds(instance) -> dict[str, float]:
    """Seconds per asset step summed over runs (and so over partitions), from Dagster's own
    step records: it shows which stage dominates without parsing log lines."""
    totals: dict[str, float] = {}
    for record in instance.get_run_records():
        for step in instance.get_run_step_stats(record.dagster_run.run_id):
            if step.start_time is not None and step.end_time is not None:
                totals[step.step_key] = totals.get(step.step_key, 0.0) + step.end_time - step.start_time
    return totals


class StageClock:
    """Wall and whole-tree CPU seconds per stage, summed over calls (partitions)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            wall0, cpu0 = time.monotonic(), session_cpu_s()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[name] = self.wall.get(name, 0.0) + time.monotonic() - wall0
                self.cpu[name] = self.cpu.get(name, 0.0) + session_cpu_s() - cpu0

        return timed


# Our stage functions as the Dagster assets call them: (asset module, function name, stage label).
OUR_STAGE_FUNCTIONS = [
    ("mix_pipeline.defs.raw", "run_raw", "raw"),
    ("mix_pipeline.defs.filtered", "run_filtered", "filtered"),
    ("mix_pipeline.defs.dedup_index", "run_dedup_index", "dedup_index"),
    ("mix_pipeline.defs.deduplicated", "run_deduplicated", "deduplicated"),
    ("mix_pipeline.defs.mixture", "run_mixture", "mixture"),
    ("mix_pipeline.defs.mixture_comparison", "run_comparison", "mixture_comparison"),
]
# Our near-dup work: signatures + clustering (dedup_index) and applying the verdicts (deduplicated).
OUR_NEARDUP_STAGES = ("dedup_index", "deduplicated")


def run_ours(work: Path, corpus: Path, workers: int, size_mb: float) -> dict:
    """Runs the recipe through Dagster; each stage function the assets call is timed (wall and
    whole-tree CPU), so what is left of the run's wall time is orchestration: Dagster's run
    and event bookkeeping, the catalog writes and checks around the stages, the CLI."""
    import importlib

    import dagster as dg

    from mix_pipeline.defs.runner import run_recipe

    clock = StageClock()
    for module_name, fn_name, label in OUR_STAGE_FUNCTIONS:
        module = importlib.import_module(module_name)
        setattr(module, fn_name, clock.wrap(label, getattr(module, fn_name)))
    recipe = write_recipe(work / "recipe.yaml", corpus, work / "data", workers, size_mb)
    with dg.instance_for_test() as instance:
        started, cpu0 = time.monotonic(), session_cpu_s()
        run_recipe(str(recipe), instance=instance)
        pipeline_s, pipeline_cpu_s = time.monotonic() - started, session_cpu_s() - cpu0
        steps = dagster_step_seconds(instance)
    return {
        "pipeline_s": pipeline_s,
        "pipeline_cpu_s": pipeline_cpu_s,
        "stages": clock.wall,
        "stage_cpu_s": clock.cpu,
        "dagster_steps": steps,
    }
