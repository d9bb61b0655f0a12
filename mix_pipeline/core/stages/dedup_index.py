"""The `dedup_index` stage: exact and MinHash near-duplicate verdicts across every source.

Snapshots are generations, in order (`default` first, then by name): each generation's
signatures (core/dedup/signatures.py `ShardSignatures`, one launch for all its sources) are clustered against
an index of what earlier generations kept, so a document is only ever a duplicate of one that
stays. Unchanged leading generations are reused as they are. Checked, published, recorded."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import asdict

import pyarrow.parquet as pq

from mix_pipeline import layout
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.dedup.generation import EMPTY_STATS, cluster_tasks, dedup_generation
from mix_pipeline.core.dedup.signatures import SHINGLE_HASH, ShardSignatures
from mix_pipeline.core.io.documents import file_sha256, list_parts, publish_dir, staging_dir
from mix_pipeline.core.io.faults import crash_point
from mix_pipeline.core.io.integrity import require_intact
from mix_pipeline.core.provenance.lineage import published_partitions
from mix_pipeline.core.stages.base import StageEnv, StageResult, gate, scratch_in_data_root
from mix_pipeline.names import DEDUP_INDEX, FILTERED, snapshot_order


def filtered_partitions(env: StageEnv) -> list[tuple[str, str]]:
    """(source, snapshot) of every published filtered partition the recipe discovers now: a
    folder of a snapshot it no longer discovers (a changed layout) is never read."""
    return published_partitions(env.recipe, layout.FILTERED_DIR)


def partition_fingerprint(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{os.path.basename(f)}:{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _link_tree(src: str, dst: str) -> None:
    """Hard-link a published file or folder into the staging tree (no copy, same bytes)."""
    if os.path.isdir(src):
        for root, _, names in os.walk(src):
            target = os.path.join(dst, os.path.relpath(root, src))
            os.makedirs(target, exist_ok=True)
            for name in names:
                os.link(os.path.join(root, name), os.path.join(target, name))
    elif os.path.exists(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.link(src, dst)


# Uncompressed text bytes one signature task should hash before another task (another worker
# process) pays off: a pool worker costs about a CPU-second to start (process spawn, imports),
# hashing costs about 0.06 CPU-seconds per MB, so tasks much smaller than this are mostly
# start-up. Below it a generation runs as one task, which LocalPipelineExecutor runs in-process.
SIGNATURE_TASK_TEXT_BYTES = 128 * 2**20


def text_bytes(files: list[str]) -> int:
    """Uncompressed size of the `text` column of Parquet shards, from their footers."""
    total = 0
    for path in files:
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                if group.column(c).path_in_schema == "text":
                    total += group.column(c).total_uncompressed_size
    return total


def signature_tasks(env: StageEnv, files: list[str]) -> int:
    """Tasks for hashing `files`: one per SIGNATURE_TASK_TEXT_BYTES of text, at most the recipe's
    tasks and one per shard. The count only spreads work: verdicts do not depend on it."""
    wanted = -(-text_bytes(files) // SIGNATURE_TASK_TEXT_BYTES)
    return max(1, min(env.tasks_for(len(files)), wanted))


@scratch_in_data_root
def run_dedup_index(env: StageEnv) -> StageResult:
    """Incremental dedup: generations (snapshots) in order, each against what earlier ones kept.

    Generations whose filtered input and settings are unchanged since the last build are
    reused as they are; from the first changed one on, everything is recomputed (a later
    generation was compared against the earlier ones' keepers). Signatures of unchanged
    partitions are reused even then.

    The phases: the generations now (`current_generations`), how many lead unchanged
    (`reusable_generations`, linked into staging by `_link_generation`), then per recomputed
    generation its signatures (`generation_signatures`) and verdicts (core/dedup/generation.py
    `dedup_generation`); then the state file, checks, gate and publish.
    """
    recipe = env.recipe
    dd, mh = recipe.dedup, recipe.dedup.minhash
    config = dedup_config(recipe)
    current = current_generations(env)
    final = layout.dedup_index_dir(env.root)
    reuse, known_signatures = reusable_generations(final, config, current)
    tmp = staging_dir(final)
    for gen in current[:reuse]:
        _link_generation(final, tmp, gen)
    if reuse:
        env.log(f"dedup_index: reusing {reuse} unchanged generation(s), recomputing {len(current) - reuse}")
    stats = EMPTY_STATS
    for gen in current[reuse:]:
        sig_files = generation_signatures(env, gen, final, tmp, known_signatures)
        if not sig_files:
            continue
        index_files = sorted(glob.glob(os.path.join(tmp, "index", "*", "*.parquet")))
        stats = stats + dedup_generation(
            gen["snapshot"], sig_files, index_files, config["ranks"],
            clusters_dir=os.path.join(tmp, "clusters"), index_dir=os.path.join(tmp, "index"),
            threshold=mh.threshold if mh else None, exact=dd.exact, remove=dd.remove,
            duckdb_temp_dir=env.work_dir("duckdb"), log=env.log, runner=env.runner,
            tasks=cluster_tasks(env.recipe.executor.tasks, sig_files),
            logging_dir=env.logging_dir(DEDUP_INDEX, gen["snapshot"], "clusters"),
        )
        crash_point("dedup.generation")
    with open(os.path.join(tmp, layout.DEDUP_STATE_FILE), "w") as f:
        json.dump({"config": config, "generations": current, "verdicts": verdict_digests(tmp, current)},
                  f, indent=2, sort_keys=True)
    checks = quality.dedup_index_checks(sorted(glob.glob(os.path.join(tmp, "clusters", "*", "*.parquet"))), dd.checks)
    gate(DEDUP_INDEX, checks, [tmp])
    publish_dir(tmp, final)
    result = asdict(stats) | {"generations": len(current), "reused_generations": reuse}
    return StageResult(result, checks, report=record(env, result))


def dedup_config(recipe) -> dict:
    """The settings a build's verdicts depend on (a change recomputes every generation)."""
    mh = recipe.dedup.minhash
    return {
        "exact": recipe.dedup.exact,
        "minhash": mh.model_dump() if mh else None,
        "shingle_hash": SHINGLE_HASH if mh else None,
        "ranks": {s: recipe.priority_rank(s) for s in sorted(recipe.sources)},
    }


def current_generations(env: StageEnv) -> list[dict]:
    """The generations now, in order: each snapshot's (source, fingerprint) filtered partitions
    (each checked intact first)."""
    by_snapshot: dict[str, list[tuple[str, str]]] = {}
    for source, snapshot in filtered_partitions(env):
        require_intact(env.root, FILTERED, source, snapshot)
        parts = list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, source, snapshot))
        by_snapshot.setdefault(snapshot, []).append((source, partition_fingerprint(parts)))
    return [{"snapshot": s, "partitions": by_snapshot[s]} for s in sorted(by_snapshot, key=snapshot_order)]


def reusable_generations(final: str, config: dict, current: list[dict]) -> tuple[int, set[tuple[str, str, str]]]:
    """(how many leading generations are unchanged since the published build, the (source,
    snapshot, fingerprint) partitions whose signatures that build holds). Nothing is reusable
    when the settings changed or nothing was published."""
    previous = {}
    if os.path.exists(os.path.join(final, layout.DEDUP_STATE_FILE)):
        with open(os.path.join(final, layout.DEDUP_STATE_FILE)) as f:
            previous = json.load(f)
    same_config = previous.get("config") == json.loads(json.dumps(config))
    old_generations = [
        {"snapshot": g["snapshot"], "partitions": [tuple(p) for p in g["partitions"]]}
        for g in previous.get("generations", [])
    ] if same_config else []
    reuse = 0
    for old, new in zip(old_generations, current):
        if old != new:
            break
        reuse += 1
    return reuse, {(src, g["snapshot"], fp) for g in old_generations for src, fp in g["partitions"]}


def verdict_digests(index_dir: str, generations: list[dict]) -> dict[str, str]:
    """{"source/snapshot": sha256 of its cluster file}: what the planner compares to decide whether
    a deduplicated partition must be rewritten (core/provenance/lineage.py), without hashing the files itself."""
    out = {}
    for gen in generations:
        for source, _ in gen["partitions"]:
            path = os.path.join(index_dir, "clusters", source, f"{gen['snapshot']}.parquet")
            if os.path.exists(path):
                out[f"{source}/{gen['snapshot']}"] = file_sha256(path)
    return out


def _link_generation(final: str, tmp: str, gen: dict) -> None:
    """Hard-link an unchanged generation's clusters, index and signatures into staging."""
    for source, _ in gen["partitions"]:
        for kind in ("clusters", "index"):
            _link_tree(os.path.join(final, kind, source, f"{gen['snapshot']}.parquet"),
                       os.path.join(tmp, kind, source, f"{gen['snapshot']}.parquet"))
        _link_tree(os.path.join(final, "signatures", source, gen["snapshot"]),
                   os.path.join(tmp, "signatures", source, gen["snapshot"]))


def generation_signatures(env: StageEnv, gen: dict, final: str, tmp: str,
                          known_signatures: set[tuple[str, str, str]]) -> list[str]:
    """A recomputed generation's signature files in staging: an unchanged partition's linked from
    the published build, the others' computed in one launch for every source of the generation."""
    mh = env.recipe.dedup.minhash
    snapshot = gen["snapshot"]
    outputs: dict[str, str] = {}
    shards: list[tuple[str, str]] = []
    for source, fingerprint in gen["partitions"]:
        out = os.path.join(tmp, "signatures", source, snapshot)
        outputs[source] = out
        if (source, snapshot, fingerprint) in known_signatures:
            _link_tree(os.path.join(final, "signatures", source, snapshot), out)
        else:
            shards += [(source, p) for p in list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, source, snapshot))]
    if shards:
        # One launch for every source of the generation; see signature_tasks for how many tasks.
        tasks = signature_tasks(env, [p for _, p in shards])
        env.log(f"dedup_index: signatures of {len(shards)} shard(s) of {snapshot} "
                f"({', '.join(sorted({s for s, _ in shards}))}) in {tasks} task(s)")
        step = ShardSignatures(
            shards, {s: outputs[s] for s, _ in shards}, num_perm=mh.num_perm if mh else 16,
            bands=mh.bands if mh else 1, ngram=mh.ngram if mh else 5, seed=mh.seed if mh else 1,
        )
        env.runner([step], env.logging_dir(DEDUP_INDEX, snapshot), tasks)
    sig_files: list[str] = []
    for out in outputs.values():
        if os.path.isdir(out):
            sig_files += sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".parquet"))
    return sig_files


def record(env: StageEnv, stats: dict) -> dict:
    """Every document's dedup verdict (kept, or duplicate of which id) and the stage's numbers;
    returns the per-source counts for the report."""
    with env.connect() as con:
        catalog.record_dedup(con, layout.cluster_files(env.root))
        catalog.record_stats(con, DEDUP_INDEX, "all", stats)
        per_source = con.execute(
            """SELECT source, count(*) FILTER (WHERE fate = 'kept') AS kept,
                      count(*) FILTER (WHERE reason = 'exact') AS exact,
                      count(*) FILTER (WHERE reason = 'near') AS near
               FROM document_fates WHERE stage = 'dedup' GROUP BY source ORDER BY source"""
        ).fetchall()
    return {"per_source": [{"source": s, "kept": k, "exact duplicates": e, "near duplicates": n}
                           for s, k, e, n in per_source]}
