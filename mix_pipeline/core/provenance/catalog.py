"""The DuckDB catalog: per-stage statistics, every document's fate, and mixture ledgers.

Rows are loaded straight from the Parquet files each stage wrote (DuckDB reads them in
place), so the catalog's counts are counts of data on disk, not of in-memory counters. Each
writer replaces exactly the rows of the partition it owns, inside one transaction, which
makes reruns and backfills idempotent. Document fates are not copied at all: `document_fates`
is a view over the stages' fate files (core/provenance/fates.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict

import duckdb

from mix_pipeline.core.filters.base import per_kind_counts_sql
from mix_pipeline.core.filters.registry import DECONTAMINATION, LANGUAGE, PII, SAFETY, counts_queries
from mix_pipeline.core.io.documents import sql_file_list
from mix_pipeline.core.io.faults import crash_point
from mix_pipeline.core.provenance import fates
from mix_pipeline.core.provenance.forget import REMOVED_REASON
from mix_pipeline.names import (
    FATE_DROPPED,
    FATES,
    META_DECONTAMINATED,
    META_FILTER_REASON,
    META_FILTER_VALUE,
    snapshot_order,
)


@contextlib.contextmanager
def writer_lock(database: str) -> Iterator[None]:
    """Catalog writers take turns: partition runs of one wave write the catalog from several
    processes. DuckDB admits one writing process and dagster-duckdb retries while another holds
    the file, but under load four parallel ingest runs once lost one run's rows; an exclusive
    `flock` on `catalog.duckdb.lock` makes the writers take turns outright (the kernel drops it if
    a process dies). Creates the folder that holds the database on first use."""
    path = os.path.abspath(database)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def connect(database: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A writing connection to the catalog at `database`, taken under writer_lock."""
    with writer_lock(database):
        con = duckdb.connect(database)
        try:
            yield con
        finally:
            con.close()


SCHEMA = [
    """CREATE TABLE IF NOT EXISTS stage_stats (
        stage VARCHAR, partition VARCHAR, metric VARCHAR, value DOUBLE)""",
    """CREATE TABLE IF NOT EXISTS source_inputs (
        source VARCHAR, snapshot VARCHAR, records BIGINT, documents BIGINT, quarantined BIGINT)""",
    # What the filters counted per source: `language` (kind = language code, documents identified
    # as it), `pii` (kind = PII kind, documents with one and replacements made), `safety` (kind =
    # flagged: documents with a flagged word and flagged words), `decontamination` (kind = eval set,
    # contaminated documents and shared n-grams). Counted from the stage's output files.
    """CREATE TABLE IF NOT EXISTS filter_counts (
        source VARCHAR, snapshot VARCHAR, filter VARCHAR, kind VARCHAR, documents BIGINT, matches BIGINT)""",
    f"""CREATE OR REPLACE VIEW language_shares AS
        SELECT source, snapshot, kind AS language, documents,
               documents / sum(documents) OVER (PARTITION BY source, snapshot) AS share
        FROM filter_counts WHERE filter = '{LANGUAGE}'""",
    f"""CREATE OR REPLACE VIEW pii_counts AS
        SELECT source, snapshot, kind, documents, matches FROM filter_counts WHERE filter = '{PII}'""",
    # Drops per filter: the part of the reason before the first ':' is the filter's name.
    f"""CREATE OR REPLACE VIEW filter_drops AS
        SELECT source, snapshot, split_part(reason, ':', 1) AS filter, count(*) AS documents
        FROM document_fates WHERE stage = 'filtered' AND fate = '{FATE_DROPPED}' GROUP BY ALL""",
    """CREATE TABLE IF NOT EXISTS mixture_ledger (
        mixture VARCHAR, source VARCHAR, target_weight DOUBLE, achieved_weight DOUBLE,
        target_units BIGINT, units BIGINT, documents BIGINT, rows BIGINT,
        available_units BIGINT, available_documents BIGINT, epochs DOUBLE)""",
    # Partitions taken out because the recipe no longer discovers them (core/provenance/retire.py): when,
    # where their folders went, how many input records they had.
    """CREATE TABLE IF NOT EXISTS retired_partitions (
        source VARCHAR, snapshot VARCHAR, retired_at VARCHAR, moved_to VARCHAR, records BIGINT)""",
    """CREATE TABLE IF NOT EXISTS snapshot_profiles (
        source VARCHAR, snapshot VARCHAR, profile JSON, drift_score DOUBLE)""",
    # One row per source: the conservation identity, records = kept + dropped + duplicate + quarantined + removed.
    f"""CREATE OR REPLACE VIEW conservation AS
        SELECT i.source, sum(i.records) AS records,
               {", ".join(f"coalesce(max(f.{fate}), 0) AS {fate}" for fate in FATES)},
               sum(i.records) = {" + ".join(f"coalesce(max(f.{fate}), 0)" for fate in FATES)} AS balanced
        FROM source_inputs i
        LEFT JOIN (
            SELECT source, {", ".join(f"count(*) FILTER (WHERE fate = '{fate}') AS {fate}" for fate in FATES)}
            FROM document_fates GROUP BY source
        ) f USING (source)
        GROUP BY i.source""",
]


def ensure_schema(con) -> None:
    """Every table and view in place. `document_fates` (source, snapshot, id, stage, fate, reason,
    duplicate_of_source, duplicate_of, detail) comes first, as the views below read it: a view
    over the fate files (core/provenance/fates.py; an old catalog's table is migrated to it).
    `detail` is what the filter measured when it dropped the document (JSON text), where it knows:
    the language and its score, the flagged-word fraction, the eval set, item and n-gram matched."""
    fates.ensure(con)
    for statement in SCHEMA:
        con.execute(statement)


class _Transaction:
    def __init__(self, con):
        self.con = con

    def __enter__(self):
        ensure_schema(self.con)
        self.con.execute("BEGIN TRANSACTION")
        return self.con

    def __exit__(self, exc_type, *_):
        if not exc_type:
            crash_point("catalog.commit")
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")


def transaction(con) -> _Transaction:
    """`with transaction(con):` one all-or-nothing change (the schema ensured first)."""
    return _Transaction(con)


def record_stats(con, stage: str, partition: str, stats: dict[str, float]) -> None:
    with _Transaction(con):
        con.execute("DELETE FROM stage_stats WHERE stage = ? AND partition = ?", [stage, partition])
        con.executemany(
            "INSERT INTO stage_stats VALUES (?, ?, ?, ?)",
            [[stage, partition, k, float(v)] for k, v in sorted(stats.items())],
        )


def raw_counts(con, raw_files: list[str], quarantine_files: list[str]) -> dict[str, int]:
    """One raw partition's documents, quarantined records and those set aside on a removal request
    (reason `removed`), counted from its files: what `record_raw` records."""
    documents = con.execute(f"SELECT count(*) FROM read_parquet({sql_file_list(raw_files)})").fetchall()[0][0] if raw_files else 0
    quarantined = removed = 0
    if quarantine_files:
        quarantined, removed = con.execute(
            f"""SELECT count(*) FILTER (WHERE r IS DISTINCT FROM '{REMOVED_REASON}'),
                       count(*) FILTER (WHERE r = '{REMOVED_REASON}')
                FROM (SELECT json_extract_string(metadata, '$.reason') AS r
                      FROM read_parquet({sql_file_list(quarantine_files)}))"""
        ).fetchall()[0]
    return {"documents": documents, "quarantined": quarantined, "removed": removed}


def record_raw(con, source: str, snapshot: str, raw_files: list[str], quarantine_files: list[str],
               counted: dict[str, int] | None = None) -> dict[str, int]:
    """Input counts of one raw partition; its quarantine files become the fate files of its
    quarantined documents, and of those set aside on a removal request (reason `removed`,
    core/provenance/forget.py; their fate is `removed`, the request's reason kept). `counted`:
    `raw_counts` of these files when already counted (by an executor task); else counted here."""
    counted = counted if counted is not None else raw_counts(con, raw_files, quarantine_files)
    documents, quarantined, removed = counted["documents"], counted["quarantined"], counted["removed"]
    with _Transaction(con):
        con.execute("DELETE FROM source_inputs WHERE source = ? AND snapshot = ?", [source, snapshot])
        fates.replace_files(con, fates.RAW_STAGE, source, snapshot, {None: quarantine_files})
        fates.sync_view(con)
        con.execute(
            "INSERT INTO source_inputs VALUES (?, ?, ?, ?, ?)",
            [source, snapshot, documents + quarantined + removed, documents, quarantined],
        )
    counts = {"records": documents + quarantined + removed, "documents": documents, "quarantined": quarantined}
    return counts | ({"removed": removed} if removed else {})


def filter_counts(con, files: list[str]) -> list[dict]:
    """What the filters counted, read from the metadata of a filtered stage's kept and dropped
    files: each family's own query (`FilterFamily.counts_sql`) and decontamination's."""
    if not files:
        return []
    queries = counts_queries() + [per_kind_counts_sql(DECONTAMINATION, META_DECONTAMINATED)]
    rows = con.execute(
        f"""WITH docs AS (SELECT metadata FROM read_parquet({sql_file_list(files)}))
            {" UNION ALL ".join(queries)}
            ORDER BY 1, 2"""
    ).fetchall()
    return [{"filter": f, "kind": k, "documents": int(d), "matches": None if m is None else int(m)} for f, k, d, m in rows]


def dropped_counts(con, dropped_files: dict[str, list[str]]) -> dict[str, int]:
    """The documents each filter dropped, in the order of `dropped_files` (pipeline order)."""
    return {name: con.execute(f"SELECT count(*) FROM read_parquet({sql_file_list(files)})").fetchall()[0][0] if files else 0
            for name, files in dropped_files.items()}


def record_filtered(con, source: str, snapshot: str, kept_files: list[str], dropped_files: dict[str, list[str]],
                    counted: tuple[dict[str, int], list[dict]] | None = None) -> dict[str, int]:
    """What the filters of one filtered partition counted; its dropped files become the fate files
    of its dropped documents. Returns the drops per filter in the order of `dropped_files`
    (pipeline order). `counted`: (`dropped_counts`, `filter_counts` of the kept and dropped
    files) when already counted (by an executor task); else counted here.

    The view gives each the reason `<filter>:<datatrove reason>` and, as detail, what the filter
    measured (if known)."""
    if counted is None:
        counted = (dropped_counts(con, dropped_files),
                   filter_counts(con, kept_files + [f for files in dropped_files.values() for f in files]))
    counts, rows = counted
    with _Transaction(con):
        fates.replace_files(con, fates.FILTERED_STAGE, source, snapshot, dropped_files)
        fates.sync_view(con)
        con.execute("DELETE FROM filter_counts WHERE source = ? AND snapshot = ?", [source, snapshot])
        for r in rows:
            con.execute("INSERT INTO filter_counts VALUES (?, ?, ?, ?, ?, ?)",
                        [source, snapshot, r["filter"], r["kind"], r["documents"], r["matches"]])
    return dict(counts)


def dropped_samples(con, dropped_files: dict[str, list[str]], per_filter: int = 3) -> list[dict]:
    """A few dropped documents per filter (lowest ids first), with reason, measured value and text."""
    out = []
    for filter_name, files in dropped_files.items():
        if not files:
            continue
        rows = con.execute(
            f"""SELECT id, json_extract_string(metadata, '$.{META_FILTER_REASON}'),
                       json_extract_string(metadata, '$.{META_FILTER_VALUE}'), text
                FROM read_parquet({sql_file_list(files)}) ORDER BY id LIMIT {int(per_filter)}"""
        ).fetchall()
        out += [{"filter": filter_name, "id": i, "reason": r, "detail": d, "text": t} for i, r, d, t in rows]
    return out


def filtered_report(con, source: str, snapshot: str) -> dict[str, list[dict]]:
    """What the UI shows for one filtered partition, from the catalog."""

    def rows(sql: str) -> list[dict]:
        cur = con.execute(sql, [source, snapshot])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    return {
        "drop_reasons": rows(
            """SELECT reason, count(*) AS documents FROM document_fates
               WHERE stage = 'filtered' AND source = ? AND snapshot = ? GROUP BY reason ORDER BY documents DESC, reason"""
        ),
        "language_shares": rows(
            "SELECT language, documents, round(share, 4) AS share FROM language_shares "
            "WHERE source = ? AND snapshot = ? ORDER BY documents DESC, language"
        ),
        PII: rows("SELECT kind, documents, matches FROM pii_counts WHERE source = ? AND snapshot = ? ORDER BY kind"),
        SAFETY: rows(
            "SELECT documents AS flagged_documents, matches AS flagged_words FROM filter_counts "
            f"WHERE source = ? AND snapshot = ? AND filter = '{SAFETY}'"
        ),
        DECONTAMINATION: rows(
            f"""SELECT c.kind AS eval_set, c.documents AS contaminated_documents, c.matches AS shared_ngrams,
                       (SELECT count(*) FROM document_fates f WHERE f.source = c.source AND f.snapshot = c.snapshot
                        AND f.reason = '{DECONTAMINATION}:' || c.kind) AS dropped
                FROM filter_counts c WHERE c.source = ? AND c.snapshot = ? AND c.filter = '{DECONTAMINATION}'
                ORDER BY c.kind"""
        ),
    }


def record_dedup(con, cluster_files: list[str]) -> None:
    """The cluster files become the fate files of every document that reached dedup (kept, or
    duplicate of which id), every source and snapshot at once.

    Nothing per document is copied: at millions of documents the old insert of every fate grew
    the driver's memory and the catalog file with the corpus. The cluster files are written in id
    order with fixed-size row groups (core/dedup/verdicts.py), so DuckDB's per-row-group min/max
    of `id` still skip nearly every row group when `mix-pipeline trace` looks a document up."""
    with _Transaction(con):
        fates.replace_cluster_files(con, cluster_files)
        fates.sync_view(con)


def record_mixture(con, mixture: str, ledger: list) -> None:
    with _Transaction(con):
        con.execute("DELETE FROM mixture_ledger WHERE mixture = ?", [mixture])
        con.executemany(
            "INSERT INTO mixture_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [mixture, r["source"], r["target_weight"], r["achieved_weight"], r["target_units"], r["units"],
                 r["documents"], r["rows"], r["available_units"], r["available_documents"], r["epochs"]]
                for r in (asdict(x) if not isinstance(x, dict) else x for x in ledger)
            ],
        )


def record_profile(con, source: str, snapshot: str, profile: dict, drift_score: float) -> None:
    with _Transaction(con):
        con.execute("DELETE FROM snapshot_profiles WHERE source = ? AND snapshot = ?", [source, snapshot])
        con.execute(
            "INSERT INTO snapshot_profiles VALUES (?, ?, ?, ?)",
            [source, snapshot, json.dumps(profile, sort_keys=True), drift_score],
        )


def profiles(con, source: str) -> dict[str, dict]:
    rows = con.execute("SELECT snapshot, profile FROM snapshot_profiles WHERE source = ?", [source]).fetchall()
    return {snapshot: json.loads(profile) for snapshot, profile in rows}


def drift_history(con, source: str) -> list[dict]:
    """The source's snapshots in order with their drift score and a text bar (0 to 1)."""
    rows = con.execute(
        "SELECT snapshot, profile, drift_score FROM snapshot_profiles WHERE source = ?", [source]
    ).fetchall()
    out = []
    for snapshot, profile, score in sorted(rows, key=lambda r: snapshot_order(r[0])):
        p = json.loads(profile)
        out.append({
            "snapshot": snapshot, "documents": p["documents"], "tokens": p["tokens"],
            "drift_score": round(score, 4), "chart": "█" * round(score * 40) or "·",
        })
    return out


def conservation(con) -> list[dict]:
    """Per source: records read and how many ended in each fate; `balanced` when they add up."""
    cur = con.execute("SELECT * FROM conservation ORDER BY source")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def fate_counts(con, source: str) -> dict[str, int]:
    rows = con.execute("SELECT fate, count(*) FROM document_fates WHERE source = ? GROUP BY fate", [source]).fetchall()
    return {fate: 0 for fate in FATES} | dict(rows)
