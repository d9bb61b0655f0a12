"""Model-based quality: a classifier trained from the recipe's own reference data, the
`quality_classifier` filter that scores with it, and quality buckets as mixture sources.

Training (DCLM-style): positives are documents of the recipe's reference sources (books,
papers, an instruction set...), negatives a sample of the raw input of the sources to be scored.
Features are scikit-learn's `HashingVectorizer` (word 1-2 grams hashed into 2^hash_bits columns,
stateless, so there is no vocabulary to store or to drift). The model is linear: scikit-learn's
multinomial naive Bayes gives each hashed n-gram the log-ratio of its smoothed frequency in the
references and in the raw sample (the hashed-n-gram importance weights of DSIR), a document's
evidence is the mean log-ratio over its n-grams (so length does not decide), and a one-feature
logistic regression (Platt scaling) maps that to a probability. Naive Bayes is closed-form, so
there is no optimiser whose convergence could differ between runs; the same inputs and seed give
a byte-identical model. Because most raw documents are ordinary text, n-grams common to the
references and the raw input weigh ~0 and only what the references lack (spam vocabulary,
repeated boilerplate, filler) pulls a score down. A discriminative classifier trained on the
same labels memorises the raw documents instead (they are all negatives), see docs/quality_model.md.

The model file is ours, not a pickle: a magic line, a JSON header (features, scale, intercept,
what it was trained on) and the little-endian float32 weights; loading a file never runs code.

A document's score is P(reference-like | text) in [0, 1]. Buckets split a scored source by score
(`web@high`), so a mixture can weight the best of a source up and the rest down.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import xxhash
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from mix_pipeline.core.filters.base import FilterFamily
from mix_pipeline.core.filters.registry import QUALITY_CLASSIFIER
from mix_pipeline.names import META_FILTER_VALUE, META_QUALITY_SCORE

MAGIC = b"mix_pipeline-QUALITY-MODEL 1\n"
MODEL_FILE = "model.bin"
MODEL_DIR = "quality_model"
BUCKET_SEPARATOR = "@"
FILTER_NAME = QUALITY_CLASSIFIER
# Word 1-2 grams plus runs of punctuation ("###", "!!!"): symbol soup and shouting are features.
TOKEN_PATTERN = r"(?u)\w+|[^\w\s]+"
# Characters of a document the model reads (the head decides; bounded cost on huge documents).
MAX_CHARS = 20_000
# Documents the filter scores per vectorizer call.
BATCH_DOCUMENTS = 64
# Thresholds the UI's kept-share table is computed at.
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


class QualityModelError(ValueError):
    """A model file that cannot be used, phrased as one line naming the file."""


# ---- features and the model file ---------------------------------------------------------
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


# ---- training ----------------------------------------------------------------------------
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


def needs_training(recipe) -> bool:
    return recipe.quality_model is not None and not recipe.quality_model.model


def recorded_fingerprint(path: str) -> str | None:
    try:
        return load_model(path).info.get("fingerprint")
    except QualityModelError:
        return None


# ---- the filter --------------------------------------------------------------------------
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


# ---- recipe checks -----------------------------------------------------------------------
def scored_sources(recipe) -> list[str]:
    return [s for s, spec in recipe.sources.items() if any(f.name == FILTER_NAME for f in spec.filters)]


def split_bucket(name: str) -> tuple[str, str | None]:
    source, sep, bucket = name.partition(BUCKET_SEPARATOR)
    return source, (bucket if sep else None)


def base_source(name: str) -> str:
    return split_bucket(name)[0]


def bucket_error(recipe, name: str) -> str | None:
    """Why `name` (`source@bucket`) is not a usable mixture source, or None."""
    source, bucket = split_bucket(name)
    if source not in recipe.sources:
        return f"unknown source '{source}' (sources: {', '.join(recipe.sources)})"
    if recipe.quality_model is None:
        return "quality buckets need a top-level quality_model section"
    if source not in scored_sources(recipe):
        return f"source '{source}' has no quality_classifier filter, so its documents carry no score"
    if bucket not in recipe.quality_model.buckets:
        return f"unknown bucket '{bucket}' (buckets: {', '.join(recipe.quality_model.buckets)})"
    return None


def check_recipe(recipe) -> None:
    """Cross-checks of the quality model's settings; raises ValueError with the key's path."""
    spec = recipe.quality_model
    for source in scored_sources(recipe):
        f = next(f for f in recipe.sources[source].filters if f.name == FILTER_NAME)
        try:
            QualityClassifierFilter(**f.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sources.{source}.filters.quality_classifier: {exc}") from None
        if spec is None and not f.params.get("model"):
            raise ValueError(f"sources.{source}.filters.quality_classifier: needs a top-level quality_model "
                             "section (or a 'model' file of its own)")
    if spec is None:
        return
    for key, names in (("references", spec.references), ("score", spec.score or [])):
        for s in names:
            if s not in recipe.sources:
                raise ValueError(f"quality_model.{key}: unknown source '{s}' (sources: {', '.join(recipe.sources)})")
    if not spec.model and not spec.negatives_from(recipe):
        raise ValueError("quality_model.score: name the sources to sample negatives from "
                         "(no source has a quality_classifier filter)")
    overlap = set(spec.references) & set(spec.negatives_from(recipe))
    if overlap:
        raise ValueError(f"quality_model: {', '.join(sorted(overlap))} cannot be both a reference and a scored source")
    for name, mix in recipe.mixtures.items():
        drawn = mix.source_names(recipe.sources)
        for s in drawn:
            if BUCKET_SEPARATOR in s and base_source(s) in drawn:
                raise ValueError(f"mixtures.{name}: draws from '{base_source(s)}' and its bucket '{s}'; "
                                 "weight the whole source or its buckets, not both")
            if BUCKET_SEPARATOR in s and mix.outputs.tokenized:
                raise ValueError(f"mixtures.{name}.outputs.tokenized: not available for mixtures of quality buckets")


def bind_models(recipe):
    """The recipe with every quality_classifier filter pointed at its model file (resolved)."""
    if not scored_sources(recipe):
        return recipe
    sources = dict(recipe.sources)
    for source in scored_sources(recipe):
        spec = sources[source]
        filters = []
        for f in spec.filters:
            if f.name == FILTER_NAME:
                own = f.params.get("model")
                f = f.model_copy(update={"params": {**f.params, "model": recipe.resolve(own) if own else model_path(recipe)}})
            filters.append(f)
        sources[source] = spec.model_copy(update={"filters": filters})
    return recipe.model_copy(update={"sources": sources})


def filter_fingerprint(recipe, source: str) -> str | None:
    """The sha256 of the model file a source's classifier reads (None when it has none), so a
    retrained model reruns the filtered stage of the sources it scores."""
    for f in recipe.sources[source].filters:
        if f.name == FILTER_NAME:
            path = f.params.get("model") or model_path(recipe)
            if not os.path.exists(path):
                return "missing"
            with open(path, "rb") as fh:
                return hashlib.sha256(fh.read()).hexdigest()
    return None


# ---- buckets in a mixture ----------------------------------------------------------------
def bucket_bounds(recipe, name: str) -> tuple[float, float]:
    """[low, high) score bounds of `source@bucket` (the top bucket includes 1.0)."""
    buckets = sorted(recipe.quality_model.buckets.items(), key=lambda kv: kv[1])
    _, bucket = split_bucket(name)
    i = [b for b, _ in buckets].index(bucket)
    high = buckets[i + 1][1] if i + 1 < len(buckets) else math.inf
    return buckets[i][1], high


def write_bucket(files: list[str], low: float, high: float, out_dir: str) -> list[str]:
    """Copy the documents whose score lies in [low, high) into shards under `out_dir`, one per
    input shard, in order, a batch at a time. Returns the shards written (empty ones are not)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    out, con = [], duckdb.connect()
    try:
        for k, path in enumerate(files):
            target = os.path.join(out_dir, f"part-{k:05d}.parquet")
            writer = None
            for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
                meta = pa.table({"m": batch.column(batch.schema.get_field_index("metadata"))})
                con.register("b", meta)
                scores = con.execute(f"SELECT CAST(json_extract(m, '$.{META_QUALITY_SCORE}') AS DOUBLE) AS s FROM b"
                                     ).fetchnumpy()["s"]
                con.unregister("b")
                scores = np.asarray(np.ma.filled(scores, np.nan), dtype=np.float64)
                mask = (scores >= low) & (scores < high)
                if mask.any():
                    if writer is None:
                        writer = pq.ParquetWriter(target, batch.schema, compression="zstd")
                    writer.write_table(pa.Table.from_batches([batch.filter(pa.array(mask))]))
            if writer is not None:
                writer.close()
                out.append(target)
    finally:
        con.close()
    return out


def mixture_files(recipe, name: str, sources: list[str], files_of, work_dir: str) -> dict[str, list[str]]:
    """The shards each mixture source draws from: a plain source's own (`files_of(source)`), a
    bucket's the documents of its source in the bucket's score range, written under `work_dir`."""
    import shutil

    out = {}
    for s in sources:
        if BUCKET_SEPARATOR not in s:
            out[s] = files_of(s)
            continue
        folder = os.path.join(work_dir, "buckets", name, s.replace(BUCKET_SEPARATOR, "__"))
        shutil.rmtree(folder, ignore_errors=True)
        out[s] = write_bucket(files_of(base_source(s)), *bucket_bounds(recipe, s), folder)
    return out


def bucket_pool(pool, name: str):
    """A bucket's pool: documents hashed by their own source (so splits agree with every other
    copy of them), ordered under the bucket's name."""
    return replace(pool, source=name)


def manifest_buckets(recipe, sources: list[str]) -> dict:
    out = {}
    for s in sources:
        if BUCKET_SEPARATOR in s:
            low, high = bucket_bounds(recipe, s)
            out[s] = {"source": base_source(s), "bucket": split_bucket(s)[1], "min_score": low,
                      "max_score": None if math.isinf(high) else high}
    return out


# ---- reports: score distributions and kept share against threshold ---------------------
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
