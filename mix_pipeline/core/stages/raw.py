"""The `raw` stage: one snapshot of a source's input files, normalised to id, text, source,
domain and metadata (core/io/readers.py); unreadable records quarantined with a reason, later records
reusing an id quarantined as `duplicate_id`, documents named by a removal request set aside. The
partition is checked, sealed and published whole, then recorded in the catalog."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document

from mix_pipeline import layout
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.io.documents import (
    DOCUMENT_SCHEMA,
    document_row,
    drop_rows,
    list_parts,
    normalise_shard_names,
    parquet_writer,
    publish_dir,
    scratch_connection,
    sql_file_list,
    staging_dir,
)
from mix_pipeline.core.io.integrity import seal
from mix_pipeline.core.provenance.forget import partition_removals, set_aside_removed
from mix_pipeline.core.io.readers import DUPLICATE_ID, SNIPPET_CHARS, SourceReader
from mix_pipeline.core.stages.base import (
    StageEnv,
    StageResult,
    count_rows,
    gate,
    outcomes_as_rows,
    outcomes_from_rows,
    scratch_in_data_root,
)
from mix_pipeline.names import DEFAULT_SNAPSHOT, RAW, partition_key
from mix_pipeline.recipe import RecipeError
from mix_pipeline.recipe.inputs import source_files, source_root
from mix_pipeline.recipe.paths import check_file_name, check_inside


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
    parts = sql_file_list(raw_parts)
    with scratch_connection() as con:
        if not con.execute(f"SELECT count(*) - count(DISTINCT id) FROM read_parquet({parts})").fetchone()[0]:
            return 0
        members = _duplicate_members(con, parts, files, root)
        renames, later = _later_records(con, parts, members)
    later.sort(key=lambda m: m[7])  # input order
    by_shard, rows = _quarantine_records(later, source, domain)
    for shard in sorted(set(by_shard) | set(renames)):
        drop_rows(shard, by_shard.get(shard, set()), renames.get(shard))
    if rows:
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA),
                       os.path.join(quarantine_dir, f"part-{next_part:05d}.parquet"), compression="zstd")
    return len(rows)


def _duplicate_members(con, parts: str, files: list[str], root: str) -> list[tuple]:
    """Every record whose id another record has too, in input order: (id, shard, shard_row, file,
    line, snippet, generated)."""
    con.execute("CREATE TEMP TABLE file_order (file VARCHAR, pos BIGINT)")
    con.executemany("INSERT INTO file_order VALUES (?, ?)", [[os.path.relpath(f, root), i] for i, f in enumerate(files)])
    return con.execute(
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


def _later_records(con, parts: str, members: list[tuple]) -> tuple[dict[str, dict[int, str]], list[tuple]]:
    """Group the members by id: ({shard: {row: new id}} of the generated ids to rename, and every
    record after the first of its id, each with its input position and the first's file and line)."""
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
                renames.setdefault(m[1], {})[m[2]] = _free_id(con, parts, doc_id)
            group = explicit
        first = group[0]
        later += [m + (first[3], first[4]) for m in group[1:]]
    return renames, later


def _free_id(con, parts: str, doc_id: str) -> str:
    """The first `<doc_id>#<n>` (n from 1) that no record of the partition has."""
    n = 1
    while con.execute(f"SELECT count(*) FROM read_parquet({parts}) WHERE id = ?",
                      [f"{doc_id}#{n}"]).fetchone()[0]:
        n += 1
    return f"{doc_id}#{n}"


def _quarantine_records(later: list[tuple], source: str, domain: str) -> tuple[dict[str, set[int]], list[dict]]:
    """The rows to drop from each shard ({shard: rows}) and the quarantine records of the later copies."""
    by_shard: dict[str, set[int]] = {}
    rows = []
    for doc_id, shard, shard_row, file, line, snippet, _, _, first_file, first_line in later:
        by_shard.setdefault(shard, set()).add(shard_row)
        shown = doc_id if len(doc_id) <= 200 else doc_id[:200] + "…"
        rows.append(document_row(Document(text=snippet, id=f"{file}:{line}", metadata={
            "source": source, "domain": domain, "file": file, "line": line, "reason": DUPLICATE_ID,
            "detail": f"id '{shown}' first seen at {first_file}:{first_line}",
        })))
    return by_shard, rows


@scratch_in_data_root
def run_raw(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    recipe, spec = env.recipe, env.recipe.sources[source]
    key = partition_key(source, snapshot)
    files = source_files(recipe, source, snapshot)
    if not files:
        where = f" for snapshot '{snapshot}'" if recipe.has_snapshots(source) else ""
        raise RecipeError(
            f"source '{source}': path '{spec.path}' matches no file{where} (resolved to {recipe.resolve(spec.path)})"
        )
    for f in files:  # a symlink that appeared since the recipe was validated
        check_inside(recipe, f"sources.{source}.path", f, f"source '{source}'")
        check_file_name(f"sources.{source}.path", f, f"source '{source}'")
    raw_final = layout.partition_dir(env.root, layout.RAW_DIR, source, snapshot)
    quarantine_final = layout.partition_dir(env.root, layout.QUARANTINE_DIR, source, snapshot)
    raw_tmp, quarantine_tmp = staging_dir(raw_final), staging_dir(quarantine_final)
    env.log(f"raw[{key}]: reading {len(files)} file(s) as {spec.format}")
    reader = SourceReader(
        files=files,
        root=source_root(recipe, source, snapshot),
        source=source,
        domain=recipe.domain_of(source),
        fmt=spec.format,
        text_field=spec.text_field,
        id_field=spec.id_field,
        quarantine_writer=parquet_writer(quarantine_tmp),
        max_document_bytes=spec.max_document_bytes,
    )
    env.runner([reader, parquet_writer(raw_tmp)], env.logging_dir(RAW, source, snapshot), env.tasks_for(len(files)))
    raw_parts = normalise_shard_names(raw_tmp)
    quarantine_parts = normalise_shard_names(quarantine_tmp)
    duplicates = quarantine_duplicate_ids(raw_parts, quarantine_tmp, len(quarantine_parts), files, reader.root,
                                          source, recipe.domain_of(source))
    if duplicates:
        quarantine_parts = list_parts(quarantine_tmp)
        env.log(f"raw[{key}]: {duplicates} record(s) reuse an earlier record's id: quarantined as duplicate_id")
    # Removal requests (core/provenance/forget.py): set aside in a quarantine shard of their own, which
    # the quarantine-rate check does not count.
    unread = quarantine_parts
    removed = set_aside_removed(raw_parts, quarantine_tmp, len(quarantine_parts),
                                partition_removals(env.root, source, snapshot), source, recipe.domain_of(source))
    if removed:
        quarantine_parts = list_parts(quarantine_tmp)
        env.log(f"raw[{key}]: {removed} document(s) set aside on removal requests")
    scanned = env.scan((RAW, source, snapshot), f"{__name__}.scan_partition", raw_parts=raw_parts, unread=unread,
                       quarantine_parts=quarantine_parts, overrides=spec.checks)
    stats = {"input_files": len(files), "documents": scanned["documents"], "quarantined": scanned["quarantined"],
             "duplicate_ids": duplicates, "removed": removed}
    stats["records"] = stats["documents"] + stats["quarantined"] + removed
    env.log(f"raw[{key}]: {stats['documents']} documents, {stats['quarantined']} quarantined")
    checks = outcomes_from_rows(scanned["checks"])
    gate(f"{RAW}[{key}]", checks, [raw_tmp, quarantine_tmp])
    seal(raw_tmp)
    seal(quarantine_tmp)
    publish_dir(raw_tmp, raw_final)
    publish_dir(quarantine_tmp, quarantine_final)
    return StageResult(stats, checks, report=record(env, source, snapshot, stats, scanned["record_counts"]))


def scan_partition(raw_parts: list[str], unread: list[str], quarantine_parts: list[str], overrides: dict) -> dict:
    """The staged partition's queries over every document, run as an executor task (`env.scan`)
    so that the driver's memory does not grow with the partition: its documents and unread
    records (`unread`: the quarantine shards but the removal requests'), its checks (as rows) and
    the counts `catalog.record_raw` records."""
    with scratch_connection() as con:
        record_counts = catalog.raw_counts(con, raw_parts, quarantine_parts)
    return {"documents": count_rows(raw_parts), "quarantined": count_rows(unread), "record_counts": record_counts,
            "checks": outcomes_as_rows(quality.raw_checks(raw_parts, unread, overrides))}


def record(env: StageEnv, source: str, snapshot: str, stats: dict, counted: dict[str, int]) -> dict:
    """Every record's fate (kept for now, or quarantined and why) and the stage's numbers
    (`counted`: `catalog.raw_counts` of the partition, by `scan_partition`); returns the quarantine
    reasons for the report."""
    with env.connect() as con:
        catalog.record_raw(con, source, snapshot,
                           list_parts(layout.partition_dir(env.root, layout.RAW_DIR, source, snapshot)),
                           list_parts(layout.partition_dir(env.root, layout.QUARANTINE_DIR, source, snapshot)),
                           counted)
        catalog.record_stats(con, RAW, partition_key(source, snapshot), stats)
        reasons = con.execute(
            f"""SELECT reason, count(*) AS records FROM document_fates
               WHERE stage = '{RAW}' AND source = ? AND snapshot = ? GROUP BY reason ORDER BY records DESC, reason""",
            [source, snapshot],
        ).fetchall()
    return {"quarantine_reasons": [{"reason": r, "records": n} for r, n in reasons]}
