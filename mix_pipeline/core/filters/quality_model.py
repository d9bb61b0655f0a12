"""The quality classifier's model, its file, and the `quality_classifier` filter that scores with it.

Features are scikit-learn's `HashingVectorizer` (word 1-2 grams hashed into 2^hash_bits columns,
stateless, so there is no vocabulary to store or to drift). The model is linear: each hashed n-gram
weighs the log-ratio of its smoothed frequency in the references and in the raw sample (trained in
quality_training.py), a document's evidence is the mean log-ratio over its n-grams (so length does
not decide), and a one-feature logistic regression (Platt scaling) maps that to a probability.

The model file is ours, not a pickle: a magic line, a JSON header (features, scale, intercept,
what it was trained on) and the little-endian float32 weights; loading a file never runs code.

A document's score is P(reference-like | text) in [0, 1]. Which sources a recipe scores and its
quality buckets (`web@high`) are quality_recipe.py; the buckets as mixture sources are
core/mixing/quality_buckets.py; score distributions and ROC AUC are quality_reports.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from mix_pipeline.core.filters.base import FilterFamily
from mix_pipeline.names import META_FILTER_VALUE, META_QUALITY_SCORE

MAGIC = b"mix_pipeline-QUALITY-MODEL 1\n"
MODEL_FILE = "model.bin"
MODEL_DIR = "quality_model"
# Word 1-2 grams plus runs of punctuation ("###", "!!!"): symbol soup and shouting are features.
TOKEN_PATTERN = r"(?u)\w+|[^\w\s]+"
# Characters of a document the model reads (the head decides; bounded cost on huge documents).
MAX_CHARS = 20_000
# Documents the filter scores per vectorizer call.
BATCH_DOCUMENTS = 64


class QualityModelError(ValueError):
    """A model file that cannot be used, phrased as one line naming the file."""


@functools.cache
def _vectorizer(hash_bits: int, ngrams: int, norm: str | None):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=2**hash_bits, ngram_range=(1, ngrams), alternate_sign=False, norm=norm, lowercase=True,
        token_pattern=TOKEN_PATTERN, dtype=np.float64,
    )


def featurize(texts: list[str], hash_bits: int, ngrams: int, norm: str | None = "l1"):
    """Hashed n-gram counts (`norm=None`, for training) or frequencies (`l1`, for scoring)."""
    return _vectorizer(hash_bits, ngrams, norm).transform([t[:MAX_CHARS] for t in texts])


@dataclass(frozen=True)
class QualityModel:
    hash_bits: int
    ngrams: int
    scale: float
    intercept: float
    weights: np.ndarray  # float32, 2**hash_bits: per-n-gram log-ratio references / raw
    info: dict

    def evidence(self, texts: list[str]) -> np.ndarray:
        """Mean log-ratio over each text's n-grams (0 for a text without any)."""
        return featurize(texts, self.hash_bits, self.ngrams) @ self.weights.astype(np.float64)

    def score_many(self, texts: list[str]) -> np.ndarray:
        """P(reference-like) per text, as float64 (the same bytes in, the same scores out)."""
        if not texts:
            return np.zeros(0)
        z = self.scale * self.evidence(texts) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, text: str) -> float:
        return float(self.score_many([text])[0])

    def to_bytes(self) -> bytes:
        header = {"format": "hashing-naive-bayes", "hash_bits": self.hash_bits, "ngrams": self.ngrams,
                  "token_pattern": TOKEN_PATTERN, "max_chars": MAX_CHARS, "scale": self.scale,
                  "intercept": self.intercept,
                  "info": self.info}
        return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + self.weights.astype("<f4").tobytes()


def load_model(path: str) -> QualityModel:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise QualityModelError(f"{path}: cannot read the quality model ({exc.strerror or exc})") from None
    if not data.startswith(MAGIC):
        raise QualityModelError(f"{path}: not a mix_pipeline quality model (train one with the quality_model asset)")
    head, sep, body = data[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(head)
        bits, ngrams = int(header["hash_bits"]), int(header["ngrams"])
        float(header["scale"]), float(header["intercept"])
        weights = np.frombuffer(body, dtype="<f4")
        if not sep or len(weights) != 2**bits or header.get("token_pattern") != TOKEN_PATTERN:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise QualityModelError(f"{path}: corrupt quality model file (retrain it, or name another file)") from None
    return QualityModel(bits, ngrams, float(header["scale"]), float(header["intercept"]), weights,
                        header.get("info", {}))


def model_path(recipe) -> str:
    """The model the recipe's classifier filters use: the file the user names, or the trained one."""
    spec = recipe.quality_model
    if spec is not None and spec.model:
        return recipe.resolve(spec.model)
    return os.path.join(recipe.data_root_path, MODEL_DIR, MODEL_FILE)


def write_model(model: QualityModel, path: str) -> str:
    """Write atomically; returns the file's sha256."""
    data = model.to_bytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


class QualityClassifierFilter(BaseFilter, FilterFamily):
    """Scores each document with the quality model (`quality_score` in its metadata) and drops
    those below `threshold`; threshold 0 keeps everything (scores only, for buckets).

    `model` is the model file; the recipe sets it to its quality_model's file unless the filter
    names its own."""

    name = "🏅 Quality classifier"

    def __init__(self, threshold: float = 0.0, model: str | None = None, exclusion_writer=None):
        super().__init__(exclusion_writer)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be within [0, 1] (got {threshold})")
        self.threshold = float(threshold)
        self.model = model
        self.batch_size = BATCH_DOCUMENTS
        self._model: QualityModel | None = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}

    def _judge(self, doc: Document, score: float) -> bool | tuple[bool, str]:
        score = round(float(score), 6)
        doc.metadata[META_QUALITY_SCORE] = score
        if score < self.threshold:
            doc.metadata[META_FILTER_VALUE] = json.dumps({"score": score, "threshold": self.threshold}, sort_keys=True)
            return False, "quality_below_threshold"
        return True

    def _loaded(self) -> QualityModel:
        if self._model is None:
            if not self.model:
                raise QualityModelError("quality_classifier: no model file (add a quality_model section to the recipe)")
            self._model = load_model(self.model)
        return self._model

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self._judge(doc, self._loaded().score(doc.text))

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        # One vectorizer call per batch: per-call overhead dominates on short documents. A row's
        # score does not depend on the other rows of its batch.
        scores = self._loaded().score_many([doc.text for doc in batch])
        return [self._judge(doc, s) for doc, s in zip(batch, scores)]
