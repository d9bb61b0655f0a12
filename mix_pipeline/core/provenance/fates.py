"""Every document's fate, read in place from the Parquet files the stages publish.

The catalog's `document_fates` is a view, not a table. The files the stages already write hold
every fate: the raw stage's quarantine shards (quarantined and removed documents, the reason in
`metadata`), the filtered stage's dropped shards (one folder per filter, what it measured in
`metadata`) and the dedup index's cluster files (kept or duplicate of which id, one file per
partition, ordered by id). The catalog keeps only which files those are, `fate_files`, one row per
file, and the view reads them with DuckDB's `read_parquet`. Recording a partition replaces its
rows of `fate_files` and re-creates the view (`sync_view`): no fate passes through the driver, so
its memory and the catalog file stay the same size however large the corpus grows.

Paths are kept relative to the catalog's folder (the data root) and the view is written with
absolute ones, re-created whenever either changes, so a data root moved as a whole reads right
again from the next writer's open. A fate file missing on disk (deleted by hand) is skipped
(`allow_empty`): `report` and `trace` still answer, without that file's documents;
`missing_files` names such files, and the integrity seals (core/io/integrity.py) make the next
`mix-pipeline run` rebuild the partition that lost it.
"""

from __future__ import annotations

import hashlib
import os

from mix_pipeline import layout
from mix_pipeline.core.io.documents import list_parts, sql_file_list
from mix_pipeline.core.provenance.forget import REMOVED_REASON
from mix_pipeline.names import (
    FATE_DROPPED,
    FATE_QUARANTINED,
    FATE_REMOVED,
    META_FILTER_REASON,
    META_FILTER_VALUE,
)

# The stages whose files hold fates, as `document_fates.stage` names them.
RAW_STAGE, FILTERED_STAGE, DEDUP_STAGE = "raw", "filtered", "dedup"

FATE_FILES_SCHEMA = """CREATE TABLE IF NOT EXISTS fate_files (
    stage VARCHAR, source VARCHAR, snapshot VARCHAR, filter VARCHAR, path VARCHAR)"""

# The columns each kind of file must yield even when none of its files is on disk any more
# (read_parquet with allow_empty then has no columns to bind the view's expressions to).
_COLUMNS = {
    RAW_STAGE: ("id", "metadata", "filename"),
    FILTERED_STAGE: ("id", "metadata", "filename"),
    DEDUP_STAGE: ("source", "snapshot", "id", "fate", "match", "duplicate_of_source", "duplicate_of"),
}


def catalog_root(con) -> str | None:
    """The folder of the catalog's database file (the data root); None for an in-memory catalog."""
    rows = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    path = rows[0][0] if rows else None
    return os.path.dirname(os.path.abspath(path)) if path else None


def _stored(root: str | None, path: str) -> str:
    """How `fate_files` keeps a path: relative to the catalog's folder when it lies inside it."""
    path = os.path.abspath(path)
    if root and os.path.commonpath([root, path]) == root:
        return os.path.relpath(path, root)
    return path


def replace_files(con, stage: str, source: str, snapshot: str, files: dict[str | None, list[str]]) -> None:
    """Make `files` ({filter or None: paths}) the fate files of one stage's partition. Call inside
    the caller's transaction, then `sync_view`."""
    root = catalog_root(con)
    con.execute("DELETE FROM fate_files WHERE stage = ? AND source = ? AND snapshot = ?", [stage, source, snapshot])
    rows = [[stage, source, snapshot, name, _stored(root, p)] for name, paths in files.items() for p in paths]
    if rows:
        con.executemany("INSERT INTO fate_files VALUES (?, ?, ?, ?, ?)", rows)


def replace_cluster_files(con, cluster_files: list[str]) -> None:
    """Make `cluster_files` (layout.clusters_file: `.../clusters/<source>/<snapshot>.parquet`) the
    dedup stage's fate files, every partition's at once (the index is published as a whole)."""
    root = catalog_root(con)
    con.execute(f"DELETE FROM fate_files WHERE stage = '{DEDUP_STAGE}'")
    rows = [[DEDUP_STAGE, os.path.basename(os.path.dirname(p)), os.path.basename(p).removesuffix(".parquet"), None,
             _stored(root, p)] for p in cluster_files]
    if rows:
        con.executemany("INSERT INTO fate_files VALUES (?, ?, ?, ?, ?)", rows)


def _files(con, root: str | None) -> dict[str, list[str]]:
    """The absolute paths of each stage's fate files, sorted."""
    out: dict[str, list[str]] = {stage: [] for stage in _COLUMNS}
    for stage, path in con.execute("SELECT stage, path FROM fate_files ORDER BY stage, path").fetchall():
        out.setdefault(stage, []).append(os.path.join(root, path) if root else path)
    return out


def _read(stage: str, paths: list[str]) -> str:
    """A relation over one kind of fate file that skips missing files and keeps its columns
    (typed NULLs) when every file is gone."""
    typed = ", ".join(f"NULL::VARCHAR AS {c}" for c in _COLUMNS[stage])
    filename = ", filename = true" if "filename" in _COLUMNS[stage] else ""
    return (f"(SELECT * FROM read_parquet({sql_file_list(paths)}{filename}, allow_empty = true) "
            f"UNION ALL BY NAME SELECT {typed} WHERE false)")


def view_sql(files: dict[str, list[str]]) -> str:
    """The `document_fates` view over these files; same columns and rows as the table it replaced.

    Quarantine and dropped shards sit at `<folder>/<source>/<snapshot>/[<filter>/]part-N.parquet`
    (layout.partition_dir, layout.dropped_dir): source, snapshot and filter are read off the path,
    which also lets DuckDB skip the files of other partitions when a query names one."""
    removed = f"json_extract_string(metadata, '$.reason') = '{REMOVED_REASON}'"
    return f"""CREATE OR REPLACE VIEW document_fates AS
        SELECT split_part(filename, '/', -3) AS source, split_part(filename, '/', -2) AS snapshot, id,
               '{RAW_STAGE}' AS stage,
               CASE WHEN {removed} THEN '{FATE_REMOVED}' ELSE '{FATE_QUARANTINED}' END AS fate,
               CASE WHEN {removed} THEN 'removal request: ' || coalesce(json_extract_string(metadata, '$.detail'), '')
                    ELSE json_extract_string(metadata, '$.reason') END AS reason,
               NULL::VARCHAR AS duplicate_of_source, NULL::VARCHAR AS duplicate_of,
               nullif(json_extract_string(metadata, '$.detail'), '') AS detail
        FROM {_read(RAW_STAGE, files[RAW_STAGE])}
        UNION ALL
        SELECT split_part(filename, '/', -4), split_part(filename, '/', -3), id, '{FILTERED_STAGE}', '{FATE_DROPPED}',
               split_part(filename, '/', -2) || ':'
                   || coalesce(json_extract_string(metadata, '$.{META_FILTER_REASON}'), 'dropped'),
               NULL, NULL, json_extract_string(metadata, '$.{META_FILTER_VALUE}')
        FROM {_read(FILTERED_STAGE, files[FILTERED_STAGE])}
        UNION ALL
        SELECT source, snapshot, id, '{DEDUP_STAGE}', fate, match, duplicate_of_source, duplicate_of, NULL
        FROM {_read(DEDUP_STAGE, files[DEDUP_STAGE])}"""


def sync_view(con) -> None:
    """Re-create `document_fates` when `fate_files` or the catalog's folder changed since it was
    written (the view's comment holds a digest of both); otherwise leave it be."""
    root = catalog_root(con)
    sql = view_sql(_files(con, root))
    digest = hashlib.sha256(sql.encode()).hexdigest()
    current = con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'document_fates' "
                          "AND database_name = current_database()").fetchall()
    if current and current[0][0] == digest:
        return
    con.execute(sql)
    con.execute(f"COMMENT ON VIEW document_fates IS '{digest}'")


def ensure(con) -> None:
    """`fate_files` and the `document_fates` view in place: a catalog that still has the old
    per-document table is migrated first (`migrate_table`)."""
    con.execute(FATE_FILES_SCHEMA)
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'document_fates' "
                       "AND table_catalog = current_database()").fetchall()
    if kind and kind[0][0] == "BASE TABLE":
        migrate_table(con)
    sync_view(con)


def migrate_table(con) -> None:
    """Replace an old catalog's `document_fates` table (a copy of every fate) by the view.

    Safe without the recipe or a rerun: the table's rows were copied from exactly these files
    (quarantine shards by record_raw, dropped shards by record_filtered, cluster files by
    record_dedup), and a published file is never rewritten in place (a rerun publishes a new
    folder and records it again), so the files of the partitions the table holds rows for are
    the truth the rows came from. Only partitions still published count: retirement moved the
    others' folders and deleted their rows; a file gone since is skipped, as in the view."""
    root = catalog_root(con)
    partitions = con.execute("SELECT DISTINCT stage, source, snapshot FROM document_fates ORDER BY ALL").fetchall()
    con.execute("BEGIN TRANSACTION")
    try:
        for stage, source, snapshot in partitions:
            if stage == RAW_STAGE:
                replace_files(con, stage, source, snapshot,
                              {None: list_parts(layout.partition_dir(root, layout.QUARANTINE_DIR, source, snapshot))})
            elif stage == FILTERED_STAGE:
                replace_files(con, stage, source, snapshot, _dropped_files(root, source, snapshot))
        clusters = [layout.clusters_file(root, source, snapshot) for stage, source, snapshot in partitions
                    if stage == DEDUP_STAGE]
        replace_cluster_files(con, [p for p in clusters if os.path.exists(p)])
        con.execute("DROP TABLE document_fates")
        sync_view(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _dropped_files(root: str, source: str, snapshot: str) -> dict[str | None, list[str]]:
    """{filter: its published dropped shards} of one filtered partition, from its folder."""
    base = layout.dropped_dir(root, source, snapshot)
    names = sorted(n for n in os.listdir(base) if not n.startswith(".")) if os.path.isdir(base) else []
    return {n: list_parts(os.path.join(base, n)) for n in names if os.path.isdir(os.path.join(base, n))}


def missing_files(con) -> list[tuple[str, str]]:
    """(stage, path) of the recorded fate files no longer on disk: the view skips them, so the
    documents they held have no fate. [] for a catalog that predates `fate_files`."""
    has_table = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'fate_files' "
                            "AND table_catalog = current_database()").fetchall()[0][0]
    if not has_table:
        return []
    root = catalog_root(con)
    return [(stage, p) for stage, paths in _files(con, root).items() for p in paths if not os.path.exists(p)]


def missing_note(con) -> str | None:
    """One line naming the first missing fate file and the fix, or None when none is missing.
    A raw or filtered partition that lost a file no longer matches its seal, so `mix-pipeline run`
    rebuilds it (core/io/integrity.py). The dedup index has no seal and reuses the generations its
    state.json calls unchanged, so a lost cluster file needs the index rebuilt from scratch."""
    missing = missing_files(con)
    if not missing:
        return None
    stage, path = next(((s, p) for s, p in missing if s == DEDUP_STAGE), missing[0])
    fix = "`mix-pipeline run` rebuilds the partition whose published files changed"
    if stage == DEDUP_STAGE:
        index = os.path.dirname(os.path.dirname(os.path.dirname(path)))
        fix = f"delete {index} and materialize dedup_index again (in the UI) to rebuild it"
    return (f"{len(missing)} fate file(s) missing, e.g. {path}: the documents they held have no fate in the "
            f"catalog; {fix}")
