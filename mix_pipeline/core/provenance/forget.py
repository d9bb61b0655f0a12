"""Removal requests: forget documents, and prove they are gone.

Removals: `data_root/removals.jsonl` lists (source, snapshot, id, reason), one JSON object a line,
sorted. The raw stage sets the listed documents aside (a quarantine shard of their own, reason
`removed`, no text kept), so no later stage ever reads them, and the catalog gives them the fate
`removed`. A partition's removals are part of its input fingerprint (core/provenance/lineage.py), so any
orchestrator (the CLI, a schedule, the Dagster daemon) sees exactly the partitions that hold a
newly forgotten document as stale and rebuilds them, and what is downstream of them, through
the normal partitioned path.

A request names documents by id, input file or URL (`resolve_request`); after the rebuild,
`verify_removals` checks the catalog and every output and records the result in `removal_log`.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mix_pipeline.core.io.documents import DOCUMENT_SCHEMA, drop_rows, sql_file_list, write_text_atomic
from mix_pipeline.core.provenance.outputs import ProvenanceError, find_in_outputs
from mix_pipeline.names import FATE_DUPLICATE, FATE_REMOVED, REMOVALS_FILE

# The quarantine reason of a removed document (its fate is FATE_REMOVED, not quarantined).
REMOVED_REASON = "removed"


def removals_path(data_root: str) -> str:
    return os.path.join(data_root, REMOVALS_FILE)


def read_removals(data_root: str) -> list[dict]:
    path = removals_path(data_root)
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                out.append({k: str(entry[k]) for k in ("source", "snapshot", "id")} | {"reason": str(entry.get("reason", ""))})
            except (ValueError, KeyError, TypeError):
                raise ProvenanceError(f"{path}:{n}: not a removal entry; each line needs "
                                      '{"source", "snapshot", "id", "reason"} (fix or delete the line)') from None
    return out


def partition_removals(data_root: str, source: str, snapshot: str) -> dict[str, str]:
    """{id: reason} of the removals of one source:snapshot partition."""
    return {e["id"]: e["reason"] for e in read_removals(data_root) if e["source"] == source and e["snapshot"] == snapshot}


def removals_fingerprint(data_root: str, source: str, snapshot: str) -> str | None:
    """A digest of the partition's removals, or None when it has none (fingerprints stay as before)."""
    removals = partition_removals(data_root, source, snapshot)
    if not removals:
        return None
    return hashlib.sha256(json.dumps(sorted(removals.items())).encode()).hexdigest()


def add_removals(data_root: str, entries: list[dict]) -> int:
    """Merge `entries` into the removals file (sorted, one per document); returns how many are new."""
    current = {(e["source"], e["snapshot"], e["id"]): e for e in read_removals(data_root)}
    added = 0
    for e in entries:
        key = (e["source"], e["snapshot"], e["id"])
        if key not in current:
            added += 1
            current[key] = {"source": e["source"], "snapshot": e["snapshot"], "id": e["id"], "reason": e.get("reason", "")}
    os.makedirs(data_root, exist_ok=True)
    write_text_atomic(removals_path(data_root), "".join(
        json.dumps(current[k], sort_keys=True, ensure_ascii=False) + "\n" for k in sorted(current)))
    return added


def set_aside_removed(raw_parts: list[str], quarantine_dir: str, next_part: int, removals: dict[str, str],
                      source: str, domain: str) -> int:
    """Take the documents listed in `removals` ({id: reason}) out of a staged raw partition: their
    rows are dropped from the shards and one quarantine shard records (id, file, line, reason
    `removed`) with no text. Returns how many were set aside (0 and nothing written when none)."""
    if not removals or not raw_parts:
        return 0

    wanted = pa.array(sorted(removals))
    hits: dict[str, set[int]] = {}
    rows = []
    for shard in raw_parts:
        table = pq.read_table(shard, columns=["id", "metadata"])
        mask = pc.is_in(table.column("id"), value_set=wanted).to_pylist()
        at = [i for i, m in enumerate(mask) if m]
        if not at:
            continue
        hits[shard] = set(at)
        for i in at:
            doc_id = table.column("id")[i].as_py()
            meta = json.loads(table.column("metadata")[i].as_py() or "{}")
            keep = {k: meta[k] for k in ("file", "line", "url") if k in meta}
            rows.append({"id": doc_id, "text": "", "source": source, "domain": domain, "metadata": json.dumps(
                keep | {"reason": REMOVED_REASON, "detail": removals[doc_id]}, sort_keys=True, ensure_ascii=False)})
    if not rows:
        return 0
    for shard, drop in sorted(hits.items()):
        drop_rows(shard, drop)
    rows.sort(key=lambda r: (json.loads(r["metadata"]).get("file", ""), json.loads(r["metadata"]).get("line", 0), r["id"]))
    os.makedirs(quarantine_dir, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA),
                   os.path.join(quarantine_dir, f"part-{next_part:05d}.parquet"), compression="zstd")
    return len(rows)


def resolve_request(con, data_root: str, ids: list[tuple[str | None, str]] = (), file_pattern: str | None = None,
                    url_pattern: str | None = None, with_copies: bool = True) -> tuple[list[dict], list[str]]:
    """The (source, snapshot, id) of every document a request names, and the ids it names that the
    catalog does not know. Ids come as (source or None, id); file and URL patterns are globs over
    each raw record's file (relative to its source's folder) and `url`. With `with_copies`, the
    exact and near copies dedup dropped in favour of a named document are named too (otherwise
    they would take its place in the mixtures)."""
    found: dict[tuple[str, str, str], str] = {}
    unknown = []
    if ids:
        con.execute("CREATE OR REPLACE TEMP TABLE _wanted (source VARCHAR, id VARCHAR)")
        con.executemany("INSERT INTO _wanted VALUES (?, ?)", [[s, i] for s, i in ids])
        rows = con.execute(
            """SELECT DISTINCT w.source AS asked, w.id, f.source, f.snapshot FROM _wanted w
               LEFT JOIN document_fates f ON f.id = w.id AND (w.source IS NULL OR f.source = w.source)"""
        ).fetchall()
        for asked, doc_id, source, snapshot in rows:
            if source is None:
                unknown.append(doc_id if asked is None else f"{asked}\t{doc_id}")
            else:
                found[(source, snapshot, doc_id)] = "listed"
    if file_pattern or url_pattern:
        for source, snapshot, doc_id, file, url in _raw_origins(con, data_root):
            if (file_pattern and file and fnmatch.fnmatchcase(file, file_pattern)) or (
                    url_pattern and url and fnmatch.fnmatchcase(url, url_pattern)):
                found[(source, snapshot, doc_id)] = "file" if file_pattern else "url"
    if with_copies and found:
        con.execute("CREATE OR REPLACE TEMP TABLE _named (source VARCHAR, id VARCHAR)")
        con.executemany("INSERT INTO _named VALUES (?, ?)", [[s, i] for s, _, i in found])
        for source, snapshot, doc_id in con.execute(
            f"""SELECT f.source, f.snapshot, f.id FROM document_fates f
                JOIN _named n ON f.duplicate_of = n.id AND f.duplicate_of_source = n.source
                WHERE f.fate = '{FATE_DUPLICATE}'"""
        ).fetchall():
            found.setdefault((source, snapshot, doc_id), "copy")
    entries = [{"source": s, "snapshot": snap, "id": i, "via": via} for (s, snap, i), via in sorted(found.items())]
    return entries, sorted(unknown)


def _raw_origins(con, data_root: str):
    """(source, snapshot, id, file, url) of every document in the published raw partitions."""
    shards = sorted(glob.glob(os.path.join(data_root, "raw", "*", "*", "part-*.parquet")))
    if not shards:
        return []
    return con.execute(
        f"""SELECT source, split_part(filename, '/', -2) AS snapshot, id,
                   json_extract_string(metadata, '$.file'), json_extract_string(metadata, '$.url')
            FROM read_parquet({sql_file_list(shards)}, filename = true) ORDER BY ALL"""
    ).fetchall()


REMOVAL_LOG_SCHEMA = """CREATE TABLE IF NOT EXISTS removal_log (
    source VARCHAR, snapshot VARCHAR, id VARCHAR, reason VARCHAR, fate VARCHAR, stage VARCHAR,
    rows_left_in_outputs BIGINT, verified BOOLEAN)"""


def verify_removals(con, data_root: str, entries: list[dict]) -> dict:
    """Check, after the rebuild, that every removed document has the single fate `removed` and that
    no output holds it; the result is recorded per document in the catalog's `removal_log`."""
    found = find_in_outputs(con, data_root, sorted({(e["source"], e["id"]) for e in entries}))
    left: dict[tuple[str, str], int] = {}
    for r in found:
        left[(r["source"], r["id"])] = left.get((r["source"], r["id"]), 0) + 1
    rows = []
    for e in entries:
        fates = con.execute("SELECT stage, fate FROM document_fates WHERE id = ? AND source = ? AND snapshot = ?",
                            [e["id"], e["source"], e["snapshot"]]).fetchall()
        fate = fates[0] if len(fates) == 1 else (None, ",".join(sorted(f for _, f in fates)) or None)
        n = left.get((e["source"], e["id"]), 0)
        rows.append([e["source"], e["snapshot"], e["id"], e.get("reason", ""), fate[1], fate[0], n,
                     n == 0 and fate[1] == FATE_REMOVED])
    con.execute(REMOVAL_LOG_SCHEMA)
    con.execute("BEGIN TRANSACTION")
    try:
        con.executemany("DELETE FROM removal_log WHERE source = ? AND snapshot = ? AND id = ?", [r[:3] for r in rows])
        con.executemany("INSERT INTO removal_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return {"documents": len(rows), "verified": sum(r[7] for r in rows), "rows_left": found,
            "not_removed": [{"source": r[0], "snapshot": r[1], "id": r[2], "fate": r[4]} for r in rows if r[4] != FATE_REMOVED]}
