"""The stages as plain functions: read → filter → dedup index → deduplicate → mix.

Each function runs its datatrove pipeline through the `runner` it is given (local processes by
default; the Dagster layer passes the configured executor), writes into a hidden staging folder
and publishes the whole partition at the end, then returns the numbers the catalog and the UI
show. Nothing here imports Dagster.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline.core import catalog, drift, quality, quality_model
from mix_pipeline.core import logs as _datatrove_logs  # noqa: F401  (quiet datatrove's terminal echo)
from mix_pipeline.core.comparison import read_manifests, write_comparison
from mix_pipeline.core.decontamination import Decontaminator
from mix_pipeline.core.dedup import EMPTY_STATS, ShardSignatures, dedup_generation
from mix_pipeline.core.documents import (
    DEDUPLICATED_SCHEMA,
    DOCUMENT_SCHEMA,
    document_row,
    duckdb_scratch,
    file_sha256,
    list_parts,
    normalise_shard_names,
    parquet_writer,
    partition_dir,
    publish_dir,
    scratch_connection,
    sql_file_list,
    staging_dir,
)
from mix_pipeline.core.exports import TOKENIZED_DIR, read_idx, tokenized_prefix, write_exports
from mix_pipeline.core.faults import crash_point
from mix_pipeline.core.filters import build_filter, is_dropping, pii_kinds
from mix_pipeline.core.integrity import require_intact, seal
from mix_pipeline.core.licenses import license_shares, restrict_licenses
from mix_pipeline.core.mixing import (
    SPLITS,
    InfeasibleMixture,
    build_manifest,
    load_pool,
    manifest_text,
    output_digest,
    plan_mixture,
    read_survivors,
    write_mixture,
)
from mix_pipeline.core.provenance import partition_removals, set_aside_removed
from mix_pipeline.core.quality import CheckOutcome, GateFailed
from mix_pipeline.core.readers import SourceReader
from mix_pipeline.core.tokens import TokenCounter
from mix_pipeline.names import DECONTAMINATION, DEDUPLICATED, DEFAULT_SNAPSHOT, FATE_DUPLICATE, FILTERED, RAW
from mix_pipeline.recipe import Recipe, RecipeError, check_file_name

# (pipeline, logging_dir, tasks) → None
PipelineRunner = Callable[[list, str, int], None]


# What every worker of ours needs: imported (and warmed) once in datatrove's forkserver, which
# forks each pool worker with it already loaded instead of every worker of every stage importing
# datatrove, pyarrow, DuckDB, spaCy and loading the language-ID model again.
WORKER_PRELOAD = ("__main__", "mix_pipeline.core.worker_preload")


def preload_workers() -> None:
    """Ask datatrove's forkserver (`multiprocess`, start method "forkserver") to preload
    WORKER_PRELOAD. Takes effect when the forkserver starts, i.e. before this process's first
    pool; later calls change nothing. `__main__` stays first, as multiprocessing's default."""
    import multiprocess

    multiprocess.get_context("forkserver").set_forkserver_preload(list(WORKER_PRELOAD))


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


def _gate(stage: str, checks: list[CheckOutcome], staged: list[str]) -> None:
    """Discard the staged output and raise if an error-severity check failed."""
    if any(c.blocks for c in checks):
        for path in staged:
            shutil.rmtree(path, ignore_errors=True)
        raise GateFailed(stage, checks)


@dataclass
class StageEnv:
    recipe: Recipe
    runner: PipelineRunner = field(default_factory=local_runner)
    log: Callable[[str], None] = print

    @property
    def root(self) -> str:
        return self.recipe.data_root_path

    def dir(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def logging_dir(self, *parts: str) -> str:
        path = self.dir("_work", "logs", *parts)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def tasks_for(self, n_inputs: int) -> int:
        return max(1, min(self.recipe.executor.tasks, n_inputs))


class ShardReader(PipelineStep):
    """Reads our own Parquet shards back into Documents (rank r reads files[r::N])."""

    type = "📖 - READER"
    name = "📒 Stage shards"

    def __init__(self, files: list[str], batch_size: int = 1000):
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


def _scratch_in_data_root(stage: Callable) -> Callable:
    """Run a stage with DuckDB's spill folder under its data_root (see documents.duckdb_scratch)."""

    @functools.wraps(stage)
    def run(env: StageEnv, *args, **kwargs):
        with duckdb_scratch(env.dir("_work", "duckdb")):
            return stage(env, *args, **kwargs)

    return run


def _rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ---- raw ---------------------------------------------------------------------------------
def quarantine_duplicate_ids(raw_parts: list[str], quarantine_dir: str, next_part: int, files: list[str], root: str,
                             source: str, domain: str) -> int:
    """Keep the first record of every id within a partition, quarantine the later ones (`duplicate_id`).

    First means input order: the source's (sorted) file list, then the line or row within a file,
    whichever task read it. The later records are removed from the staged shards they are in
    (rewritten in place, streaming) and written as one more quarantine shard, ordered the same way,
    so the partition stays deterministic and byte-identical across reruns and worker counts.
    A record whose generated id (`<file>:<line>`, it had none) another record names explicitly is
    renamed `<file>:<line>#<n>`, not quarantined: they are two documents. Returns how many were
    quarantined; 0 (the usual case) costs one count over the ids.
    """
    if not raw_parts:
        return 0
    from mix_pipeline.core.readers import DUPLICATE_ID, SNIPPET_CHARS

    parts = sql_file_list(raw_parts)
    with scratch_connection() as con:
        if not con.execute(f"SELECT count(*) - count(DISTINCT id) FROM read_parquet({parts})").fetchone()[0]:
            return 0
        con.execute("CREATE TEMP TABLE file_order (file VARCHAR, pos BIGINT)")
        con.executemany("INSERT INTO file_order VALUES (?, ?)", [[os.path.relpath(f, root), i] for i, f in enumerate(files)])
        members = con.execute(
            f"""WITH docs AS (
                    SELECT id, text, metadata, filename AS shard, file_row_number AS shard_row
                    FROM read_parquet({parts}, filename = true, file_row_number = true)),
                dup AS (SELECT id FROM docs GROUP BY id HAVING count(*) > 1),
                d AS (SELECT docs.*, json_extract_string(metadata, '$.file') AS file,
                             CAST(json_extract(metadata, '$.line') AS BIGINT) AS line
                      FROM docs SEMI JOIN dup USING (id))
                SELECT id, shard, shard_row, file, line, left(text, {SNIPPET_CHARS}) AS snippet,
                       id = file || ':' || line AS generated
                FROM d JOIN file_order USING (file)
                ORDER BY pos, line, shard, shard_row"""
        ).fetchall()
        groups: dict[str, list[tuple]] = {}
        for order, m in enumerate(members):
            groups.setdefault(m[0], []).append(m + (order,))
        # A record without an id got `<file>:<line>`; another record naming that same id explicitly
        # is a different document, not a duplicate: the generated one takes the next free
        # `<file>:<line>#<n>` instead of being quarantined.
        renames: dict[str, dict[int, str]] = {}
        later = []
        for doc_id, group in groups.items():
            generated = [m for m in group if m[6]]
            explicit = [m for m in group if not m[6]]
            if generated and explicit:
                for m in generated:
                    n = 1
                    while con.execute(f"SELECT count(*) FROM read_parquet({parts}) WHERE id = ?",
                                      [f"{doc_id}#{n}"]).fetchone()[0]:
                        n += 1
                    renames.setdefault(m[1], {})[m[2]] = f"{doc_id}#{n}"
                group = explicit
            first = group[0]
            later += [m + (first[3], first[4]) for m in group[1:]]
    later.sort(key=lambda m: m[7])  # input order
    by_shard: dict[str, set[int]] = {}
    rows = []
    for doc_id, shard, shard_row, file, line, snippet, _, _, first_file, first_line in later:
        by_shard.setdefault(shard, set()).add(shard_row)
        shown = doc_id if len(doc_id) <= 200 else doc_id[:200] + "…"
        rows.append(document_row(Document(text=snippet, id=f"{file}:{line}", metadata={
            "source": source, "domain": domain, "file": file, "line": line, "reason": DUPLICATE_ID,
            "detail": f"id '{shown}' first seen at {first_file}:{first_line}",
        })))
    for shard in sorted(set(by_shard) | set(renames)):
        _drop_rows(shard, by_shard.get(shard, set()), renames.get(shard))
    if rows:
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA),
                       os.path.join(quarantine_dir, f"part-{next_part:05d}.parquet"), compression="zstd")
    return len(rows)


def _drop_rows(path: str, drop: set[int], rename: dict[int, str] | None = None) -> None:
    """Rewrite one Parquet shard without the rows at `drop` (0-based), and with the ids of the rows
    at `rename` replaced, one batch at a time."""
    source = pq.ParquetFile(path)
    tmp = path + ".rewrite"
    offset = 0
    with pq.ParquetWriter(tmp, source.schema_arrow, compression="zstd") as out:
        for batch in source.iter_batches(batch_size=1000):
            if rename and any(offset + i in rename for i in range(batch.num_rows)):
                ids = [rename.get(offset + i, v) for i, v in enumerate(batch.column("id").to_pylist())]
                columns = [pa.array(ids, pa.string()) if n == "id" else batch.column(n) for n in batch.schema.names]
                batch = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
            keep = [offset + i not in drop for i in range(batch.num_rows)]
            offset += batch.num_rows
            out.write_batch(batch.filter(pa.array(keep)))
    source.close()
    os.replace(tmp, path)


@_scratch_in_data_root
def run_raw(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    recipe, spec = env.recipe, env.recipe.sources[source]
    files = recipe.source_files(source, snapshot)
    if not files:
        where = f" for snapshot '{snapshot}'" if recipe.has_snapshots(source) else ""
        raise RecipeError(
            f"source '{source}': path '{spec.path}' matches no file{where} (resolved to {recipe.resolve(spec.path)})"
        )
    for f in files:  # a symlink that appeared since the recipe was validated
        recipe.check_inside(f"sources.{source}.path", f, f"source '{source}'")
        check_file_name(f"sources.{source}.path", f, f"source '{source}'")
    raw_final = partition_dir(env.root, "raw", source, snapshot)
    quarantine_final = partition_dir(env.root, "quarantine", source, snapshot)
    raw_tmp, quarantine_tmp = staging_dir(raw_final), staging_dir(quarantine_final)
    env.log(f"raw[{source}|{snapshot}]: reading {len(files)} file(s) as {spec.format}")
    reader = SourceReader(
        files=files,
        root=recipe.source_root(source, snapshot),
        source=source,
        domain=recipe.domain_of(source),
        fmt=spec.format,
        text_field=spec.text_field,
        id_field=spec.id_field,
        quarantine_writer=parquet_writer(quarantine_tmp),
        max_document_bytes=spec.max_document_bytes,
    )
    env.runner([reader, parquet_writer(raw_tmp)], env.logging_dir("raw", source, snapshot), env.tasks_for(len(files)))
    raw_parts = normalise_shard_names(raw_tmp)
    quarantine_parts = normalise_shard_names(quarantine_tmp)
    duplicates = quarantine_duplicate_ids(raw_parts, quarantine_tmp, len(quarantine_parts), files, reader.root,
                                          source, recipe.domain_of(source))
    if duplicates:
        quarantine_parts = list_parts(quarantine_tmp)
        env.log(f"raw[{source}|{snapshot}]: {duplicates} record(s) reuse an earlier record's id: quarantined as duplicate_id")
    # Removal requests (core/provenance.py): set aside in a quarantine shard of their own, which
    # the quarantine-rate check does not count.
    unread = quarantine_parts
    removed = set_aside_removed(raw_parts, quarantine_tmp, len(quarantine_parts),
                                partition_removals(env.root, source, snapshot), source, recipe.domain_of(source))
    if removed:
        quarantine_parts = list_parts(quarantine_tmp)
        env.log(f"raw[{source}|{snapshot}]: {removed} document(s) set aside on removal requests")
    stats = {"input_files": len(files), "documents": _rows(raw_parts), "quarantined": _rows(unread),
             "duplicate_ids": duplicates, "removed": removed}
    stats["records"] = stats["documents"] + stats["quarantined"] + removed
    env.log(f"raw[{source}|{snapshot}]: {stats['documents']} documents, {stats['quarantined']} quarantined")
    checks = quality.raw_checks(raw_parts, unread, spec.checks)
    _gate(f"raw_documents[{source}|{snapshot}]", checks, [raw_tmp, quarantine_tmp])
    seal(raw_tmp)
    seal(quarantine_tmp)
    publish_dir(raw_tmp, raw_final)
    publish_dir(quarantine_tmp, quarantine_final)
    return StageResult(stats, checks)


# ---- filtered ----------------------------------------------------------------------------
def dropping_steps(recipe: Recipe, source: str) -> list[str]:
    """The names drops are attributed to, in pipeline order: decontamination (when the recipe
    asks for it) runs first, so contamination is counted whatever the other filters would say,
    and in `remove_span` mode the filters judge the text that is left."""
    first = [DECONTAMINATION] if recipe.decontamination is not None else []
    return first + [f.name for f in recipe.sources[source].filters if is_dropping(f.name)]


def _filter_count_stats(rows: list[dict]) -> dict[str, float]:
    """Flat numbers for stage_stats and the UI's plots; the catalog keeps the full rows."""
    stats: dict[str, float] = {}
    classified = sum(r["documents"] for r in rows if r["filter"] == "language")
    for r in rows:
        if r["filter"] == "language":
            stats[f"language_share_{r['kind']}"] = round(r["documents"] / classified, 6)
        elif r["filter"] == "pii":
            stats[f"pii_{r['kind']}"] = r["matches"]
        elif r["filter"] == "safety":
            stats["safety_flagged_documents"] = r["documents"]
            stats["safety_flagged_words"] = r["matches"]
        elif r["filter"] == DECONTAMINATION:
            stats[f"contaminated_{r['kind']}"] = r["documents"]
    return stats


@_scratch_in_data_root
def run_filtered(
    env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT, profiles: dict[str, dict] | None = None
) -> StageResult:
    """`profiles` maps the source's other snapshots to their stored profiles (for drift)."""
    recipe = env.recipe
    spec = recipe.sources[source]
    require_intact(env.root, RAW, source, snapshot)
    inputs = list_parts(partition_dir(env.root, "raw", source, snapshot))
    out_final = partition_dir(env.root, "filtered", source, snapshot)
    dropped_final = partition_dir(env.root, "dropped", source, snapshot)
    out_tmp, dropped_tmp = staging_dir(out_final), staging_dir(dropped_final)
    steps: list = [ShardReader(inputs)]
    if (decont := recipe.decontamination) is not None:
        steps.append(Decontaminator(
            recipe.eval_set_files(), decont.ngram, decont.mode, decont.text_fields,
            exclusion_writer=parquet_writer(os.path.join(dropped_tmp, DECONTAMINATION)),
        ))
    for f in spec.filters:
        writer = parquet_writer(os.path.join(dropped_tmp, f.name)) if is_dropping(f.name) else None
        steps.append(build_filter(f.name, f.params, exclusion_writer=writer, resolve=recipe.resolve))
    steps.append(parquet_writer(out_tmp))
    names = dropping_steps(recipe, source)
    env.log(f"filtered[{source}|{snapshot}]: {len(inputs)} shard(s) through {names or 'no filters'}")
    if inputs:
        env.runner(steps, env.logging_dir("filtered", source, snapshot), env.tasks_for(len(inputs)))
    kept = normalise_shard_names(out_tmp)
    dropped, dropped_parts = {}, {}
    for name in names:
        folder = os.path.join(dropped_tmp, name)
        dropped_parts[name] = normalise_shard_names(folder) if os.path.isdir(folder) else []
        dropped[name] = _rows(dropped_parts[name])
    stats = {"input_documents": _rows(inputs), "documents": _rows(kept), "dropped": sum(dropped.values())}
    stats.update({f"dropped_by_{name}": n for name, n in dropped.items()})
    with scratch_connection() as con:
        stats.update(_filter_count_stats(catalog.filter_counts(con, kept + [p for ps in dropped_parts.values() for p in ps])))
    env.log(f"filtered[{source}|{snapshot}]: kept {stats['documents']} of {stats['input_documents']}, dropped {dropped}")
    language = next((f for f in spec.filters if f.name == "language"), None)
    checks = quality.filtered_checks(
        stats["input_documents"],
        kept,
        list(dropped.items()),
        dropped_parts,
        language.params.get("languages", ["en"]) if language else None,
        spec.checks,
    )
    current = drift.profile(kept, stats["input_documents"], dropped, [p for ps in dropped_parts.values() for p in ps])
    refs = drift.references(snapshot, {k: v for k, v in (profiles or {}).items() if k != snapshot}, snapshot_order)
    checks.append(quality.drift_check(current, refs, spec.checks))
    _gate(f"filtered_documents[{source}|{snapshot}]", checks, [out_tmp, dropped_tmp])
    seal(out_tmp)
    seal(dropped_tmp)
    publish_dir(out_tmp, out_final)
    publish_dir(dropped_tmp, dropped_final)
    return StageResult(stats, checks, profile=current)


def dropped_files(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> dict[str, list[str]]:
    base = partition_dir(env.root, "dropped", source, snapshot)
    return {name: list_parts(os.path.join(base, name)) for name in dropping_steps(env.recipe, source)}


def kept_files(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> list[str]:
    return list_parts(partition_dir(env.root, "filtered", source, snapshot))


# ---- dedup index -------------------------------------------------------------------------
DEDUP_STATE = "state.json"


def clusters_file(env: StageEnv, source: str, snapshot: str) -> str:
    return env.dir("dedup_index", "clusters", source, f"{snapshot}.parquet")


def cluster_files(env: StageEnv) -> list[str]:
    return sorted(glob.glob(env.dir("dedup_index", "clusters", "*", "*.parquet")))


def snapshot_order(snapshot: str) -> tuple[bool, str]:
    """Generations run `default` first (sources without dated drops), then snapshots by name."""
    return (snapshot != DEFAULT_SNAPSHOT, snapshot)


def filtered_partitions(env: StageEnv) -> list[tuple[str, str]]:
    """(source, snapshot) of every published filtered partition of the recipe's sources."""
    out = []
    for source in sorted(env.recipe.sources):
        folder = env.dir("filtered", source)
        if os.path.isdir(folder):
            out += [(source, s) for s in sorted(os.listdir(folder)) if not s.startswith(".")]
    return out


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


@_scratch_in_data_root
def run_dedup_index(env: StageEnv) -> StageResult:
    """Incremental dedup: generations (snapshots) in order, each against what earlier ones kept.

    Generations whose filtered input and settings are unchanged since the last build are
    reused as they are; from the first changed one on, everything is recomputed (a later
    generation was compared against the earlier ones' keepers). Signatures of unchanged
    partitions are reused even then.
    """
    recipe = env.recipe
    dd, mh = recipe.dedup, recipe.dedup.minhash
    config = {
        "exact": dd.exact,
        "minhash": mh.model_dump() if mh else None,
        "ranks": {s: recipe.priority_rank(s) for s in sorted(recipe.sources)},
    }
    by_snapshot: dict[str, list[tuple[str, str]]] = {}
    for source, snapshot in filtered_partitions(env):
        require_intact(env.root, FILTERED, source, snapshot)
        parts = list_parts(partition_dir(env.root, "filtered", source, snapshot))
        by_snapshot.setdefault(snapshot, []).append((source, partition_fingerprint(parts)))
    current = [{"snapshot": s, "partitions": by_snapshot[s]} for s in sorted(by_snapshot, key=snapshot_order)]
    final = env.dir("dedup_index")
    previous = {}
    if os.path.exists(os.path.join(final, DEDUP_STATE)):
        with open(os.path.join(final, DEDUP_STATE)) as f:
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
    known_signatures = {(src, g["snapshot"], fp) for g in old_generations for src, fp in g["partitions"]}

    tmp = staging_dir(final)
    for gen in current[:reuse]:
        for source, _ in gen["partitions"]:
            for kind in ("clusters", "index"):
                _link_tree(os.path.join(final, kind, source, f"{gen['snapshot']}.parquet"),
                           os.path.join(tmp, kind, source, f"{gen['snapshot']}.parquet"))
            _link_tree(os.path.join(final, "signatures", source, gen["snapshot"]),
                       os.path.join(tmp, "signatures", source, gen["snapshot"]))
    if reuse:
        env.log(f"dedup_index: reusing {reuse} unchanged generation(s), recomputing {len(current) - reuse}")
    ranks = config["ranks"]
    stats = EMPTY_STATS
    for gen in current[reuse:]:
        snapshot = gen["snapshot"]
        outputs: dict[str, str] = {}
        shards: list[tuple[str, str]] = []
        for source, fingerprint in gen["partitions"]:
            out = os.path.join(tmp, "signatures", source, snapshot)
            outputs[source] = out
            if (source, snapshot, fingerprint) in known_signatures:
                _link_tree(os.path.join(final, "signatures", source, snapshot), out)
            else:
                shards += [(source, p) for p in list_parts(partition_dir(env.root, "filtered", source, snapshot))]
        if shards:
            # One launch for every source of the generation; see signature_tasks for how many tasks.
            tasks = signature_tasks(env, [p for _, p in shards])
            env.log(f"dedup_index: signatures of {len(shards)} shard(s) of {snapshot} "
                    f"({', '.join(sorted({s for s, _ in shards}))}) in {tasks} task(s)")
            step = ShardSignatures(
                shards, {s: outputs[s] for s, _ in shards}, num_perm=mh.num_perm if mh else 16,
                bands=mh.bands if mh else 1, ngram=mh.ngram if mh else 5, seed=mh.seed if mh else 1,
            )
            env.runner([step], env.logging_dir("dedup_index", snapshot), tasks)
        sig_files: list[str] = []
        for out in outputs.values():
            if os.path.isdir(out):
                sig_files += sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".parquet"))
        if not sig_files:
            continue
        index_files = sorted(glob.glob(os.path.join(tmp, "index", "*", "*.parquet")))
        stats = stats + dedup_generation(
            snapshot, sig_files, index_files, ranks,
            clusters_dir=os.path.join(tmp, "clusters"), index_dir=os.path.join(tmp, "index"),
            threshold=mh.threshold if mh else None, exact=dd.exact, remove=dd.remove,
            duckdb_temp_dir=env.dir("_work", "duckdb"), log=env.log,
        )
        crash_point("dedup.generation")
    with open(os.path.join(tmp, DEDUP_STATE), "w") as f:
        json.dump({"config": config, "generations": current}, f, indent=2, sort_keys=True)
    checks = quality.dedup_index_checks(sorted(glob.glob(os.path.join(tmp, "clusters", "*", "*.parquet"))), dd.checks)
    _gate("dedup_index", checks, [tmp])
    publish_dir(tmp, final)
    result = asdict(stats) | {"generations": len(current), "reused_generations": reuse}
    return StageResult(result, checks)


# ---- deduplicated ------------------------------------------------------------------------
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
    for rank in range(tasks) if ranks is None else ranks:  # issue 14: `ranks`, one Ray task's share
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


@_scratch_in_data_root
def run_deduplicated(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    recipe = env.recipe
    require_intact(env.root, FILTERED, source, snapshot)
    inputs = list_parts(partition_dir(env.root, "filtered", source, snapshot))
    clusters = clusters_file(env, source, snapshot)
    indexed = pq.read_metadata(clusters).num_rows if os.path.exists(clusters) else 0
    if indexed != _rows(inputs):
        raise StaleDedupIndex(
            f"dedup_index lists {indexed} documents of {source}|{snapshot} but filtered_documents has "
            f"{_rows(inputs)}: materialize dedup_index again before deduplicated_documents"
        )
    final = partition_dir(env.root, "deduplicated", source, snapshot)
    tmp = staging_dir(final)
    tok = recipe.tokenizer
    if inputs:
        counter = TokenCounter(tok.kind, recipe.resolve(tok.path) if tok.path else None)
        if getattr(env.runner, "distributed", False):  # issue 14: one cluster task per output rank
            from mix_pipeline.core.executors import DeduplicateRanks

            env.runner([DeduplicateRanks(inputs, clusters, tmp, env.tasks_for(len(inputs)), counter)],
                       env.logging_dir("deduplicated", source, snapshot), env.tasks_for(len(inputs)))
        else:
            write_deduplicated(inputs, clusters, tmp, env.tasks_for(len(inputs)), counter)
    parts = normalise_shard_names(tmp)
    tokens = sum(int(pc.sum(pq.read_table(p, columns=["n_tokens"])["n_tokens"]).as_py() or 0) for p in parts)
    stats = {"input_documents": _rows(inputs), "documents": _rows(parts), "tokens": tokens}
    stats["duplicates"] = stats["input_documents"] - stats["documents"]
    env.log(f"deduplicated[{source}|{snapshot}]: kept {stats['documents']} of {stats['input_documents']} ({tokens} tokens)")
    checks = quality.deduplicated_checks(stats["input_documents"], stats["documents"], recipe.sources[source].checks)
    _gate(f"deduplicated_documents[{source}|{snapshot}]", checks, [tmp])
    seal(tmp)
    publish_dir(tmp, final)
    return StageResult(stats, checks)


# ---- mixture -----------------------------------------------------------------------------
def mixture_dir(env: StageEnv, name: str) -> str:
    return env.dir("mixtures", name)


class SourceRowsReader(PipelineStep):
    """Reads the rows of one source from mixture shards: rank r reads `sources[r]`, in shard order."""

    type = "📖 - READER"
    name = "📒 Mixture rows of one source"

    def __init__(self, files: list[str], sources: list[str]):
        super().__init__()
        self.files = files
        self.sources = sources

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        source = self.sources[rank]
        for path in self.files:
            table = pq.read_table(path, columns=["id", "text", "source"], filters=[("source", "=", source)])
            for batch in table.to_batches(1000):
                for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                    doc = Document(text=text, id=doc_id, metadata={"source": source})
                    self.update_doc_stats(doc)
                    yield doc


def tokenize_splits(env: StageEnv, name: str, out_dir: str, splits: dict[str, dict], sources: list[str]) -> None:
    """Per split, one Megatron indexed dataset per source (datatrove's MegatronDocumentTokenizer with
    the recipe's local tokenizer.json), recorded in `splits[split]["tokenized"]`."""
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer

    tok = env.recipe.tokenizer
    for split in SPLITS:
        info = splits[split]
        present = [s for s in sources if info["sources"][s]["rows"]]
        if not present:
            info["tokenized"] = {}
            continue
        folder = os.path.join(out_dir, TOKENIZED_DIR, split)
        steps = [
            SourceRowsReader([os.path.join(out_dir, f) for f in info["files"]], present),
            MegatronDocumentTokenizer(folder, tokenizer_name_or_path=env.recipe.resolve(tok.path),
                                      eos_token=tok.eos_token),
        ]
        env.runner(steps, env.logging_dir("mixture", name, "tokenize", split), len(present))
        info["tokenized"] = {}
        for rank, source in enumerate(present):
            prefix = tokenized_prefix(split, source)
            for ext in (".bin", ".idx"):
                os.replace(os.path.join(folder, f"{rank:05d}_tokens{ext}"), os.path.join(out_dir, prefix + ext))
            info["tokenized"][source] = {"prefix": prefix, **read_idx(os.path.join(out_dir, prefix + ".idx"))}
        env.log(f"mixture[{name}]: {split}: tokenized {sum(e['tokens'] for e in info['tokenized'].values()):,} tokens")


def deduplicated_files(env: StageEnv, source: str) -> list[str]:
    """Every snapshot's deduplicated shards of a source, in generation order."""
    folder = env.dir("deduplicated", source)
    snapshots = sorted((s for s in os.listdir(folder) if not s.startswith(".")), key=snapshot_order) if os.path.isdir(folder) else []
    for snap in snapshots:
        require_intact(env.root, DEDUPLICATED, source, snap)
    return [p for snap in snapshots for p in list_parts(os.path.join(folder, snap))]


def export_weights(ledger) -> dict[str, float]:
    """Trainers weigh sources by tokens: each source's target weight (in the mixture's unit) times
    the tokens per unit of what it supplied (1 when the unit is tokens)."""
    return {row.source: row.target_weight * (row.tokens / row.units if row.units else 0.0) for row in ledger}


@_scratch_in_data_root
def run_mixture(env: StageEnv, name: str, conservation_rows: list[dict] | None = None) -> StageResult:
    """Plan, write to staging, check, publish. `conservation_rows` come from the catalog."""
    recipe = env.recipe
    spec = recipe.mixtures[name]
    sources = recipe.mixture_sources(name)
    # A quality bucket (`web@high`) draws from its source's documents in the bucket's score range.
    files = quality_model.mixture_files(recipe, name, sources, lambda s: deduplicated_files(env, s), env.dir("_work"))
    base = {s: quality_model.base_source(s) for s in sources}
    # License settings by the `source` column of the rows (a bucket's rows carry its base source).
    license_specs = {base[s]: recipe.sources[base[s]] for s in sources}
    license_filter = None
    if spec.allowed_licenses is not None:
        files, license_filter = restrict_licenses(files, license_specs, spec.allowed_licenses,
                                                  env.dir("_work", "licenses", name))
        env.log(f"mixture[{name}]: allowed_licenses left out {license_filter['excluded_documents']} document(s), "
                f"{license_filter['excluded_tokens']} token(s)")
    pools = {
        s: quality_model.bucket_pool(load_pool(base[s], fs, spec.unit, read_survivors(
            glob.glob(env.dir("dedup_index", "clusters", base[s], "*.parquet")), base[s])), s)
        for s, fs in files.items()
    }
    try:
        plan = plan_mixture(name, spec, pools)
    except InfeasibleMixture as exc:
        # Nothing can be written, whatever the check's configured severity.
        raise GateFailed(
            f"mixture[{name}]",
            [quality.outcome("weights_within_tolerance", "error", False, None, "a feasible plan", str(exc))],
        ) from None
    if plan.rebalanced:
        env.log(f"mixture[{name}]: rebalanced shortfalls {plan.rebalanced} onto the other sources")
    env.log(f"mixture[{name}]: selected {plan.selection.num_rows} rows from {len(files)} source(s)")
    final = mixture_dir(env, name)
    tmp = staging_dir(final)
    chat = sorted({base[s] for s in sources if recipe.sources[base[s]].format == "chat"})
    splits = write_mixture(plan.selection, files, tmp, spec.shard_rows, env.dir("_work", "duckdb"),
                           chat_sources=chat, jsonl=spec.outputs.jsonl, log=env.log)
    if spec.outputs.tokenized:
        tokenize_splits(env, name, tmp, splits, sources)
    tok = recipe.tokenizer
    counter = TokenCounter(tok.kind, recipe.resolve(tok.path) if tok.path else None)
    exports = write_exports(tmp, name, spec.seed, splits, counter.token_dtype,
                            weights=export_weights(plan.ledger), root=final)
    manifest = build_manifest(name, spec, recipe.sha256, counter.description, plan, splits,
                              output_digest(tmp, splits), exports)
    if buckets := quality_model.manifest_buckets(recipe, sources):
        manifest["quality_buckets"] = buckets
    # Additive keys (core/licenses.py): each license's share of the rows written, and what
    # allowed_licenses left out.
    manifest["licenses"] = license_shares([os.path.join(tmp, f) for split in SPLITS for f in splits[split]["files"]],
                                          license_specs, spec.unit)
    if license_filter is not None:
        manifest["license_filter"] = license_filter
    checks = quality.mixture_checks(
        [{"source": s, **row} for s, row in sorted(manifest["sources"].items())],
        {s: spec.max_epochs_of(s) for s in sources},
        spec.tolerance,
        tmp,
        splits,
        {base[s]: pii_kinds(f.params) for s in sources for f in recipe.sources[base[s]].filters if f.name == "pii"},
        [r for r in conservation_rows or [] if r["source"] in base.values()] if conservation_rows is not None else None,
        spec.checks,
    )
    _gate(f"mixture[{name}]", checks, [tmp])
    crash_point("mixture.manifest")
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        f.write(manifest_text(manifest))
    publish_dir(tmp, final)
    shutil.rmtree(env.dir("_work", "licenses", name), ignore_errors=True)
    return StageResult(manifest, checks)


def run_comparison(env: StageEnv) -> dict:
    """comparison.{json,md} over every mixture of the recipe that has been built."""
    folder = env.dir("mixtures")
    manifests, missing = read_manifests(folder, sorted(env.recipe.mixtures))
    doc = write_comparison(folder, manifests, missing)
    env.log(f"comparison: {len(manifests)} mixture(s) in {os.path.join(folder, 'comparison.md')}"
            + (f"; not built: {missing}" if missing else ""))
    return doc
