"""Scoring both variants' outputs: dedup recall and precision over the planted duplicate pairs,
and document-by-document agreement of the filter decisions."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.pipeline.settings import SOURCES

Key = tuple[str, str]  # (source, id)


def planted_pairs(truth: dict, sources) -> list[tuple[Key, Key]]:
    """Planted exact, near and cross-source duplicate pairs among the benchmarked sources."""
    pairs = []
    for kind in ("exact_duplicates", "near_duplicates", "cross_source_duplicates"):
        for p in truth.get(kind, []):
            if p["source"] in sources and p["of_source"] in sources:
                pairs.append(((p["source"], p["id"]), (p["of_source"], p["of_id"])))
    return pairs


def planted_near_pairs(truth: dict, sources) -> list[tuple[Key, Key]]:
    """Planted near-duplicate pairs only: `near_duplicates` and the cross-source ones of kind near."""
    pairs = []
    for kind in ("near_duplicates", "cross_source_duplicates"):
        for p in truth.get(kind, []):
            if kind == "cross_source_duplicates" and p.get("kind") != "near":
                continue
            if p["source"] in sources and p["of_source"] in sources:
                pairs.append(((p["source"], p["id"]), (p["of_source"], p["of_id"])))
    return pairs


def score_dedup(
    pairs: list[tuple[Key, Key]],
    indexed: set[Key],
    survivors: set[Key],
    removed: set[Key],
    planted: set[Key] | None = None,
) -> dict:
    """Recall over planted pairs whose both documents reached dedup (a pair a filter already
    broke up says nothing about dedup); a pair counts as found unless both survive.
    Precision: the share of removed documents that belong to some planted pair."""
    scored = [(a, b) for a, b in pairs if a in indexed and b in indexed]
    found = sum(1 for a, b in scored if not (a in survivors and b in survivors))
    if planted is None:
        planted = {doc for pair in pairs for doc in pair}
    recall = found / len(scored) if scored else math.nan
    precision = len(removed & planted) / len(removed) if removed else math.nan
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "pairs_scored": len(scored),
        "pairs_found": found,
        "removed": len(removed),
        "removed_planted": len(removed & planted),
    }


def _keys(files, source=None) -> set[Key]:
    """(source, id) of every row; `source` given, or read from the JSON metadata column."""
    import pyarrow.parquet as pq

    keys = set()
    for f in files:
        if source is not None:
            keys.update((source, i) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist())
        else:
            table = pq.read_table(f, columns=["id", "metadata"])
            for i, meta in zip(table.column("id").to_pylist(), table.column("metadata").to_pylist()):
                keys.add((json.loads(meta)["source"], i))
    return keys


def ours_cluster_files(data_root: Path) -> list[Path]:
    """Our dedup fate tables: one file per source and snapshot under `dedup_index/clusters/`."""
    files = sorted((data_root / "dedup_index" / "clusters").glob("*/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no dedup cluster table under {data_root / 'dedup_index'}")
    return files


def ours_dedup_sets(data_root: Path) -> tuple[set[Key], set[Key], set[Key], set[Key]]:
    """(documents indexed for dedup, survivors, documents marked duplicate, of those the ones
    matched as near duplicates) of our run."""
    import pyarrow.parquet as pq

    rows = [
        r
        for f in ours_cluster_files(data_root)
        for r in pq.read_table(f, columns=["source", "id", "fate", "match"]).to_pylist()
    ]
    indexed = {(r["source"], r["id"]) for r in rows}
    removed = {(r["source"], r["id"]) for r in rows if r["fate"] == "duplicate"}
    removed_near = {(r["source"], r["id"]) for r in rows if r["fate"] == "duplicate" and r["match"] == "near"}
    survivors = set()
    for source in SOURCES:
        survivors |= _keys(sorted((data_root / "deduplicated" / source / "default").glob("part-*.parquet")), source)
    return indexed, survivors, removed, removed_near


def datatrove_dedup_sets(work: Path) -> tuple[set[Key], set[Key], set[Key], set[Key]]:
    """As ours_dedup_sets; datatrove only does MinHash, so everything it removes is "near"."""

    def parquet(folder: Path) -> list[Path]:
        return sorted(folder.rglob("*.parquet"))

    removed = _keys(parquet(work / "dedup_removed"))
    return _keys(parquet(work / "filtered")), _keys(parquet(work / "deduplicated")), removed, removed


def _fates(kept: list[Path], dropped: dict[str, list[Path]], source_of) -> dict[Key, tuple]:
    """(source, id) → ("kept",) or (filter, reason) from filtered and dropped shards."""
    import pyarrow.parquet as pq

    fates: dict[Key, tuple] = {}
    for f in kept:
        table = pq.read_table(f, columns=["id", "metadata"])
        for i, meta in zip(table.column("id").to_pylist(), table.column("metadata").to_pylist()):
            fates[(source_of(f, meta), i)] = ("kept",)
    for name, files in dropped.items():
        for f in files:
            table = pq.read_table(f, columns=["id", "metadata"])
            for i, meta in zip(table.column("id").to_pylist(), table.column("metadata").to_pylist()):
                fates[(source_of(f, meta), i)] = (name, json.loads(meta or "{}").get("filter_reason"))
    return fates


def filter_agreement(run_dir: Path) -> dict:
    """Document by document, ours' filter fates against datatrove's own filters on the same
    input: the share with the same decision (kept, or dropped by the same filter for the same
    reason), over the documents both variants filtered."""
    ours_root, dt_root = run_dir / "ours" / "data", run_dir / "datatrove"
    ours_kept = sorted((ours_root / "filtered").glob("*/default/part-*.parquet"))
    ours_dropped: dict[str, list[Path]] = {}
    for f in sorted((ours_root / "dropped").glob("*/default/*/part-*.parquet")):
        ours_dropped.setdefault(f.parent.name, []).append(f)
    dt_dropped: dict[str, list[Path]] = {}
    for f in sorted((dt_root / "dropped").glob("*/*/*.parquet")):
        dt_dropped.setdefault(f.parent.name, []).append(f)

    def ours_source(f: Path, meta) -> str:  # .../<stage>/<source>/default[/<filter>]/part-*.parquet
        parts = f.relative_to(ours_root).parts
        return parts[1]

    def dt_source(f: Path, meta) -> str:
        return json.loads(meta)["source"]

    ours = _fates(ours_kept, ours_dropped, ours_source)
    theirs = _fates(sorted((dt_root / "filtered").rglob("*.parquet")), dt_dropped, dt_source)
    both = ours.keys() & theirs.keys()
    same = sum(1 for k in both if ours[k] == theirs[k])
    differ: dict[str, int] = {}
    for k in both:
        if ours[k] != theirs[k]:
            label = f"{'/'.join(map(str, theirs[k]))} -> {'/'.join(map(str, ours[k]))}"
            differ[label] = differ.get(label, 0) + 1
    return {
        "documents": len(both),
        "same": same,
        "agreement": same / len(both) if both else math.nan,
        "only_ours": len(ours.keys() - theirs.keys()),
        "only_datatrove": len(theirs.keys() - ours.keys()),
        "differences": dict(sorted(differ.items(), key=lambda kv: -kv[1])[:10]),
    }


def per_source(keys: set[Key]) -> dict[str, int]:
    return {s: sum(1 for k in keys if k[0] == s) for s in SOURCES}


def dedup_scores(truth: dict, run_dir: Path) -> tuple[dict, dict, dict]:
    """Per variant: its dedup sets (see ours_dedup_sets), its score over every planted pair, and
    its score on near duplicates only."""
    pairs = planted_pairs(truth, SOURCES)
    near_pairs = planted_near_pairs(truth, SOURCES)
    dedup_sets = {
        "ours": ours_dedup_sets(run_dir / "ours" / "data"),
        "datatrove": datatrove_dedup_sets(run_dir / "datatrove"),
    }
    dedup = {v: score_dedup(pairs, *sets[:3]) for v, sets in dedup_sets.items()}
    # Near duplicates only: recall over planted near pairs; precision over what was removed as
    # near, where removing a document of any planted pair is right (an exact copy whose cluster
    # survivor is a near match is reported as `near`).
    planted_docs = {doc for pair in pairs for doc in pair}
    near = {v: score_dedup(near_pairs, sets[0], sets[1], sets[3], planted_docs) for v, sets in dedup_sets.items()}
    return dedup_sets, dedup, near
