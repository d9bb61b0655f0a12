"""What the quality model does on the recipe's data: score distributions and the share each
threshold would keep (the quality_model asset's metadata), and ROC AUC against a ground truth
of planted low-quality documents (the sample corpus's scoring, benchmarks/bench_quality.py).
"""

from __future__ import annotations

import numpy as np

from mix_pipeline.core.filters.quality_model import QualityModel, load_model, model_path
from mix_pipeline.core.filters.quality_recipe import scored_sources
from mix_pipeline.core.filters.quality_training import source_documents

# Thresholds the UI's kept-share table is computed at.
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


def distribution(scores: np.ndarray, bins: int = 10) -> list[int]:
    counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return [int(c) for c in counts]


def score_report(recipe, model: QualityModel, batch: int = 256) -> list[dict]:
    """Per scored source × snapshot: documents, mean score, histogram (10 bins over [0, 1]) and
    the share a threshold at 0.1 … 0.9 would keep, from the raw input."""
    rows = []
    for source in scored_sources(recipe):
        by_snapshot: dict[str, list[np.ndarray]] = {}
        texts, snaps = [], []

        def flush():
            scores = model.score_many(texts)
            for snap in sorted(set(snaps)):
                by_snapshot.setdefault(snap, []).append(scores[np.array(snaps) == snap])
            texts.clear()
            snaps.clear()

        for doc in source_documents(recipe, source):
            texts.append(doc.text)
            snaps.append(doc.metadata["snapshot"])
            if len(texts) >= batch:
                flush()
        if texts:
            flush()
        for snap, parts in sorted(by_snapshot.items()):
            scores = np.concatenate(parts)
            rows.append({
                "source": source, "snapshot": snap, "documents": len(scores),
                "mean_score": round(float(scores.mean()), 4) if len(scores) else None,
                "histogram": distribution(scores),
                "kept_share": {f"{t:.1f}": round(float((scores >= t).mean()), 4) if len(scores) else None
                               for t in THRESHOLDS},
            })
    return rows


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney AUC (ties count half): P(score of a positive > score of a negative)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# Ground-truth lists whose documents are quality text with another planted property (a copy,
# PII, an eval item, length): they count as high quality. Short, non-English and offensive
# pages are left out of the AUC: their quality is not what the classifier is asked about.
_NOT_QUALITY_LABELLED = ("short", "non_english", "offensive")


def score_against_truth(recipe, truth: dict, model: QualityModel | None = None) -> dict:
    """ROC AUC of the recipe's model separating the planted low-quality documents of each scored
    source from its clean ones, overall and per low-quality kind."""
    model = model or load_model(model_path(recipe))
    low = {(e["source"], e["id"]): e["kind"] for e in truth.get("low_quality", [])}
    excluded = {(e["source"], e["id"]) for k in _NOT_QUALITY_LABELLED for e in truth.get(k, [])}
    out: dict = {"model": model_path(recipe), "sources": {}}
    for source in scored_sources(recipe):
        ids, texts = [], []
        for doc in source_documents(recipe, source):
            if (source, doc.id) not in excluded:
                ids.append(doc.id)
                texts.append(doc.text)
        scores = model.score_many(texts)
        kinds = np.array([low.get((source, i), "") for i in ids])
        clean = kinds == ""
        entry = {"clean": int(clean.sum()), "low_quality": int((~clean).sum()),
                 "roc_auc": _round(roc_auc(clean, scores)), "by_kind": {}}
        for kind in sorted({str(k) for k in kinds} - {""}):
            pick = clean | (kinds == kind)
            entry["by_kind"][kind] = {"planted": int((kinds == kind).sum()),
                                      "roc_auc": _round(roc_auc(clean[pick], scores[pick]))}
        out["sources"][source] = entry
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
