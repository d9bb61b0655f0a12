"""A synthetic corpus of many short documents with planted exact and near copies, for
bench_scale.py: how the driver's memory grows with the number of documents.

Documents are 80-110 words (about 500-700 bytes) drawn independently from the word frequencies
of `mix_pipeline.sample.english` (the Python documentation's prose, shipped with CPython), cut
into sentences with commas and full stops. That is word salad, but English word salad: the
language filter reads it as English and the Gopher quality and repetition filters keep it, so
every stage has a full load. Independent words also mean two unrelated documents share no
5-word shingle, so MinHash candidates are the planted copies only.

Planted, per chunk of documents:
- exact copies (EXACT_SHARE): the text of another document, under a new id, in either source;
- near copies (NEAR_SHARE): the same, with one word replaced by another and one word's case
  changed. One replaced word removes five of the ~90 shingles and adds five, so their Jaccard
  is at least (76 - 5) / (76 + 5) ≈ 0.88 against the recipe threshold of 0.8;
- short documents (SHORT_SHARE): 12-30 words, which web's gopher_quality drops (50 words minimum),
  so the filters drop something.
Originals are drawn from the chunk's other documents, so copies of copies do not occur.

Built chunk by chunk (one web JSONL.gz file and one wiki Parquet file per chunk, with numpy):
memory stays that of one chunk whatever the size. `planted.parquet` lists every planted pair as
(kind, source, id, of_source, of_id).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SOURCE_FORMATS = {"web": "jsonl", "wiki": "parquet"}
SOURCE_PATTERNS = {"web": "web/*.jsonl.gz", "wiki": "wiki/*.parquet"}
WEB_SHARE = 0.7  # of the documents; the rest are wiki's
WORDS = (80, 110)  # words per document, inclusive
SHORT_WORDS = (12, 30)
EXACT_SHARE, NEAR_SHARE, SHORT_SHARE = 0.02, 0.03, 0.01
SENTENCE_END_P, COMMA_P = 1 / 11, 0.05
DOCS_PER_CHUNK = 100_000
MIN_CHUNKS = 4  # at least one input file per task of the benchmark recipe, for each source
VARIANTS = 6  # each word as: word, word", ", word".", Word, Word", ", Word"."
PLANTED_SCHEMA = pa.schema([("kind", pa.string()), ("source", pa.string()), ("id", pa.string()),
                            ("of_source", pa.string()), ("of_id", pa.string())])
SUMMARY = "corpus.json"


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[np.ndarray, np.ndarray]:
    """(token table, word probabilities): the lower-case words of the sample corpus's English
    model with their frequencies, each in VARIANTS spellings (token = word * VARIANTS + variant)."""
    from mix_pipeline.sample.english import english_model

    counts: dict[str, int] = {}
    for options in english_model().chain.values():
        for token in options:
            word = token.rstrip(".,;:!?")
            if re.fullmatch(r"[a-z][a-z']*", word):
                counts[word] = counts.get(word, 0) + 1
    words = sorted(counts)
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    table = []
    for w in words:
        cap = w[0].upper() + w[1:]
        table += [w, w + ",", w + ".", cap, cap + ",", cap + "."]
    return np.array(table, dtype=object), freq / freq.sum()


def _roles(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Document indices of the chunk by role; each copy's original is a distinct base document."""
    n_exact, n_near, n_short = (int(round(n * s)) for s in (EXACT_SHARE, NEAR_SHARE, SHORT_SHARE))
    perm = rng.permutation(n)
    exact, near = perm[:n_exact], perm[n_exact:n_exact + n_near]
    short, base = perm[n_exact + n_near:n_exact + n_near + n_short], perm[n_exact + n_near + n_short:]
    originals = rng.choice(base, size=n_exact + n_near, replace=False)
    return {"exact": exact, "near": near, "short": short,
            "exact_of": originals[:n_exact], "near_of": originals[n_exact:]}


def _copy_tokens(tokens: np.ndarray, offsets: np.ndarray, copies: np.ndarray, originals: np.ndarray) -> None:
    """Overwrite each copy's tokens with its original's (same lengths), in one vectorised move."""
    lens = offsets[copies + 1] - offsets[copies]
    within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    tokens[np.repeat(offsets[copies], lens) + within] = tokens[np.repeat(offsets[originals], lens) + within]


def _edit_near(rng: np.random.Generator, tokens: np.ndarray, offsets: np.ndarray, near: np.ndarray,
               n_words: int) -> None:
    """In each near copy, replace one inner word by another word (same spelling variant) and
    switch the case of another inner word."""
    lens = offsets[near + 1] - offsets[near]
    first = offsets[near] + 1
    replaced = first + (rng.random(len(near)) * (lens - 2)).astype(np.int64)
    recased = first + (replaced - first + 1 + (rng.random(len(near)) * (lens - 3)).astype(np.int64)) % (lens - 2)
    word, variant = tokens[replaced] // VARIANTS, tokens[replaced] % VARIANTS
    new = (word + rng.integers(1, n_words, len(near))) % n_words  # never the same word
    tokens[replaced] = new * VARIANTS + variant
    v = tokens[recased] % VARIANTS
    tokens[recased] += (v + VARIANTS // 2) % VARIANTS - v


def chunk_texts(rng: np.random.Generator, n: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """`n` documents' texts and their roles (see `_roles`)."""
    table, probs = vocabulary()
    roles = _roles(rng, n)
    lengths = rng.integers(WORDS[0], WORDS[1] + 1, n)
    lengths[roles["short"]] = rng.integers(SHORT_WORDS[0], SHORT_WORDS[1] + 1, len(roles["short"]))
    for kind in ("exact", "near"):
        lengths[roles[kind]] = lengths[roles[f"{kind}_of"]]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    total = int(offsets[-1])
    ends = rng.random(total) < SENTENCE_END_P
    ends[offsets[1:] - 1] = True
    starts = np.empty(total, dtype=bool)
    starts[0], starts[1:] = True, ends[:-1]
    variant = np.where(ends, 2, (rng.random(total) < COMMA_P).astype(np.int64)) + 3 * starts
    tokens = rng.choice(len(probs), size=total, p=probs) * VARIANTS + variant
    for kind in ("exact", "near"):
        _copy_tokens(tokens, offsets, roles[kind], roles[f"{kind}_of"])
    _edit_near(rng, tokens, offsets, roles["near"], len(probs))
    words = table[tokens].tolist()
    return [" ".join(words[a:b]) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())], roles


def _write_sources(folder: Path, chunk: int, ids: list[str], texts: list[str], is_web: np.ndarray) -> int:
    """Write the chunk's web documents as gzip JSON Lines and its wiki documents as Parquet;
    returns the text bytes written."""
    web = np.flatnonzero(is_web).tolist()
    wiki = np.flatnonzero(~is_web).tolist()
    lines = "".join(json.dumps({"id": ids[i], "text": texts[i]}) + "\n" for i in web).encode()
    with open(folder / "web" / f"part-{chunk:05d}.jsonl.gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as gz:
            gz.write(lines)
    pq.write_table(pa.table({"id": [ids[i] for i in wiki], "text": [texts[i] for i in wiki]}),
                   folder / "wiki" / f"part-{chunk:05d}.parquet")
    return sum(len(t.encode()) for t in texts)


def _planted_rows(roles: dict[str, np.ndarray], sources: np.ndarray, ids: list[str]) -> dict[str, list]:
    rows = {name: [] for name in PLANTED_SCHEMA.names}
    for kind in ("exact", "near"):
        for copy, original in zip(roles[kind].tolist(), roles[f"{kind}_of"].tolist()):
            for name, value in zip(PLANTED_SCHEMA.names,
                                   (kind, sources[copy], ids[copy], sources[original], ids[original])):
                rows[name].append(value)
    return rows


def build_corpus(folder: Path, n_docs: int, seed: int = 0, log=print) -> dict:
    """Write the corpus of `n_docs` documents into `folder` (reused when its summary says it was
    built with the same size and seed); returns the summary."""
    summary_path = folder / SUMMARY
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if (summary["documents"], summary["seed"]) == (n_docs, seed):
            return summary
    started = time.monotonic()
    for source in SOURCE_FORMATS:
        (folder / source).mkdir(parents=True, exist_ok=True)
        for old in (folder / source).iterdir():
            old.unlink()
    rng = np.random.default_rng(seed)
    chunks = max(MIN_CHUNKS, -(-n_docs // DOCS_PER_CHUNK))
    bounds = np.linspace(0, n_docs, chunks + 1).astype(np.int64)
    text_bytes, counts = 0, {"exact": 0, "near": 0, "short": 0}
    with pq.ParquetWriter(folder / "planted.parquet", PLANTED_SCHEMA) as planted:
        for chunk, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
            texts, roles = chunk_texts(rng, hi - lo)
            is_web = rng.random(hi - lo) < WEB_SHARE
            sources = np.where(is_web, "web", "wiki")
            ids = [f"{s}-{lo + i:09d}" for i, s in enumerate(sources.tolist())]
            text_bytes += _write_sources(folder, chunk, ids, texts, is_web)
            planted.write_table(pa.table(_planted_rows(roles, sources, ids), schema=PLANTED_SCHEMA))
            for kind in counts:
                counts[kind] += len(roles[kind])
    summary = {"documents": n_docs, "seed": seed, "chunks": chunks, "text_bytes": text_bytes,
               "planted": counts, "build_s": round(time.monotonic() - started, 1)}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"corpus: {n_docs:,} documents ({text_bytes / 1e6:.1f} MB of text) in {folder}, "
        f"{summary['build_s']} s")
    return summary
