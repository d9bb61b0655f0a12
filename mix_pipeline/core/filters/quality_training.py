"""Training the quality model from the recipe's own reference data, and knowing when to retrain.

Training (DCLM-style): positives are documents of the recipe's reference sources (books,
papers, an instruction set...), negatives a sample of the raw input of the sources to be scored.
scikit-learn's multinomial naive Bayes gives each hashed n-gram the log-ratio of its smoothed
frequency in the references and in the raw sample (the hashed-n-gram importance weights of DSIR),
and a one-feature logistic regression (Platt scaling) maps a document's mean log-ratio to a
probability. Naive Bayes is closed-form, so there is no optimiser whose convergence could differ
between runs; the same inputs and seed give a byte-identical model. Because most raw documents are
ordinary text, n-grams common to the references and the raw input weigh ~0 and only what the
references lack (spam vocabulary, repeated boilerplate, filler) pulls a score down. A
discriminative classifier trained on the same labels memorises the raw documents instead (they
are all negatives), see docs/quality_model.md.

A trained model records the fingerprint of what it was trained on; a recipe whose fingerprint
differs retrains (defs/plan.py).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Iterator

import numpy as np
import xxhash
from datatrove.data import Document

from mix_pipeline.core.filters.quality_model import MAX_CHARS, QualityModel, QualityModelError, featurize, load_model


def source_documents(recipe, source: str) -> Iterator[Document]:
    """Every readable document of a source's input files (all snapshots), read the way the raw
    stage reads them; quarantined records are skipped."""
    from mix_pipeline.core.io.readers import SourceReader
    from mix_pipeline.recipe.inputs import snapshots, source_files, source_root

    spec = recipe.sources[source]
    for snapshot in snapshots(recipe, source):
        reader = SourceReader(files=[], root=source_root(recipe, source, snapshot), source=source,
                              domain=recipe.domain_of(source), fmt=spec.format, text_field=spec.text_field,
                              id_field=spec.id_field, quarantine_writer=None,
                              max_document_bytes=spec.max_document_bytes)
        for path in source_files(recipe, source, snapshot):
            for ok, doc in reader.read_file(path):
                if ok:
                    doc.metadata["snapshot"] = snapshot
                    yield doc


def sample(docs: Iterator[Document], n: int, seed: int) -> list[str]:
    """The `n` documents with the smallest seeded hash of (source, id): a uniform sample that
    does not depend on file order, streamed with n texts in memory."""
    heap: list[tuple[int, str, str]] = []
    for doc in docs:
        key = xxhash.xxh3_64_intdigest(f"{seed}\x1f{doc.metadata.get('source')}\x1f{doc.id}".encode())
        item = (-key, f"{doc.metadata.get('source')}\x1f{doc.id}", doc.text[:MAX_CHARS])
        if len(heap) < n:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    return [text for _, _, text in sorted(heap, reverse=True)]


def training_fingerprint(recipe) -> str:
    """What a trained model depends on: the quality_model settings and the input files of its
    reference and scored sources (path, size, mtime)."""
    from mix_pipeline.recipe.inputs import snapshots, source_files

    spec = recipe.quality_model
    files = []
    for source in sorted(set(spec.references) | set(spec.negatives_from(recipe))):
        for snapshot in snapshots(recipe, source):
            for path in source_files(recipe, source, snapshot):
                if "://" in path:  # an object's size and ETag (core/io/storage.py)
                    from mix_pipeline.core.io import storage

                    files.append((source, path, *storage.stat(path)))
                    continue
                st = os.stat(path)
                files.append((source, os.path.relpath(path, recipe.base_dir), st.st_size, st.st_mtime_ns))
    payload = {"spec": spec.model_dump(exclude={"buckets"}), "files": files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def train(recipe, log=lambda _msg: None) -> QualityModel:
    """Train the recipe's quality model; deterministic under `quality_model.seed`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB
    from threadpoolctl import threadpool_limits

    spec = recipe.quality_model
    negatives_from = spec.negatives_from(recipe)
    per_source = max(1, spec.max_documents // len(spec.references))
    positives = [t for s in spec.references for t in sample(source_documents(recipe, s), per_source, spec.seed)]
    negatives = sample((d for s in negatives_from for d in source_documents(recipe, s)), spec.max_documents, spec.seed)
    if not positives or not negatives:
        empty = "references" if not positives else "scored sources"
        raise QualityModelError(f"quality_model: the {empty} have no readable documents to train on")
    log(f"quality_model: training on {len(positives)} reference and {len(negatives)} sampled documents")
    texts = positives + negatives
    y = np.array([1] * len(positives) + [0] * len(negatives))
    counts = featurize(texts, spec.hash_bits, spec.ngrams, norm=None)

    def log_ratios(rows: np.ndarray) -> np.ndarray:
        nb = MultinomialNB(alpha=spec.alpha).fit(counts[rows], y[rows])
        return (nb.feature_log_prob_[1] - nb.feature_log_prob_[0]).astype(np.float32)

    with threadpool_limits(1):  # one thread: the same sums in the same order on every run
        weights = log_ratios(np.arange(len(texts)))
        # Platt scaling on out-of-fold evidence (two folds by position in the seeded samples):
        # in-sample, every raw document would look less like the references than a new one does.
        evidence = np.zeros(len(texts))
        fold = np.arange(len(texts)) % 2
        for k in (0, 1):
            held = QualityModel(spec.hash_bits, spec.ngrams, 1.0, 0.0, log_ratios(np.flatnonzero(fold != k)), {})
            evidence[fold == k] = held.evidence([t for t, f in zip(texts, fold) if f == k])
        platt = LogisticRegression(class_weight="balanced", solver="lbfgs", max_iter=1000)
        platt.fit(evidence.reshape(-1, 1), y)
    info = {"references": list(spec.references), "negatives_from": negatives_from, "positives": len(positives),
            "negatives": len(negatives), "seed": spec.seed, "alpha": spec.alpha,
            "fingerprint": training_fingerprint(recipe)}
    # Rounded so the header's decimal text is the value (no platform-dependent last digits).
    return QualityModel(spec.hash_bits, spec.ngrams, round(float(platt.coef_[0][0]), 6),
                        round(float(platt.intercept_[0]), 6), weights, info)


def needs_training(recipe) -> bool:
    return recipe.quality_model is not None and not recipe.quality_model.model


def recorded_fingerprint(path: str) -> str | None:
    try:
        return load_model(path).info.get("fingerprint")
    except QualityModelError:
        return None
