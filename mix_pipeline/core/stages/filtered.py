"""The `filtered` stage: decontamination first (when the recipe asks for it), then the source's
filters in recipe order; kept documents go to `filtered/`, each dropped one to
`dropped/<source>/<snapshot>/<filter>/` with what the filter measured. The snapshot is profiled for
drift against the source's other snapshots. Checked, sealed, published, recorded."""

from __future__ import annotations

import itertools
import os

from mix_pipeline import layout
from mix_pipeline.core.filters.decontamination import Decontaminator
from mix_pipeline.core.filters.registry import DECONTAMINATION, LANGUAGE, build_filter, filter_class, is_dropping
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.gates import drift
from mix_pipeline.core.io.documents import (
    list_parts,
    normalise_shard_names,
    parquet_writer,
    publish_dir,
    scratch_connection,
    staging_dir,
)
from mix_pipeline.core.io.integrity import require_intact, seal
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.stages.base import (
    ShardReader,
    StageEnv,
    StageResult,
    count_rows,
    gate,
    outcomes_as_rows,
    outcomes_from_rows,
    scratch_in_data_root,
)
from mix_pipeline.names import DEFAULT_SNAPSHOT, FILTERED, RAW, partition_key, snapshot_order
from mix_pipeline.recipe import Recipe
from mix_pipeline.recipe.inputs import eval_set_files

# Dropped documents shown per filter in the report.
SAMPLES_PER_FILTER = 3


def dropping_steps(recipe: Recipe, source: str) -> list[str]:
    """The names drops are attributed to, in pipeline order: decontamination (when the recipe
    asks for it) runs first, so contamination is counted whatever the other filters would say,
    and in `remove_span` mode the filters judge the text that is left."""
    first = [DECONTAMINATION] if recipe.decontamination is not None else []
    return first + [f.name for f in recipe.sources[source].filters if is_dropping(f.name)]


def _filter_count_stats(rows: list[dict]) -> dict[str, float]:
    """Flat numbers for stage_stats and the UI's plots, each family's from its own rows
    (`FilterFamily.count_stats`; rows come ordered by filter); the catalog keeps the full rows."""
    stats: dict[str, float] = {}
    for name, group in itertools.groupby(rows, key=lambda r: r["filter"]):
        if name == DECONTAMINATION:
            stats.update({f"contaminated_{r['kind']}": r["documents"] for r in group})
        else:
            stats.update(filter_class(name).count_stats(list(group)))
    return stats


@scratch_in_data_root
def run_filtered(
    env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT, profiles: dict[str, dict] | None = None
) -> StageResult:
    """`profiles` maps the source's snapshots to their profiles (for drift); by default the catalog's."""
    recipe = env.recipe
    spec = recipe.sources[source]
    key = partition_key(source, snapshot)
    if profiles is None:
        with env.connect() as con:
            profiles = catalog.profiles(con, source)
    require_intact(env.root, RAW, source, snapshot)
    inputs = list_parts(layout.partition_dir(env.root, layout.RAW_DIR, source, snapshot))
    out_final = layout.partition_dir(env.root, layout.FILTERED_DIR, source, snapshot)
    dropped_final = layout.dropped_dir(env.root, source, snapshot)
    out_tmp, dropped_tmp = staging_dir(out_final), staging_dir(dropped_final)
    steps: list = [ShardReader(inputs)]
    if (decont := recipe.decontamination) is not None:
        steps.append(Decontaminator(
            eval_set_files(recipe), decont.ngram, decont.mode, decont.text_fields,
            exclusion_writer=parquet_writer(os.path.join(dropped_tmp, DECONTAMINATION)),
        ))
    for f in spec.filters:
        writer = parquet_writer(os.path.join(dropped_tmp, f.name)) if is_dropping(f.name) else None
        steps.append(build_filter(f.name, f.params, exclusion_writer=writer, resolve=recipe.resolve))
    steps.append(parquet_writer(out_tmp))
    names = dropping_steps(recipe, source)
    env.log(f"filtered[{key}]: {len(inputs)} shard(s) through {names or 'no filters'}")
    if inputs:
        env.runner(steps, env.logging_dir(FILTERED, source, snapshot), env.tasks_for(len(inputs)))
    kept = normalise_shard_names(out_tmp)
    dropped_parts = {}
    for name in names:
        folder = os.path.join(dropped_tmp, name)
        dropped_parts[name] = normalise_shard_names(folder) if os.path.isdir(folder) else []
    language = next((f for f in spec.filters if f.name == LANGUAGE), None)
    scanned = env.scan((FILTERED, source, snapshot), f"{__name__}.scan_partition", inputs=inputs, kept=kept,
                       dropped_parts=dropped_parts, overrides=spec.checks,
                       languages=language.params.get("languages", ["en"]) if language else None)
    dropped = scanned["dropped"]
    stats = {"input_documents": scanned["input_documents"], "documents": scanned["documents"],
             "dropped": sum(dropped.values())}
    stats.update({f"dropped_by_{name}": n for name, n in dropped.items()})
    stats.update(_filter_count_stats(scanned["filter_counts"]))
    env.log(f"filtered[{key}]: kept {stats['documents']} of {stats['input_documents']}, dropped {dropped}")
    checks = outcomes_from_rows(scanned["checks"])
    current = drift.profile(kept, stats["input_documents"], dropped, [p for ps in dropped_parts.values() for p in ps])
    refs = drift.references(snapshot, {k: v for k, v in (profiles or {}).items() if k != snapshot}, snapshot_order)
    checks.append(quality.drift_check(current, refs, spec.checks))
    gate(f"{FILTERED}[{key}]", checks, [out_tmp, dropped_tmp])
    seal(out_tmp)
    seal(dropped_tmp)
    publish_dir(out_tmp, out_final)
    publish_dir(dropped_tmp, dropped_final)
    drift_score = float(next(c for c in checks if c.name == "drift").observed or 0.0)
    return StageResult(stats, checks, profile=current,
                       report=record(env, source, snapshot, stats, current, drift_score, scanned))


def scan_partition(inputs: list[str], kept: list[str], dropped_parts: dict[str, list[str]],
                   languages: list[str] | None, overrides: dict) -> dict:
    """The staged partition's queries over every document, run as an executor task (`env.scan`)
    so that the driver's memory does not grow with the partition: the documents read, kept and
    dropped per filter (pipeline order), what the filters counted (`catalog.filter_counts` over the
    kept and dropped files) and the checks (as rows)."""
    dropped = {name: count_rows(files) for name, files in dropped_parts.items()}
    input_documents = count_rows(inputs)
    with scratch_connection() as con:
        rows = catalog.filter_counts(con, kept + [p for ps in dropped_parts.values() for p in ps])
    checks = quality.filtered_checks(input_documents, kept, list(dropped.items()), dropped_parts, languages, overrides)
    return {"input_documents": input_documents, "documents": count_rows(kept), "dropped": dropped,
            "filter_counts": rows, "checks": outcomes_as_rows(checks)}


def record(env: StageEnv, source: str, snapshot: str, stats: dict, profile: dict, drift_score: float,
           scanned: dict) -> dict:
    """Each dropped document's fate (by which filter, with what was measured), the filters' counts
    (`scanned`: `scan_partition`'s result), the stage's numbers and the snapshot's drift profile;
    returns what the UI shows of them."""
    drops = dropped_files(env, source, snapshot)
    with env.connect() as con:
        per_filter = catalog.record_filtered(con, source, snapshot, kept_files(env, source, snapshot), drops,
                                             (scanned["dropped"], scanned["filter_counts"]))
        catalog.record_stats(con, FILTERED, partition_key(source, snapshot), stats)
        catalog.record_profile(con, source, snapshot, profile, drift_score)
        return {
            "per_filter": per_filter,
            **catalog.filtered_report(con, source, snapshot),
            "samples": catalog.dropped_samples(con, drops, per_filter=SAMPLES_PER_FILTER),
            "drift_history": catalog.drift_history(con, source),
        }


def dropped_files(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> dict[str, list[str]]:
    return {name: list_parts(layout.dropped_dir(env.root, source, snapshot, name)) for name in dropping_steps(env.recipe, source)}


def kept_files(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> list[str]:
    return list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, source, snapshot))
