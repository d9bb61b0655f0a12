"""The words of a text as datatrove's prose filters see them (spaCy's blank pipeline), split once
per distinct whitespace-delimited chunk and shared by the filters that run one after the other
on a document; as lists of words or as arrays of word ids, lengths and flags (see core.filters.prose)."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
from datatrove.utils.text import PUNCTUATION_SET


NON_SYMBOL, HAS_ALPHA = 1, 2
_PUNCTUATION = "".join(PUNCTUATION_SET)


def word_flags(word: str) -> int:
    """The NON_SYMBOL | HAS_ALPHA bits of a word (Gopher quality's per-word tests)."""
    # Stripping the punctuation characters leaves something iff one is not punctuation.
    return (NON_SYMBOL if word.strip(_PUNCTUATION) else 0) | (
        HAS_ALPHA if word.isalpha() or any(c.isalpha() for c in word) else 0
    )


# Token classes for the sentence count (spaCy's Sentencizer): a sentence-final character, other
# punctuation, anything else.
_FINAL, _PUNCT, _OTHER = 2, 1, 0


@dataclass(frozen=True)
class Words:
    """A text's words as arrays, position by position: `hash(word)`, `len(word)` and the
    `NON_SYMBOL | HAS_ALPHA` bits."""

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
                self._flags.extend(map(word_flags, words))

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


def blank_spacy_language(language: str) -> str | None:
    """The spaCy language datatrove splits `language` with, where it uses a plain blank spaCy
    pipeline; None for the others (Japanese, Chinese, Vietnamese, NLTK/Stanza/... languages)."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

    stock = load_word_tokenizer(language)
    if type(stock) is not SpaCyTokenizer or stock.config is not None:
        return None
    return stock.language


_splitters: dict[str, WordSplitter] = {}


def word_splitter(language) -> WordSplitter | None:
    """This process's splitter for `language` where datatrove splits it with a plain blank spaCy
    pipeline (`blank_spacy_language`); None for the others."""
    if not isinstance(language, str):
        return None
    if language not in _splitters:
        if (spacy_language := blank_spacy_language(language)) is None:
            return None
        _splitters[language] = WordSplitter(spacy_language)
    return _splitters[language]


def word_ids(words: list[str]) -> np.ndarray:
    return np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
