"""Provenance and removal requests: trace a document through every stage, forget documents.

Removals: `data_root/removals.jsonl` lists (source, snapshot, id, reason), one JSON object a line,
sorted. The raw stage sets the listed documents aside (a quarantine shard of their own, reason
`removed`, no text kept), so no later stage ever reads them, and the catalog gives them the fate
`removed`. A partition's removals are part of its input fingerprint (core/provenance/lineage.py), so any
orchestrator (the CLI, a schedule, the Dagster daemon) sees exactly the partitions that hold a
newly forgotten document as stale and rebuilds them, and what is downstream of them, through
the normal partitioned path.

Trace: everything the catalog and the stage outputs know about one document, in stage order.
The catalog's `document_fates` is indexed on `id`; the rest are reads of one partition's shards
(and of each mixture's `id` and `source` columns).
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

from mix_pipeline import layout
from mix_pipeline.core.filters.registry import DECONTAMINATION, LANGUAGE, PII, SAFETY
from mix_pipeline.core.io.documents import DOCUMENT_SCHEMA, drop_rows, list_parts, sql_file_list, write_text_atomic
from mix_pipeline.names import (
    FATE_DROPPED,
    FATE_DUPLICATE,
    FATE_KEPT,
    FATE_QUARANTINED,
    FATE_REMOVED,
    META_DECONTAMINATED,
    META_FILTER_REASON,
    META_FILTER_VALUE,
    META_FLAGGED_WORDS,
    META_LANGUAGE,
    META_LANGUAGE_SCORE,
    META_PII,
    REMOVALS_FILE,
)

# The quarantine reason of a removed document (its fate is FATE_REMOVED, not quarantined).
REMOVED_REASON = "removed"


class ProvenanceError(ValueError):
    """A trace or removal request that cannot be answered, phrased as one line."""


# ---- removals ----------------------------------------------------------------------------------
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


# ---- resolving a removal request -----------------------------------------------------------------
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


# ---- where documents sit in the outputs ------------------------------------------------------------
def output_files(data_root: str) -> dict[str, list[str]]:
    """Every published Parquet output that holds document text, by stage (mixtures by name)."""
    out = {}
    for stage in ("raw", "filtered", "deduplicated"):
        out[stage] = sorted(glob.glob(os.path.join(data_root, stage, "*", "*", "part-*.parquet")))
    out["dropped"] = sorted(glob.glob(os.path.join(data_root, "dropped", "*", "*", "*", "part-*.parquet")))
    for manifest in sorted(glob.glob(os.path.join(data_root, "mixtures", "*", "manifest.json"))):
        folder = os.path.dirname(manifest)
        out[f"mixture:{os.path.basename(folder)}"] = mixture_shards(folder)
    return out


def mixture_shards(folder: str) -> list[str]:
    path = os.path.join(folder, "manifest.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        manifest = json.load(f)
    return [os.path.join(folder, rel) for split in manifest["splits"].values() for rel in split["files"]]


def find_in_outputs(con, data_root: str, docs: list[tuple[str, str]]) -> list[dict]:
    """Rows of any output (stage shards, dropped shards, mixture shards) that hold one of `docs`
    ((source, id) pairs): the proof that a removal left nothing behind is this list being empty."""
    if not docs:
        return []
    con.execute("CREATE OR REPLACE TEMP TABLE _sought (source VARCHAR, id VARCHAR)")
    con.executemany("INSERT INTO _sought VALUES (?, ?)", [list(d) for d in docs])
    found = []
    for where, files in output_files(data_root).items():
        if not files:
            continue
        for source, doc_id, filename, row in con.execute(
            f"""SELECT d.source, d.id, d.filename, d.file_row_number
                FROM read_parquet({sql_file_list(files)}, filename = true, file_row_number = true) d
                SEMI JOIN _sought s ON d.source = s.source AND d.id = s.id ORDER BY ALL"""
        ).fetchall():
            found.append({"output": where, "source": source, "id": doc_id,
                          "file": os.path.relpath(filename, data_root), "row": row})
    return found


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


# ---- trace -----------------------------------------------------------------------------------------
def _rows(con, sql: str, params=()) -> list[dict]:
    cur = con.execute(sql, list(params))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _find_row(con, files: list[str], doc_id: str, columns: str = "id, text, metadata") -> dict | None:
    files = [f for f in files if os.path.exists(f)]
    if not files:
        return None
    rows = _rows(con, f"""SELECT {columns}, filename, file_row_number FROM read_parquet({sql_file_list(files)},
                              filename = true, file_row_number = true) WHERE id = ? LIMIT 1""", [doc_id])
    return rows[0] if rows else None


def _meta(row: dict | None) -> dict:
    return json.loads(row["metadata"] or "{}") if row else {}


def resolve_mixture_row(con, data_root: str, ref: str) -> tuple[str, str] | None:
    """`MIXTURE/SPLIT/part-NNNNN.parquet:ROW` (ROW from 0) → (source, id) of that row, or None when
    `ref` is not of that form."""
    path, sep, row = ref.rpartition(":")
    if not sep or not row.isdigit() or path.count("/") != 2 or not path.endswith(".parquet"):
        return None
    full = os.path.join(data_root, "mixtures", path)
    if not os.path.exists(full):
        raise ProvenanceError(f"{ref}: no such mixture shard ({full}); name one listed in the mixture's manifest.json")
    got = con.execute(f"SELECT source, id FROM read_parquet({sql_file_list([full])}, file_row_number = true) "
                      "WHERE file_row_number = ?", [int(row)]).fetchall()
    if not got:
        raise ProvenanceError(f"{ref}: the shard has no row {row} (rows count from 0)")
    return got[0]


def trace(con, recipe, ref: str, source: str | None = None, with_mixtures: bool = True) -> list[dict]:
    """The history of the document `ref` names (an id, or a mixture row MIXTURE/SPLIT/FILE:ROW), one
    entry per source:snapshot that holds a document with that id. `with_mixtures=False` skips
    the search of every mixture's shards for the rows that hold it."""
    root = recipe.data_root_path
    row_ref = None
    resolved = resolve_mixture_row(con, root, ref)
    if resolved is not None:
        row_ref, (source, doc_id) = ref, resolved
    else:
        doc_id = ref
    fates = _document_fates(con, doc_id, source)
    out = []
    for key in sorted({(f["source"], f["snapshot"]) for f in fates}):
        mine = [f for f in fates if (f["source"], f["snapshot"]) == key]
        out.append(_partition_history(con, recipe, root, key, doc_id, mine, row_ref, with_mixtures))
    return out


def _document_fates(con, doc_id: str, source: str | None) -> list[dict]:
    """The catalog's fates of every document with this id (of `source` only, when given)."""
    fates = _rows(con, """SELECT source, snapshot, stage, fate, reason, detail, duplicate_of_source, duplicate_of
                          FROM document_fates WHERE id = ? AND (? IS NULL OR source = ?) ORDER BY source, snapshot, stage""",
                  [doc_id, source, source])
    if not fates:
        where = f" in source '{source}'" if source else ""
        raise ProvenanceError(f"no document '{doc_id}'{where} in the catalog: give a document id (as in the "
                              "outputs' `id` column) or a mixture row MIXTURE/SPLIT/part-NNNNN.parquet:ROW")
    return fates


def _partition_history(con, recipe, root: str, key: tuple[str, str], doc_id: str, mine: list[dict],
                       row_ref: str | None, with_mixtures: bool) -> dict:
    """One source:snapshot's history of the document: its origin, then every stage it reached."""
    src, snapshot = key
    final = next((f for f in mine if f["stage"] == "dedup"), None) or mine[-1]
    history: dict = {"source": src, "snapshot": snapshot, "id": doc_id, "fate": final["fate"],
                     "ended_at": final["stage"], "reason": final["reason"], "mixture_row": row_ref}
    # Origin: the raw record (or the quarantine record of a quarantined or removed one).
    set_aside = final["fate"] in (FATE_QUARANTINED, FATE_REMOVED)
    origin_dir = layout.QUARANTINE_DIR if set_aside else layout.RAW_DIR
    rec = _find_row(con, list_parts(layout.partition_dir(root, origin_dir, src, snapshot)), doc_id)
    meta = _meta(rec)
    history["origin"] = _origin(root, rec, meta)
    if set_aside:
        history["stages"] = [{"stage": "raw", "result": final["fate"], "reason": final["reason"],
                              "detail": meta.get("detail")}]
        history["mixtures"] = []
        return history
    if _trace_filtered(con, recipe, root, key, doc_id, final, history):
        history["mixtures"] = []
        return history
    history["dedup"] = _dedup_verdict(con, root, key, doc_id, final)
    history["stages"].append({"stage": "dedup", "result": final["fate"], "reason": final["reason"]})
    if final["fate"] != FATE_KEPT:
        history["mixtures"] = []
        return history
    dedup_row = _find_row(con, list_parts(layout.partition_dir(root, layout.DEDUPLICATED_DIR, src, snapshot)), doc_id,
                          "id, n_tokens, metadata")
    history["stages"].append({"stage": "deduplicated", "result": "kept", "n_tokens": dedup_row and dedup_row["n_tokens"]})
    history["mixtures"] = mixture_appearances(con, root, src, doc_id) if with_mixtures else []
    return history


def _origin(root: str, rec: dict | None, meta: dict) -> dict:
    """Where the document came from: input file, line and URL, its raw (or quarantine) row, and
    the rest of the reader's fields."""
    return {
        "file": meta.get("file"), "line": meta.get("line"), "url": meta.get("url"),
        "raw_shard": os.path.relpath(rec["filename"], root) if rec else None,
        "raw_row": rec["file_row_number"] if rec else None,
        "fields": {k: v for k, v in sorted(meta.items()) if k not in (
            "file", "line", "url", "source", "domain", "reason", "detail", "messages")},
    }


def _trace_filtered(con, recipe, root: str, key: tuple[str, str], doc_id: str, final: dict, history: dict) -> str | None:
    """Fill in the filtered stage (every step in pipeline order, with what it measured), the PII
    redactions, decontamination and license. Returns the step that dropped the document, or None."""
    from mix_pipeline.core.mixing.licenses import document_license

    src, snapshot = key
    spec = recipe.sources.get(src)
    kept_row = _find_row(con, list_parts(layout.partition_dir(root, layout.FILTERED_DIR, src, snapshot)), doc_id)
    steps = ([DECONTAMINATION] if recipe.decontamination is not None else []) + [f.name for f in (spec.filters if spec else [])]
    dropped_by = final["reason"].split(":", 1)[0] if final["fate"] == FATE_DROPPED else None
    dropped_row = None
    if dropped_by:
        dropped_row = _find_row(con, list_parts(os.path.join(layout.partition_dir(root, layout.DROPPED_DIR, src, snapshot), dropped_by)), doc_id)
    doc_meta = _meta(kept_row or dropped_row)
    history["stages"] = [{"stage": "raw", "result": "read"},
                         {"stage": "filtered", "result": final["fate"] if dropped_by else "kept",
                          "filters": _filter_steps(steps, dropped_by, final, doc_meta)}]
    history["pii_redactions"] = doc_meta.get(META_PII) or {}
    history[DECONTAMINATION] = _decontamination(recipe, dropped_by, final, doc_meta)
    text = (kept_row or dropped_row or {}).get("text") or ""
    history["license"] = document_license(spec, doc_meta, text) if spec else None
    return dropped_by


def _filter_steps(steps: list[str], dropped_by: str | None, final: dict, doc_meta: dict) -> list[dict]:
    """Each filter step's result: passed (or applied), dropped, or not reached after the drop."""
    from mix_pipeline.core.filters.registry import is_dropping

    filters = []
    reached = True
    for step in steps:
        entry = {"filter": step, "result": "not reached" if not reached else "passed"}
        if reached and step == dropped_by:
            entry |= {"result": "dropped", "reason": final["reason"], "measured": _detail(final)}
            reached = False
        elif reached:
            entry["measured"] = _measured(step, doc_meta)
            if step != DECONTAMINATION and not is_dropping(step):
                entry["result"] = "applied"
        filters.append(entry)
    return filters


def _decontamination(recipe, dropped_by: str | None, final: dict, doc_meta: dict) -> dict:
    """What decontamination did: dropped the document, removed spans, found it clean, or was not configured."""
    decont = doc_meta.get(META_DECONTAMINATED)
    return (
        {"result": "dropped", "reason": final["reason"], "measured": _detail(final)}
        if dropped_by == DECONTAMINATION else
        {"result": "spans removed", "matched_ngrams": decont} if decont else
        {"result": "clean"} if recipe.decontamination is not None else {"result": "not configured"})


def _detail(final: dict) -> dict | None:
    """What the dropping step measured (the catalog's `detail`, JSON), or None."""
    return json.loads(final["detail"]) if final["detail"] else None


def _dedup_verdict(con, root: str, key: tuple[str, str], doc_id: str, final: dict) -> dict:
    """Dedup: verdict, cluster, survivor and copies."""
    src, snapshot = key
    clusters_path = os.path.join(root, "dedup_index", "clusters", src, f"{snapshot}.parquet")
    cluster = _rows(con, f"""SELECT match, cluster_size, duplicate_of_snapshot
                             FROM read_parquet({sql_file_list([clusters_path])}) WHERE id = ?""",
                    [doc_id]) if os.path.exists(clusters_path) else []
    copies = _rows(con, f"""SELECT source, snapshot, id, reason AS match FROM document_fates
                            WHERE stage = 'dedup' AND fate = '{FATE_DUPLICATE}' AND duplicate_of = ?
                            AND duplicate_of_source = ? ORDER BY ALL""", [doc_id, src])
    c = cluster[0] if cluster else {}
    return {
        "result": final["fate"], "match": c.get("match") or final["reason"], "cluster_size": c.get("cluster_size"),
        "survivor": ({"source": final["duplicate_of_source"], "snapshot": c.get("duplicate_of_snapshot"),
                      "id": final["duplicate_of"]} if final["fate"] == FATE_DUPLICATE else
                     {"source": src, "snapshot": snapshot, "id": doc_id}),
        "copies": copies,
    }


def _measured(step: str, meta: dict) -> dict | None:
    if step == LANGUAGE and META_LANGUAGE in meta:
        return {META_LANGUAGE: meta[META_LANGUAGE], "score": meta.get(META_LANGUAGE_SCORE)}
    if step == SAFETY and META_FLAGGED_WORDS in meta:
        return {"flagged_words": meta[META_FLAGGED_WORDS]}
    if step == PII:
        return {"redacted": meta.get(META_PII) or {}}
    if step == DECONTAMINATION and meta.get(META_DECONTAMINATED):
        return {"matched_ngrams": meta[META_DECONTAMINATED]}
    if META_FILTER_VALUE in meta and meta.get(META_FILTER_REASON, "").startswith(step):
        return json.loads(meta[META_FILTER_VALUE])
    return None


def mixture_appearances(con, data_root: str, source: str, doc_id: str) -> list[dict]:
    """Every row of every built mixture that holds the document: mixture, split, shard, row, epoch."""
    out = []
    for manifest in sorted(glob.glob(os.path.join(data_root, "mixtures", "*", "manifest.json"))):
        folder = os.path.dirname(manifest)
        files = mixture_shards(folder)
        if not files:
            continue
        for filename, row, epoch in con.execute(
            f"""SELECT filename, file_row_number, epoch FROM read_parquet({sql_file_list(files)}, filename = true,
                    file_row_number = true) WHERE id = ? AND source = ? ORDER BY ALL""", [doc_id, source]).fetchall():
            rel = os.path.relpath(filename, folder)
            out.append({"mixture": os.path.basename(folder), "split": rel.split("/", 1)[0],
                        "row": f"{os.path.basename(folder)}/{rel}:{row}", "epoch": epoch})
    return out


def format_trace(histories: list[dict]) -> str:
    """The trace as text for a person."""
    lines = []
    for h in histories:
        lines.append(f"document {h['id']} of source '{h['source']}', snapshot '{h['snapshot']}'"
                     + (f" (mixture row {h['mixture_row']})" if h.get("mixture_row") else ""))
        o = h["origin"]
        where = f"{o['file']}, line {o['line']}" if o.get("file") is not None else "unknown (no raw record found)"
        lines.append(f"  origin: {where}" + (f", url {o['url']}" if o.get("url") else "")
                     + (f"  [raw shard {o['raw_shard']} row {o['raw_row']}]" if o.get("raw_shard") else ""))
        for k, v in o.get("fields", {}).items():
            lines.append(f"    {k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}")
        if h.get("license"):
            lines.append(f"  license: {h['license']['license']} (from {h['license']['origin']})")
        for st in h.get("stages", []):
            extra = f": {st['reason']}" if st.get("reason") else ""
            extra += f" ({st['detail']})" if st.get("detail") else ""
            lines.append(f"  {st['stage']}: {st['result']}{extra}")
            for f in st.get("filters", []):
                m = f" {json.dumps(f['measured'], sort_keys=True)}" if f.get("measured") else ""
                r = f" [{f['reason']}]" if f.get("reason") else ""
                lines.append(f"    - {f['filter']}: {f['result']}{r}{m}")
        if "pii_redactions" in h:
            pii = h["pii_redactions"]
            lines.append("  pii redactions: " + (", ".join(f"{k} ×{v}" for k, v in sorted(pii.items())) or "none"))
        if DECONTAMINATION in h:
            d = h[DECONTAMINATION]
            lines.append(f"  decontamination: {d['result']}" + (f" {json.dumps(d.get('measured') or d.get('matched_ngrams'))}"
                                                                 if d.get("measured") or d.get("matched_ngrams") else ""))
        if "dedup" in h:
            d = h["dedup"]
            s = d["survivor"]
            match = f"match {d['match']}, " if d.get("match") else ""
            lines.append(f"  near-dup cluster: {d['result']} ({match}cluster size {d['cluster_size']}), "
                         f"survivor {s['source']}/{s['id']}; copies: "
                         + (", ".join(f"{c['source']}/{c['id']}" for c in d["copies"]) or "none"))
        if h["fate"] == FATE_KEPT:
            if h["mixtures"]:
                for m in h["mixtures"]:
                    lines.append(f"  in mixture '{m['mixture']}', split {m['split']}, epoch {m['epoch']}: {m['row']}")
            else:
                lines.append("  in no mixture (kept, but not selected by any built mixture)")
        else:
            lines.append(f"  history ends at {h['ended_at']}: {h['fate']} ({h['reason']})")
    return "\n".join(lines)


def sample_rows_markdown(con, recipe, name: str, rows: int = 5) -> str:
    """The first rows of a mixture's train split traced to their origin, as a Markdown table (the
    mixture asset shows it in the UI; `mix-pipeline trace` gives the full history of any row)."""
    folder = os.path.join(recipe.data_root_path, "mixtures", name)
    shards = [f for f in mixture_shards(folder) if f"{os.sep}train{os.sep}" in f][:1]
    if not shards:
        return "_no train rows_"
    lines = ["| row | source | id | origin | snapshot | filters | dedup |", "|---|---|---|---|---|---|---|"]
    n = pq.read_metadata(shards[0]).num_rows
    for k in range(min(rows, n)):
        ref = f"{name}/{os.path.relpath(shards[0], folder)}:{k}"
        try:
            histories = trace(con, recipe, ref, with_mixtures=False)[:1]
        except ProvenanceError as exc:  # shards made outside the pipeline have no history to show
            lines.append(f"| `{ref}` | | | {str(exc).replace('|', '/')} | | | |")
            continue
        for h in histories:
            o = h["origin"]
            filters = ", ".join(f"{f['filter']} {f['result']}" for f in h["stages"][1].get("filters", [])) if len(h["stages"]) > 1 else ""
            d = h.get("dedup", {})
            origin = o.get("url") or f"{o.get('file')}:{o.get('line')}"
            lines.append(f"| `{ref}` | {h['source']} | `{h['id']}` | {origin} | {h['snapshot']} | {filters or 'none'} "
                         f"| {d.get('result', '')} (cluster of {d.get('cluster_size')}) |")
    return "\n".join(lines) + f"\n\nAny row: `mix-pipeline trace --recipe RECIPE {name}/train/part-00000.parquet:ROW`"
