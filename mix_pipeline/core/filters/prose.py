"""datatrove's prose-quality filters (Gopher repetition, Gopher quality, C4, FineWeb) computed
from one word split per document, with the statistics as array operations.

datatrove's filters split every document into words with a blank spaCy pipeline, once per
filter (and C4 once per kept line, for its sentence count), and compute their statistics in
Python loops over the words and n-grams. That was most of the filtered stage's CPU. Here:

- **The same words, split once per distinct chunk.** spaCy tokenizes each whitespace-delimited
  chunk of a text on its own (its tokenizer cache is keyed on the chunk), so the words of a text
  are the concatenation of the words of its chunks. `WordSplitter` asks spaCy's own tokenizer
  for the chunks it has not seen yet, in one call, and keeps the answer per chunk; a text then
  costs a `str.split` and dictionary lookups. The words are spaCy's, not an approximation.
- **One split per document**, shared by the filters that run one after the other on it.
- **Statistics over hashed word ids** with numpy: n-gram counts by sorting, only over the
  positions whose shorter n-gram repeats (`NgramCandidates`), the duplicated-n-gram greedy walk
  only over the positions whose n-gram occurred before. Gopher repetition counts a batch of
  documents (up to `BATCH_WORDS` words) with one sort per n, the text's number in each key.
- **C4's sentence count** follows spaCy's sentencizer over the same tokens, and stops once it
  reaches `min_num_sentences` (only whether it does matters).

Each class subclasses datatrove's, takes the same parameters and returns the same keep/drop
decision and reason (and C4 the same rewritten text); test_filters compares them document by
document with datatrove's, and `benchmarks/bench_pipeline.py` prints the agreement. A drop also
records what was measured (`filter_value`), like our other filters. Languages that datatrove
does not split with a blank spaCy pipeline run datatrove's own `filter`.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.utils.text import PUNCTUATION_SET

from mix_pipeline.core.arrays import runs
from mix_pipeline.names import META_FILTER_VALUE


def drop(doc: Document, reason: str, **value) -> tuple[bool, str]:
    """Drop `doc`, keeping what was measured for the catalog's provenance column (every filter of
    ours drops through this)."""
    doc.metadata[META_FILTER_VALUE] = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return False, reason


# ---- words ---------------------------------------------------------------------------------
_NON_SYMBOL, _HAS_ALPHA = 1, 2
_PUNCTUATION = "".join(PUNCTUATION_SET)


def _word_flags(word: str) -> int:
    """The _NON_SYMBOL | _HAS_ALPHA bits of a word (Gopher quality's per-word tests)."""
    # Stripping the punctuation characters leaves something iff one is not punctuation.
    return (_NON_SYMBOL if word.strip(_PUNCTUATION) else 0) | (
        _HAS_ALPHA if word.isalpha() or any(c.isalpha() for c in word) else 0
    )


# Token classes for the sentence count (spaCy's Sentencizer): a sentence-final character, other
# punctuation, anything else.
_FINAL, _PUNCT, _OTHER = 2, 1, 0


@dataclass(frozen=True)
class Words:
    """A text's words as arrays, position by position: `hash(word)`, `len(word)` and the
    `_NON_SYMBOL | _HAS_ALPHA` bits."""

    ids: np.ndarray  # uint64
    lengths: np.ndarray  # int64
    flags: np.ndarray  # int8

    def __len__(self) -> int:
        return len(self.ids)


class WordSplitter:
    """spaCy's words of a text for one language, split once per distinct whitespace-delimited
    chunk. Each chunk gets a number; its words' hashes, lengths and flags are appended to flat
    arrays (the chunk's slice: `_start`, `_count`), so a text's words as arrays are one gather,
    with no Python object per word. The cache holds at most `max_chunks` chunks (then it starts
    again), so memory stays bounded however large the corpus is; spaCy's own vocabulary does
    not grow (each call runs in a `memory_zone`)."""

    # The words of the texts asked for last, for the filters that ask in turn: a batch filter
    # (Gopher repetition) asks for a batch, the next filters for each of its texts. Bounded by
    # words (≈17 bytes each, and the texts: ≈ 6 MB), not texts, so a batch of books does not
    # hold hundreds of MB; the first texts of a batch larger than that are split again.
    RECENT_WORDS = 262_144

    def __init__(self, language: str, max_chunks: int = 500_000):
        self.language = language
        self.max_chunks = int(max_chunks)
        self._nlp = None
        self._recent: dict[int, tuple[str, Words]] = {}  # id(text) -> (text, its words)
        self._recent_words = 0
        self._reset()

    def _reset(self) -> None:
        self._index: dict[str, int] = {}
        self._words: list[tuple[str, ...]] = []  # per chunk number
        self._classes: list[tuple[int, ...]] = []
        self._start, self._count = array("q"), array("q")  # per chunk number
        self._ids, self._lengths, self._flags = array("q"), array("q"), array("b")  # per word
        self._last: tuple[str | None, np.ndarray | None] = (None, None)

    def __getstate__(self):
        # Pickled to every datatrove worker: the settings, not a loaded pipeline or cache.
        return {"language": self.language, "max_chunks": self.max_chunks}

    def __setstate__(self, state):
        self.__init__(**state)

    @property
    def nlp(self):
        if self._nlp is None:
            spacy = import_spacy()
            from spacy.pipeline import Sentencizer

            self._nlp = spacy.blank(self.language)
            self._final = frozenset(Sentencizer.default_punct_chars)
        return self._nlp

    def _learn(self, chunks) -> None:
        """Split the chunks not seen yet with spaCy's tokenizer, in calls of ≤ 100k characters."""
        distinct = dict.fromkeys(chunks)
        missing = [c for c in distinct if c not in self._index]
        if not missing:
            return
        if len(self._index) + len(missing) > self.max_chunks:
            self._reset()
            missing = list(distinct)
        nlp = self.nlp
        final = self._final
        start = 0
        while start < len(missing):
            batch, size = [], 0
            while start < len(missing) and (not batch or size + len(missing[start]) < 100_000):
                batch.append(missing[start])
                size += len(missing[start]) + 1
                start += 1
            offsets, pos = [], 0
            for c in batch:
                offsets.append(pos)
                pos += len(c) + 1
            with nlp.memory_zone():
                tokens = [(t.idx, t.text, t.is_punct) for t in nlp.tokenizer(" ".join(batch))]
            k = 0
            for chunk, begin in zip(batch, offsets):
                end = begin + len(chunk)
                words, classes = [], []
                while k < len(tokens) and tokens[k][0] < end:
                    _, text, is_punct = tokens[k]
                    text = text.strip()
                    if text:
                        words.append(text)
                        classes.append(_FINAL if text in final else _PUNCT if is_punct else _OTHER)
                    k += 1
                self._index[chunk] = len(self._words)
                self._words.append(tuple(words))
                self._classes.append(tuple(classes))
                self._start.append(len(self._ids))
                self._count.append(len(words))
                self._ids.extend(map(hash, words))
                self._lengths.extend(map(len, words))
                self._flags.extend(map(_word_flags, words))

    def _numbers(self, chunks: list[str]) -> np.ndarray:
        """The chunks' numbers, learning the ones not seen yet."""
        numbers = np.fromiter(map(self._index.get, chunks, repeat(-1)), dtype=np.int64, count=len(chunks))
        if len(numbers) and numbers.min() < 0:  # chunks not seen yet
            index = self._index
            self._learn(chunks)
            if self._index is index:  # the cache did not start again: only the new chunks changed
                missing = np.flatnonzero(numbers < 0)
                numbers[missing] = [index[chunks[i]] for i in missing.tolist()]
            else:
                numbers = np.fromiter(map(self._index.__getitem__, chunks), dtype=np.int64, count=len(chunks))
        return numbers

    def _chunk_numbers(self, text: str) -> np.ndarray:
        """`_numbers` of the text's chunks, kept for the last text (the filters ask in turn)."""
        if text is not self._last[0]:
            self._last = (text, self._numbers(text.split()))
        return self._last[1]

    def words(self, text: str) -> list[str]:
        """datatrove's `split_into_words(text, language)` for a blank-spaCy language."""
        numbers = self._chunk_numbers(text).tolist()  # first: learning may start the cache again
        return list(chain.from_iterable(map(self._words.__getitem__, numbers)))

    def arrays(self, text: str) -> Words:
        """The words of `text` as arrays (see `Words`), in order."""
        recent = self._recent.get(id(text))  # the entry holds the text: no other has its id
        if recent is not None:
            return recent[1]
        numbers = self._chunk_numbers(text)
        counts = np.frombuffer(self._count, dtype=np.int64)[numbers]
        ends = np.cumsum(counts)
        # Word k of the text is word (k - first word of its chunk in the text) of its chunk.
        at = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        at += np.repeat(np.frombuffer(self._start, dtype=np.int64)[numbers] - (ends - counts), counts)
        out = Words(np.frombuffer(self._ids, dtype=np.int64)[at].view(np.uint64),
                    np.frombuffer(self._lengths, dtype=np.int64)[at],
                    np.frombuffer(self._flags, dtype=np.int8)[at])
        self._remember(text, out)
        return out

    def _remember(self, text: str, words: Words) -> None:
        while self._recent and self._recent_words + len(words) > self.RECENT_WORDS:
            _, dropped = self._recent.pop(next(iter(self._recent)))  # the oldest
            self._recent_words -= len(dropped)
        self._recent[id(text)] = (text, words)
        self._recent_words += len(words)

    def count_words(self, text: str) -> int:
        """len(self.words(text)), without building the list."""
        recent = self._recent.get(id(text))
        if recent is not None:
            return len(recent[1])
        numbers = self._chunk_numbers(text)
        return int(np.frombuffer(self._count, dtype=np.int64)[numbers].sum())

    def count_sentences(self, line: str, enough: int) -> int:
        """How many sentences datatrove's `split_into_sentences` finds in a stripped line,
        counted up to `enough`. spaCy's Sentencizer starts a sentence at each token that is
        neither punctuation nor a sentence-final character, after a sentence-final one."""
        chunks = line.split()
        if not chunks:
            return 0
        if " ".join(chunks) != line:
            return self._count_sentences_spacy(line)
        line_classes = map(self._classes.__getitem__, self._numbers(chunks).tolist())
        n, seen_final = 1, False
        for classes in line_classes:
            for cls in classes:
                if cls == _FINAL:
                    seen_final = True
                elif seen_final and cls == _OTHER:
                    n += 1
                    if n >= enough:
                        return n
                    seen_final = False
        return n

    def _count_sentences_spacy(self, line: str) -> int:
        """The same count where whitespace other than single spaces makes whitespace tokens
        (neither punctuation nor final: a sentence may start at one)."""
        nlp = self.nlp
        with nlp.memory_zone():
            tokens = [(t.text, t.is_punct) for t in nlp.tokenizer(line)]
        n, seen_final = (1 if tokens else 0), False
        for text, is_punct in tokens:
            final = text in self._final
            if seen_final and not is_punct and not final:
                n += 1
                seen_final = False
            elif final:
                seen_final = True
        return n


def import_spacy():
    """`import spacy`, without torch: spaCy's thinc imports torch whenever it is installed (the
    `lab` extra installs it), ~1 CPU s and a few hundred MB per process, for tokenizers that
    never use it. torch is hidden only while spaCy loads; code that imports it later gets it."""
    import sys

    if "spacy" in sys.modules:
        return sys.modules["spacy"]
    hidden = "torch" not in sys.modules
    if hidden:
        sys.modules["torch"] = None  # `import torch` raises ImportError: thinc runs without it
    try:
        import spacy
        import spacy.lang.en  # noqa: F401
    finally:
        if hidden:
            del sys.modules["torch"]
    return spacy


_splitters: dict[str, WordSplitter] = {}


def word_splitter(language) -> WordSplitter | None:
    """This process's splitter for `language` where datatrove splits it with a plain blank spaCy
    pipeline; None for the others (Japanese, Chinese, Vietnamese, NLTK/Stanza/... languages)."""
    if not isinstance(language, str):
        return None
    if language not in _splitters:
        from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

        stock = load_word_tokenizer(language)
        if type(stock) is not SpaCyTokenizer or stock.config is not None:
            return None
        _splitters[language] = WordSplitter(stock.language)
    return _splitters[language]


# ---- n-gram statistics over hashed word ids ------------------------------------------------
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _word_ids(words: list[str]) -> np.ndarray:
    return np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)


def _ngram_ids(ids: np.ndarray, n: int, previous: np.ndarray | None) -> np.ndarray:
    """Ids of the n-grams starting at each position (from the (n-1)-gram ids when given)."""
    m = len(ids) - n + 1
    if previous is None:
        out = ids[:m].copy()
        for k in range(1, n):
            out = out * _MIX + ids[k : k + m]
        return out
    return previous[:m] * _MIX + ids[n - 1 : n - 1 + m]


def _groups(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices of h by id then index, start of each id's run in that order, run lengths)."""
    order = np.argsort(h, kind="stable")
    return order, *runs(h[order])


def _repeated(order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mask (in h's order) of the entries whose id occurs more than once."""
    mask = np.empty(len(order), dtype=bool)
    mask[order] = np.repeat(counts > 1, counts)
    return mask


# A batch's n-gram keys carry the text's number in their top bits, so one sort groups the
# n-grams text by text; the id keeps the other 56 bits (collisions: 2**-56 per pair in a text).
_TEXT_SHIFT = np.uint64(56)
MAX_BATCH = 1 << 8


def top_ngram_chars(keys: np.ndarray, pos: np.ndarray, batch: NgramCandidates, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's `find_top_duplicate` for each text of the batch: characters of its most
    frequent n-gram (the first seen of the most frequent ones, as `Counter.most_common` picks)
    times its count; a text whose n-grams are all distinct gets its first n-gram, once.

    `keys` holds the n-gram keys at positions `pos` (ascending): every position whose n-gram
    can occur more than once in its text (see `NgramCandidates`). `chars[p]`: characters of
    the n-gram at p. Also returns positions that include every one whose n-gram repeats.
    Counting sorts the keys (a plain sort: several times cheaper than an argsort)."""
    found = chars[batch.starts[:-1].clip(max=len(chars) - 1)]  # each text's first n-gram, once
    if not len(keys):
        return found, pos
    sk = np.sort(keys)
    starts, counts = runs(sk)
    text = (sk[starts] >> _TEXT_SHIFT).astype(np.intp)
    best = np.ones(batch.n_texts, dtype=np.int64)
    np.maximum.at(best, text, counts)
    winners = counts == best[text]
    winners &= counts > 1
    if winners.any():
        hits = np.flatnonzero(_members(keys, sk[starts[winners]]))  # ascending positions
        hit_text = batch.text[pos[hits]]
        first, _ = runs(hit_text)  # each text's first hit
        where = pos[hits[first]]
        found[hit_text[first]] = chars[where] * best[hit_text[first]]
    return found, pos[_maybe_repeated(keys)]


def _buckets(h: np.ndarray, size: int) -> np.ndarray:
    """Bucket of each id in a table of `size` (a power of two) entries."""
    return ((h ^ (h >> np.uint64(29))) & np.uint64(size - 1)).astype(np.intp)


def _table_size(n: int) -> int:
    """A table 2-4 times n's size: small enough to stay in cache, few ids per bucket."""
    return 1 << max(4, (2 * n).bit_length())


def _members(h: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Mask of the entries of h that are in `sorted_ids` (sorted, not empty): the entries whose
    bucket holds one of them, then a binary search for those few only."""
    size = _table_size(len(h))
    marked = np.zeros(size, dtype=bool)
    marked[_buckets(sorted_ids, size)] = True
    maybe = np.flatnonzero(marked[_buckets(h, size)])
    at = np.searchsorted(sorted_ids, h[maybe])
    at[at == len(sorted_ids)] = 0
    mask = np.zeros(len(h), dtype=bool)
    mask[maybe] = sorted_ids[at] == h[maybe]
    return mask


def _maybe_repeated(h: np.ndarray) -> np.ndarray:
    """Mask of the entries of h whose id may occur more than once: every one that does, and a
    few others (ids sharing a bucket). Cheaper than finding exactly the repeated ones, and only
    ever used to narrow down where to count longer n-grams."""
    buckets = _buckets(h, _table_size(len(h)))
    return np.bincount(buckets)[buckets] > 1


def duplicated_ngram_chars(keys: np.ndarray, pos: np.ndarray, batch: NgramCandidates, n: int,
                           joined_chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's `find_all_duplicate` for each text of the batch: walk the n-grams; one seen
    before (among the ones walked, not skipped) adds its characters and skips the next n-1
    positions. Only positions whose n-gram occurred earlier in the text can repeat, so the walk
    visits only those.

    `keys`, `pos` as in `top_ngram_chars`; also returns the positions whose n-gram occurs more
    than once in its text."""
    found = np.zeros(batch.n_texts, dtype=np.int64)
    if not len(keys):
        return found, pos
    order, starts, counts = _groups(keys)
    if counts.max() == 1:
        return found, pos[:0]
    first_of_run = np.zeros(len(keys), dtype=bool)
    first_of_run[order[starts]] = True
    first_pos = np.empty(len(keys), dtype=np.int64)
    first_pos[order] = np.repeat(pos[order[starts]], counts)
    later = ~first_of_run
    at, firsts, ids = pos[later], first_pos[later], keys[later]
    bounds = np.searchsorted(at, batch.starts).tolist()  # each text's stretch of `at`
    for t in np.flatnonzero(np.diff(bounds)).tolist():
        lo, hi = bounds[t], bounds[t + 1]
        found[t] = _walk(at[lo:hi].tolist(), firsts[lo:hi].tolist(), ids[lo:hi].tolist(), n, joined_chars)
    return found, pos[_repeated(order, counts)]


def _walk(at: list[int], firsts: list[int], ids: list[int], n: int, joined_chars: np.ndarray) -> int:
    """The greedy walk of `find_all_duplicate` over one text's positions whose n-gram occurred
    before (`firsts`: where it first occurred)."""
    skipped: set[int] = set()
    walked: set[int] = set()  # ids of repeated positions that were walked
    total, idx = 0, 0
    for c, first, ident in zip(at, firsts, ids):
        if c < idx:
            continue
        if first not in skipped or ident in walked:
            total += int(joined_chars[c])
            skipped.update(range(c + 1, c + n))
            idx = c + n
        else:
            walked.add(ident)
            idx = c + 1
    return total


class NgramCandidates:
    """The n-gram keys of a batch of texts' words (end to end) and, per n, the positions worth
    sorting.

    An n-gram that occurs twice in a text starts with an (n-1)-gram that occurs twice (at the
    same two positions), so once the k-grams have been counted only the positions whose k-gram
    repeats need counting for any n > k (a superset of them will do): on prose that is a few
    percent of the words by n = 5, and the sorts shrink with it. The answers are the same as
    counting every position. A batch is counted with one sort per n, however many texts it
    holds (numpy's per-call cost dominates texts of a few thousand words)."""

    def __init__(self, texts: list[np.ndarray]):
        if len(texts) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} texts per batch (got {len(texts)})")
        sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        self.n_texts = len(texts)
        self.starts = np.concatenate(([0], np.cumsum(sizes)))  # each text's first position
        self.ids = np.concatenate(texts) if texts else np.zeros(0, dtype=np.uint64)
        self.text = np.repeat(np.arange(len(texts)), sizes)  # the text of each position
        self.room = self.starts[1:][self.text] - np.arange(len(self.ids))  # words to its text's end
        self._tag = self.text.astype(np.uint64) << _TEXT_SHIFT
        self._ngrams: dict[int, np.ndarray] = {}
        self._repeating: tuple[int, np.ndarray] | None = None  # (k, positions whose k-gram repeats)

    def ngram_ids(self, n: int) -> np.ndarray:
        if n not in self._ngrams:
            self._ngrams[n] = _ngram_ids(self.ids, n, self._ngrams.get(n - 1))
        return self._ngrams[n]

    def at(self, n: int, skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, positions) of the n-grams that may repeat within their text, leaving out the
        texts where `skip` is set."""
        h = self.ngram_ids(n)
        if self._repeating is None or self._repeating[0] >= n:
            pos = np.flatnonzero(self.room[:len(h)] >= n)
        else:
            pos = self._repeating[1]
            pos = pos[self.room[pos] >= n]
        if skip is not None and skip.any():
            pos = pos[~skip[self.text[pos]]]
        return (h[pos] >> np.uint64(64 - int(_TEXT_SHIFT))) | self._tag[pos], pos

    def counted(self, n: int, repeating: np.ndarray) -> None:
        """Record the positions whose n-gram occurs more than once in its text."""
        if self._repeating is None or self._repeating[0] < n:
            self._repeating = (n, repeating)


def split_lines(text: str) -> list[str]:
    """`re.split("\\n+", text)` (Gopher repetition's lines) with str.split: runs of newlines
    separate, an empty piece stays only at the start or the end."""
    lines = [line for line in text.split("\n") if line]
    if text.startswith("\n") or not text:
        lines.insert(0, "")
    if text.endswith("\n"):
        lines.append("")
    return lines


def _up_to_words(items: list[tuple[int, Words]], limit: int):
    """`items` (index, words) in consecutive groups of at most `limit` words (a longer text
    alone)."""
    group, words = [], 0
    for item in items:
        if group and words + len(item[1]) > limit:
            yield group
            group, words = [], 0
        group.append(item)
        words += len(item[1])
    if group:
        yield group


# ---- the filters -----------------------------------------------------------------------------
class FastGopherRepetitionFilter(GopherRepetitionFilter):
    """datatrove's GopherRepetitionFilter on shared words and hashed n-grams, `batch_size`
    documents at a time (one sort per n-gram length for the whole batch)."""

    BATCH_WORDS = 8192

    def __init__(self, *args, batch_size: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        if not 1 <= int(batch_size) <= MAX_BATCH:
            raise ValueError(f"batch_size must be within 1..{MAX_BATCH} (got {batch_size})")
        self.batch_size = int(batch_size)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        splitter = word_splitter(self.language)
        if splitter is None:
            return [super(FastGopherRepetitionFilter, self).filter(doc) for doc in batch]
        verdicts = [self._line_checks(doc) for doc in batch]
        todo = [(i, splitter.arrays(batch[i].text)) for i, verdict in enumerate(verdicts) if verdict is None]
        # Counted together up to BATCH_WORDS words: beyond that a batch's arrays outgrow the
        # CPU caches and numpy's per-call cost no longer matters (a book is counted alone).
        for group in _up_to_words(todo, self.BATCH_WORDS):
            for (i, _), verdict in zip(group, self._ngram_checks([batch[i] for i, _ in group], [w for _, w in group])):
                verdicts[i] = verdict
        return verdicts

    def _line_checks(self, doc: Document) -> tuple[bool, str] | None:
        """The paragraph and line repetition checks: a drop, or None to go on to the words."""
        text = doc.text
        if not text:
            return drop(doc, "empty", chars=0)
        paragraphs = self.paragraph_exp.split(text.strip())
        paragraphs_duplicates, char_duplicates = find_duplicates(paragraphs)
        if self.dup_para_frac and (v := paragraphs_duplicates / len(paragraphs)) > self.dup_para_frac:
            return drop(doc, "dup_para_frac", value=round(v, 4), limit=self.dup_para_frac)
        if self.dup_para_char_frac and (v := char_duplicates / len(text)) > self.dup_para_char_frac:
            return drop(doc, "dup_para_char_frac", value=round(v, 4), limit=self.dup_para_char_frac)
        lines = split_lines(text) if self._line_splitter.pattern == "\n+" else self._line_splitter.split(text)
        line_duplicates, char_duplicates = find_duplicates(lines)
        if self.dup_line_frac and (v := line_duplicates / len(lines)) > self.dup_line_frac:
            return drop(doc, "dup_line_frac", value=round(v, 4), limit=self.dup_line_frac)
        if self.dup_line_char_frac and (v := char_duplicates / len(text)) > self.dup_line_char_frac:
            return drop(doc, "dup_line_char_frac", value=round(v, 4), limit=self.dup_line_char_frac)
        return None

    def _ngram_checks(self, docs: list[Document], words: list[Words]) -> list[bool | tuple[bool, str]]:
        """The top and duplicated n-gram checks of `docs` (with their `words`), in datatrove's
        order: each statistic is counted for all of them at once, and a document drops at the
        first check it fails (later statistics leave the dropped documents out)."""
        ngrams = NgramCandidates([w.ids for w in words])
        cum = np.concatenate(([0], np.cumsum(np.concatenate([w.lengths for w in words]))))
        sizes = [len(w) for w in words]
        verdicts: list = [True] * len(docs)
        dropped = np.zeros(len(docs), dtype=bool)
        checks = [("top", n, n_frac) for n, n_frac in self.top_n_grams]
        checks += [("duplicated", n, n_frac) for n, n_frac in self.dup_n_grams]
        for kind, n, n_frac in checks:
            if max(sizes, default=0) < n:
                continue
            if kind == "top":
                found, repeating = top_ngram_chars(*ngrams.at(n, dropped), ngrams, cum[n:] - cum[:-n] + (n - 1))
            else:
                found, repeating = duplicated_ngram_chars(*ngrams.at(n, dropped), ngrams, n, cum[n:] - cum[:-n])
            ngrams.counted(n, repeating)
            name = f"top_{n}_gram" if kind == "top" else f"duplicated_{n}_n_grams"
            for t in np.flatnonzero(~dropped).tolist():
                if sizes[t] >= n and (v := int(found[t]) / len(docs[t].text)) > n_frac:
                    verdicts[t] = drop(docs[t], name, value=round(v, 4), limit=n_frac)
                    dropped[t] = True
        return verdicts


class FastGopherQualityFilter(GopherQualityFilter):
    """datatrove's GopherQualityFilter on shared words, with per-word properties looked up."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        splitter = word_splitter(self.language)
        if splitter is None:
            return super().filter(doc)
        text = doc.text
        words = splitter.arrays(text)
        n_words, flags = len(words), words.flags
        non_symbol = (flags & _NON_SYMBOL).astype(bool)
        n_non_symbol = int(non_symbol.sum())
        if self.min_doc_words and n_non_symbol < self.min_doc_words:
            return drop(doc, "gopher_short_doc", words=n_non_symbol, limit=self.min_doc_words)
        if self.max_doc_words and n_non_symbol > self.max_doc_words:
            return drop(doc, "gopher_long_doc", words=n_non_symbol, limit=self.max_doc_words)
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = float(np.mean(words.lengths[non_symbol])) if n_non_symbol else float("nan")
        if self.min_avg_word_length and avg < self.min_avg_word_length:
            return drop(doc, "gopher_below_avg_threshold", mean_word_length=round(avg, 4), limit=self.min_avg_word_length)
        if self.max_avg_word_length and avg > self.max_avg_word_length:
            return drop(doc, "gopher_above_avg_threshold", mean_word_length=round(avg, 4), limit=self.max_avg_word_length)
        if self.max_symbol_word_ratio and (v := text.count("#") / n_words) > self.max_symbol_word_ratio:
            return drop(doc, "gopher_too_many_hashes", value=round(v, 4), limit=self.max_symbol_word_ratio)
        if self.max_symbol_word_ratio and (
            v := (text.count("...") + text.count("…")) / n_words
        ) > self.max_symbol_word_ratio:
            return drop(doc, "gopher_too_many_ellipsis", value=round(v, 4), limit=self.max_symbol_word_ratio)
        lines = text.splitlines()
        if self.max_bullet_lines_ratio and (
            v := sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines) / len(lines)
        ) > self.max_bullet_lines_ratio:
            return drop(doc, "gopher_too_many_bullets", value=round(v, 4), limit=self.max_bullet_lines_ratio)
        if self.max_ellipsis_lines_ratio and (
            v := sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines) / len(lines)
        ) > self.max_ellipsis_lines_ratio:
            return drop(doc, "gopher_too_many_end_ellipsis", value=round(v, 4), limit=self.max_ellipsis_lines_ratio)
        if self.max_non_alpha_words_ratio and (
            v := int(np.count_nonzero(flags & _HAS_ALPHA)) / n_words
        ) < self.max_non_alpha_words_ratio:
            return drop(doc, "gopher_below_alpha_threshold", value=round(v, 4), limit=self.max_non_alpha_words_ratio)
        if self.min_stop_words and (v := self._stop_words_in(words)) < self.min_stop_words:
            return drop(doc, "gopher_enough_stop_words", stop_words=v, limit=self.min_stop_words)
        return True

    def _stop_words_in(self, words: Words) -> int:
        """How many of the stop words occur in the text (by hash, as the words' ids are; hashes
        of strings differ between processes, so they are kept per process, not on the filter)."""
        key = frozenset(self.stop_words)
        if key not in _STOP_IDS:
            _STOP_IDS[key] = _word_ids(sorted(key))
        stop = _STOP_IDS[key]
        if len(stop) > 64:
            return int(np.isin(stop, words.ids).sum())
        # A handful of stop words (datatrove's 8): one comparison per word and stop word is
        # several times cheaper than isin's sorts.
        return int(np.count_nonzero((words.ids[:, None] == stop).any(axis=0)))


_STOP_IDS: dict[frozenset, np.ndarray] = {}


class FastC4QualityFilter(C4QualityFilter):
    """datatrove's C4QualityFilter, counting sentences from cached spaCy tokens."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        splitter = word_splitter(self.language)
        if splitter is None or not self.split_paragraph:
            return super().filter(doc)
        lines: Counter = Counter()
        try:
            return self._filter_lines(doc, splitter, lines)
        finally:
            # datatrove updates its line statistics once per line; added up per document the
            # totals are the same, at a fraction of the cost (a third of this filter's).
            for label, n in lines.items():
                self.stat_update(label, value=n)

    def _filter_lines(self, doc: Document, splitter: WordSplitter, lines: Counter) -> bool | tuple[bool, str]:
        num_sentences = 0
        kept_lines = []
        enough = self.min_num_sentences
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            lines["line-total"] += 1
            if self.max_word_length != -1 and max(map(len, words), default=0) > self.max_word_length:
                lines["line-filter-too_long_word"] += 1
                continue
            if self.remove_citations:
                line = CITATION_REGEX.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                lines["line-filter-no_terminal_punc"] += 1
                continue
            if len(words) < self.min_words_per_line:
                lines["line-filter-too_few_words"] += 1
                continue
            line_l = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in line_l:
                return drop(doc, "lorem_ipsum", line=line[:80])
            if self.filter_javascript and "javascript" in line_l:
                lines["line-filter-javascript"] += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return drop(doc, "curly_bracket", line=line[:80])
            if self.filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS):
                lines["line-filter-policy"] += 1
                continue
            if self.min_num_sentences != -1 and num_sentences < enough:
                num_sentences += splitter.count_sentences(line, enough - num_sentences)
            kept_lines.append(line)
            lines["line-kept"] += 1
        if num_sentences < self.min_num_sentences:
            return drop(doc, "too_few_sentences", sentences=num_sentences, kept_lines=len(kept_lines),
                         limit=self.min_num_sentences)
        text = "\n".join(kept_lines).strip()
        if text != doc.text:  # unchanged: keep the same object, whose words the splitter has cached
            doc.text = text
        return True


class FastFineWebQualityFilter(FineWebQualityFilter):
    """datatrove's FineWebQualityFilter on shared words."""

    def filter(self, doc) -> bool | tuple[bool, str]:
        splitter = word_splitter(self.language)
        if splitter is None:
            return super().filter(doc)
        lines = doc.text.split("\n")
        lines = [line for line in lines if line.strip() != ""]
        if len(lines) == 0:
            return drop(doc, "empty", lines=0)
        ratio = sum(1 for line in lines if line.endswith(self.stop_chars)) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return drop(doc, "line_punct_ratio", value=round(ratio, 4), limit=self.line_punct_thr)
        ratio = sum(1 for line in lines if len(line) <= self.short_line_length) / len(lines)
        if ratio > self.short_line_threshold:
            return drop(doc, "short_line_ratio", value=round(ratio, 4), limit=self.short_line_threshold)
        ratio = find_duplicates(lines)[1] / len(doc.text.replace("\n", ""))
        if ratio > self.char_duplicates_ratio:
            return drop(doc, "char_dup_ratio", value=round(ratio, 4), limit=self.char_duplicates_ratio)
        n_words = splitter.count_words(doc.text)
        new_line = doc.text.count("\n")
        if (ratio := new_line / n_words) > self.new_line_ratio:
            return drop(doc, "list_ratio", value=round(ratio, 4), limit=self.new_line_ratio)
        return True
