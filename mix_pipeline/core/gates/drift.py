"""Snapshot profiles and drift scores.

A profile summarises one filtered partition as a few distributions: document length (log2
buckets of characters) and detected language shares, each of what was kept and of the stage's
whole input (kept and dropped: a language filter keeps only its languages, so a snapshot that
turned one third French shows only in the input), and fates (kept vs dropped by each filter:
the quality signals), plus token and document totals. Drift between two profiles is the
largest Jensen–Shannon distance (the square root of the base-2 divergence, a metric: 0 =
identical, 1 = disjoint) over the shared distributions: a snapshot that is mostly spam moves
the fate distribution, one in another language the language shares, a truncated crawl the
lengths. A third of the documents moving to new buckets scores about 0.44; 0.3 is a shift of
roughly a sixth.
"""

from __future__ import annotations

import numpy as np

from mix_pipeline.names import META_LANGUAGE

# The shares of the documents' detected language (their `language` metadata) are named after it.
LANGUAGE = META_LANGUAGE
DISTRIBUTIONS = ("length", LANGUAGE, "fates", "input_length", "input_language")
# The components a drift score reports: each is the largest of its distributions.
COMPONENTS = {"length": ("length", "input_length"), LANGUAGE: (LANGUAGE, "input_language"), "fates": ("fates",)}


def _distributions(con, parts: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(length buckets, language counts) of the documents in `parts`. A document dropped before
    the language filter ran (or with no language filter) counts as `unknown`."""
    from mix_pipeline.core.io.documents import sql_file_list

    docs = f"read_parquet({sql_file_list(parts)})"
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
    return length, language


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in sorted(set(a) | set(b))}


def profile(kept_parts: list[str], input_documents: int, drops: dict[str, int],
            dropped_parts: list[str] | None = None) -> dict:
    """`dropped_parts`: every shard of documents the filters dropped (the stage input is those
    and `kept_parts`)."""
    from mix_pipeline.core.io.documents import scratch_connection, sql_file_list

    length: dict[str, float] = {}
    language: dict[str, float] = {}
    dropped_length: dict[str, float] = {}
    dropped_language: dict[str, float] = {}
    tokens = kept = 0
    if kept_parts or dropped_parts:
        con = scratch_connection()
        if kept_parts:
            length, language = _distributions(con, kept_parts)
            kept, tokens = con.sql(
                f"SELECT count(*), coalesce(sum(ceil(strlen(text) / 4)), 0) FROM read_parquet({sql_file_list(kept_parts)})"
            ).fetchall()[0]
        if dropped_parts:
            dropped_length, dropped_language = _distributions(con, dropped_parts)
        con.close()
    fates = {"kept": float(kept), **{f"dropped:{k}": float(v) for k, v in sorted(drops.items())}}
    return {
        "documents": int(kept),
        "input_documents": int(input_documents),
        "tokens": int(tokens),
        "length": _normalise(length),
        LANGUAGE: _normalise(language),
        "fates": _normalise(fates),
        "input_length": _normalise(_add(length, dropped_length)),
        "input_language": _normalise(_add(language, dropped_language)),
    }


def _normalise(counts: dict[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: round(v / total, 6) for k, v in counts.items()} if total else {}


def js_distance(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen–Shannon distance (square root of the base-2 divergence, in [0, 1])."""
    return float(np.sqrt(js_divergence(p, q)))


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
    """Jensen–Shannon distance per distribution both profiles have (a profile stored before the
    input distributions existed has none), per component (the largest of its distributions), and
    their maximum under `score`."""
    parts = {name: round(js_distance(current[name], reference[name]), 6)
             for name in DISTRIBUTIONS if name in current and name in reference}
    out = {f"{name}_distance": v for name, v in parts.items() if name.startswith("input_")}
    for component, names in COMPONENTS.items():
        out[component] = max((parts[n] for n in names if n in parts), default=0.0)
    out["score"] = max((out[c] for c in COMPONENTS), default=0.0)
    return out


def references(snapshot: str, profiles: dict[str, dict], order) -> dict[str, tuple[str, dict]]:
    """The snapshots to compare against: the one just before `snapshot` and the first (baseline)."""
    earlier = sorted((s for s in profiles if order(s) < order(snapshot)), key=order)
    out = {}
    if earlier:
        out["previous"] = (earlier[-1], profiles[earlier[-1]])
        out["baseline"] = (earlier[0], profiles[earlier[0]])
    return out

