"""Snapshot profiles and drift scores.

A profile summarises one filtered partition as a few distributions: document length (log2
buckets of characters), detected language shares, and fates (kept vs dropped by each filter:
the quality signals), plus token and document totals. Drift between two profiles is the
largest Jensen–Shannon divergence (base 2, so 0 = identical, 1 = disjoint) over the shared
distributions: a snapshot that is mostly spam moves the fate distribution, one in another
language the language shares, a truncated crawl the lengths.
"""

from __future__ import annotations

import numpy as np

DISTRIBUTIONS = ("length", "language", "fates")


def profile(kept_parts: list[str], input_documents: int, drops: dict[str, int]) -> dict:
    from mix_pipeline.core.documents import scratch_connection, sql_file_list

    length: dict[str, float] = {}
    language: dict[str, float] = {}
    tokens = kept = 0
    if kept_parts:
        con = scratch_connection()
        docs = f"read_parquet({sql_file_list(kept_parts)})"
        length = {
            str(b): float(n)
            for b, n in con.sql(
                f"SELECT floor(log2(greatest(length(text), 1)))::INT AS b, count(*) FROM {docs} GROUP BY b ORDER BY b"
            ).fetchall()
        }
        language = {
            str(lang): float(n)
            for lang, n in con.sql(
                f"SELECT coalesce(json_extract_string(metadata, '$.language'), 'unknown') AS l, count(*) "
                f"FROM {docs} GROUP BY l ORDER BY l"
            ).fetchall()
        }
        kept, tokens = con.sql(f"SELECT count(*), coalesce(sum(ceil(strlen(text) / 4)), 0) FROM {docs}").fetchall()[0]
        con.close()
    fates = {"kept": float(kept), **{f"dropped:{k}": float(v) for k, v in sorted(drops.items())}}
    return {
        "documents": int(kept),
        "input_documents": int(input_documents),
        "tokens": int(tokens),
        "length": _normalise(length),
        "language": _normalise(language),
        "fates": _normalise(fates),
    }


def _normalise(counts: dict[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: round(v / total, 6) for k, v in counts.items()} if total else {}


def js_divergence(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen–Shannon divergence, base 2, of two distributions given as {bucket: share}."""
    keys = sorted(set(p) | set(q))
    if not keys or not p or not q:
        return 0.0
    a = np.array([p.get(k, 0.0) for k in keys])
    b = np.array([q.get(k, 0.0) for k in keys])
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x, y):
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / y[mask])))

    return max(0.0, min(1.0, (kl(a, m) + kl(b, m)) / 2))


def drift(current: dict, reference: dict) -> dict[str, float]:
    """Per-distribution divergence and their maximum under `score`."""
    parts = {name: round(js_divergence(current[name], reference[name]), 6) for name in DISTRIBUTIONS}
    parts["score"] = max(parts.values()) if parts else 0.0
    return parts


def references(snapshot: str, profiles: dict[str, dict], order) -> dict[str, tuple[str, dict]]:
    """The snapshots to compare against: the one just before `snapshot` and the first (baseline)."""
    earlier = sorted((s for s in profiles if order(s) < order(snapshot)), key=order)
    out = {}
    if earlier:
        out["previous"] = (earlier[-1], profiles[earlier[-1]])
        out["baseline"] = (earlier[0], profiles[earlier[0]])
    return out

