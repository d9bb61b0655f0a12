"""Trace: everything the catalog and the stage outputs know about one document, in stage order.

The catalog's `document_fates` is a view over the stages' fate files (core/provenance/fates.py):
a lookup by `id` reads the footers of those files and, of each id-ordered cluster file, the one
row group whose min/max `id` holds it; the rest are reads of one partition's shards (and of each
mixture's `id` and `source` columns).
"""

from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq

from mix_pipeline import layout
from mix_pipeline.core.filters.registry import DECONTAMINATION, filter_class, is_dropping
from mix_pipeline.core.io.documents import list_parts, sql_file_list
from mix_pipeline.core.provenance.fates import missing_note
from mix_pipeline.core.provenance.outputs import ProvenanceError, mixture_shards
from mix_pipeline.names import (
    FATE_DROPPED,
    FATE_DUPLICATE,
    FATE_KEPT,
    FATE_QUARANTINED,
    FATE_REMOVED,
    META_DECONTAMINATED,
    META_FILTER_REASON,
    META_FILTER_VALUE,
    META_PII,
)


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
        lost = f" ({note})" if (note := missing_note(con)) else ""
        raise ProvenanceError(f"no document '{doc_id}'{where} in the catalog: give a document id (as in the "
                              f"outputs' `id` column) or a mixture row MIXTURE/SPLIT/part-NNNNN.parquet:ROW{lost}")
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
    """What `step` measured on the document: what its family reports (`FilterFamily.measured`),
    else the value a drop recorded."""
    if step == DECONTAMINATION:
        if meta.get(META_DECONTAMINATED):
            return {"matched_ngrams": meta[META_DECONTAMINATED]}
    elif (measured := filter_class(step).measured(meta)) is not None:
        return measured
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
