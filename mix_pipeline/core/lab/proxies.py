"""The lab's proxy models behind one interface (`key`, `describe`, `encode`, `new`, `add`, `losses`):
a hashed word-bigram model with interpolated absolute discounting, and an adapter for the small
transformer of core/lab/neural.py. `make_proxy` builds the one an experiment's proxy spec names.

The bigram model keeps only hashed-bigram counts (merged in bounded buffers) and the held-out
word ids. Nothing here imports Dagster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash

_WORD = re.compile(r"\w+|[^\w\s]")
# Counts are merged (np.unique) once this many bigram entries are buffered: bounds memory.
_FLUSH_ENTRIES = 2_000_000
# Word → id cache entries kept before the cache is cleared (ids are a pure function of the word).
_CACHE_WORDS = 1_000_000


class WordHasher:
    """Lower-cased words and punctuation → ids in [1, buckets]; 0 is the document boundary."""

    def __init__(self, buckets: int):
        self.buckets = buckets
        self._cache: dict[str, int] = {}

    def ids(self, text: str) -> np.ndarray:
        cache, out = self._cache, []
        for word in _WORD.findall(text.lower()):
            i = cache.get(word)
            if i is None:
                if len(cache) >= _CACHE_WORDS:
                    cache.clear()
                i = cache[word] = xxhash.xxh3_64_intdigest(word.encode("utf-8")) % self.buckets + 1
            out.append(i)
        return np.array([0] + out, dtype=np.int64)


class BigramCounts:
    """Bigram counts (hashed keys a·V+b) accumulated from documents, each with a multiplicity."""

    def __init__(self, size: int):
        self.size = size  # vocabulary size including the boundary id
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0

    def add(self, ids: np.ndarray, times: int) -> None:
        if len(ids) < 2 or times <= 0:
            return
        keys = ids[:-1] * self.size + ids[1:]
        self._buffer.append((keys, np.full(len(keys), times, np.int64)))
        self._buffered += len(keys)
        if self._buffered >= _FLUSH_ENTRIES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._buffer])
        counts = np.concatenate([self.counts] + [c for _, c in self._buffer])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts).astype(np.int64)
        self._buffer, self._buffered = [], 0

    def model(self, discount: float, unigram_k: float) -> BigramModel:
        self._flush()
        return BigramModel(self.keys, self.counts, self.size, discount, unigram_k)


@dataclass
class BigramModel:
    """Interpolated absolute discounting: p(b|a) = max(c(a,b) − d, 0)/c(a) + d·N1+(a)/c(a)·p1(b),
    with p1 the add-k unigram distribution over the whole (hashed) vocabulary; p1 alone when a
    was never seen."""

    keys: np.ndarray
    counts: np.ndarray
    size: int
    discount: float
    unigram_k: float

    def __post_init__(self):
        a, b = self.keys // self.size, self.keys % self.size
        self.context = np.bincount(a, weights=self.counts, minlength=self.size)
        self.types = np.bincount(a, minlength=self.size).astype(np.float64)
        unigram = np.bincount(b, weights=self.counts, minlength=self.size)
        self.unigram = (unigram + self.unigram_k) / (unigram.sum() + self.unigram_k * self.size)

    def loss(self, a: np.ndarray, b: np.ndarray) -> float:
        """Mean negative log-likelihood (nats per word) of the bigrams (a[i], b[i])."""
        if len(a) == 0:
            return float("nan")
        key = a * self.size + b
        c_ab = np.zeros(len(key), np.int64)
        if len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
            hit = self.keys[pos] == key
            c_ab[hit] = self.counts[pos[hit]]
        c_a, p1 = self.context[a], self.unigram[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(c_a > 0, (np.maximum(c_ab - self.discount, 0) + self.discount * self.types[a] * p1) / c_a, p1)
        return float(-np.log(p).mean())


def _bigram_arrays(id_arrays) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for ids in id_arrays:
        a.append(ids[:-1])
        b.append(ids[1:])
    if not a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a), np.concatenate(b)


class BigramProxy:
    """The word-bigram proxy behind the common interface: `score(streams_by_candidate)`."""

    def __init__(self, spec, texts: dict[str, list[str]]):
        self.spec = spec
        self.hasher = WordHasher(spec.vocab_buckets)
        self.size = spec.vocab_buckets + 1
        self.heldout = {d: _bigram_arrays(self.hasher.ids(t) for t in ts) for d, ts in texts.items()}

    def key(self) -> dict:
        return {"kind": "bigram", "vocab_buckets": self.spec.vocab_buckets, "discount": self.spec.discount,
                "unigram_k": self.spec.unigram_k}

    def describe(self) -> dict:
        return {**self.key(), "kind": "word bigram, interpolated absolute discounting", "parameters": None}

    def encode(self, text: str):
        return self.hasher.ids(text)

    def new(self):
        return BigramCounts(self.size)

    def add(self, acc, item, times: int) -> None:
        acc.add(item, times)

    def losses(self, acc) -> dict[str, float]:
        model = acc.model(self.spec.discount, self.spec.unigram_k)
        return {dom: model.loss(*self.heldout[dom]) for dom in sorted(self.heldout)}


class NeuralLabProxy:
    """The transformer proxy (core/lab/neural.py): documents accumulate into one byte stream per
    candidate; a model is trained on it and scored on each domain's held-out windows."""

    def __init__(self, spec, seed: int, texts: dict[str, list[str]], steps_scale: float = 1.0):
        from mix_pipeline.core.lab import neural as lab_neural

        self.nn = lab_neural
        self.model = lab_neural.NeuralProxy(spec, seed, steps_scale)
        self.spec, self.seed = spec, seed
        self.heldout = {d: lab_neural.eval_windows(np.concatenate([lab_neural.encode(t) for t in ts] or
                                                                  [np.zeros(0, np.int16)]),
                                                   spec.seq_len, spec.eval_windows)
                        for d, ts in texts.items()}
        self.trained = 0

    def key(self) -> dict:
        return {**self.spec.model_dump(exclude={"vocab_buckets", "discount", "unigram_k", "device"}),
                "steps": self.model.steps, "seed": self.seed}

    def describe(self) -> dict:
        return self.model.describe()

    def encode(self, text: str):
        return self.nn.encode(text)

    def new(self):
        return []

    def add(self, acc, item, times: int) -> None:
        acc.extend([item] * times)

    def losses(self, acc) -> dict[str, float]:
        stream = np.concatenate(acc) if acc else np.full(self.spec.seq_len + 2, self.nn.BOUNDARY, np.int16)
        model = self.model.train(stream)
        self.trained += 1
        return {dom: self.model.loss(model, self.heldout[dom]) for dom in sorted(self.heldout)}


def make_proxy(spec, seed: int, texts: dict[str, list[str]], log=None, steps_scale: float = 1.0):
    if spec.kind == "neural":
        proxy = NeuralLabProxy(spec, seed, texts, steps_scale)
        if log:
            d = proxy.describe()
            log(f"lab: neural proxy, {d['parameters']:,} parameters, {d['steps']} steps of {d['batch']}x{d['seq_len']} "
                f"bytes on {d['device']}")
        return proxy
    return BigramProxy(spec, texts)
