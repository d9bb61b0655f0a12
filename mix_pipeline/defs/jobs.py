"""Jobs: the pipeline's phases, as the CLI runs them and as the UI offers them.

Cross-source dedup makes the graph wide in the middle: every source must be filtered before
the index is built, and the index must exist before any source is deduplicated. So a full run
is ingest (per source:snapshot) → dedup_index → deduplicate (per source:snapshot) → mix
(per mixture) → compare_mixtures.
"""

import functools

import dagster as dg

from mix_pipeline.defs.partitions import experiment_partitions, mixture_partitions, source_snapshots
from mix_pipeline.names import (
    DEDUP_INDEX,
    DEDUPLICATED,
    FILTERED,
    MIXTURE,
    MIXTURE_COMPARISON,
    MIXTURE_LAB,
    QUALITY_MODEL,
    RAW,
)
from mix_pipeline.recipe import Recipe

INGEST_JOB = "ingest"
DEDUP_INDEX_JOB = "build_dedup_index"
DEDUPLICATE_JOB = "deduplicate"
MIX_JOB = "mix"
COMPARE_JOB = "compare_mixtures"
LAB_JOB = "run_mixture_lab"  # not "mixture_lab": a job may not share its name with an asset
QUALITY_MODEL_JOB = "train_quality_model"
# The jobs that come after every job whose stage runs datatrove worker pools (ingest, dedup index,
# deduplicate; the mixture stage starts a pool only to tokenize, when a mixture asks for it).
AFTER_WORKER_JOBS = frozenset({MIX_JOB, COMPARE_JOB})


def build(recipe: Recipe) -> dict:
    sources = source_snapshots(recipe)
    # Each stage parallelises inside itself (datatrove workers); a step subprocess per run would
    # only add a Python start-up to every run the daemon launches.
    define_asset_job = functools.partial(dg.define_asset_job, executor_def=dg.in_process_executor)
    out = [
        define_asset_job(INGEST_JOB, selection=[RAW, FILTERED], partitions_def=sources,
                            description="Read and filter one snapshot of a source."),
        define_asset_job(DEDUP_INDEX_JOB, selection=[DEDUP_INDEX],
                            description="Cluster duplicates across every filtered source."),
        define_asset_job(DEDUPLICATE_JOB, selection=[DEDUPLICATED], partitions_def=sources,
                            description="Drop one snapshot's duplicates and count its tokens."),
    ]
    mixtures = mixture_partitions(recipe)
    if mixtures is not None:
        out.append(define_asset_job(MIX_JOB, selection=[MIXTURE], partitions_def=mixtures,
                                       description="Sample and write one named mixture."))
        out.append(define_asset_job(COMPARE_JOB, selection=[MIXTURE_COMPARISON],
                                       description="Tabulate every built mixture side by side."))
    experiments = experiment_partitions(recipe)
    if experiments is not None:
        out.append(define_asset_job(LAB_JOB, selection=[MIXTURE_LAB], partitions_def=experiments,
                                       description="Run one mixture-lab experiment and recommend a mixture."))
    if recipe.quality_model is not None:
        out.append(dg.define_asset_job(QUALITY_MODEL_JOB, selection=[QUALITY_MODEL],
                                       description="Train the quality classifier and report its score distributions."))
    return {job.name: job for job in out}
