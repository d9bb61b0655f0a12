"""datatrove's spaCy tokenizer kept warm across documents: what the prose filters split words with
for languages core.filters.words cannot split, and the benchmarks' "before" reference."""

from __future__ import annotations

from datatrove.utils.word_tokenizers import SpaCyTokenizer, strip_strings

from mix_pipeline.core.filters.words import blank_spacy_language


class SharedSpaCyTokenizer(SpaCyTokenizer):
    """datatrove's spaCy word/sentence tokenizer for one language, shared by the prose filters of
    a pipeline (Gopher repetition, Gopher quality, C4, FineWeb) and kept warm across documents.

    datatrove's `SpaCyTokenizer` runs every call inside a spaCy `memory_zone`, which discards
    every lexeme and tokenizer-cache entry the call created; so each filter, and C4 once per
    kept line, re-derives the affix splits and lexical attributes of every word it has already
    seen. Here the vocabulary and the cache persist between calls (until the string store holds
    `max_strings` entries: then the pipeline is rebuilt, so memory stays bounded), and the word
    split of the last `memo_size` texts is kept, keyed on the exact text, so a filter that sees
    the text the previous one saw (and not the text C4 rewrote) does not split it again.

    The results are the same: spaCy's cache memoizes how a whitespace-delimited chunk splits,
    which depends on the chunk alone, and the sentencizer reads token texts. The same words reach
    the same filter code; test_filters checks that on the sample corpus.
    """

    def __init__(self, language: str, max_strings: int = 200_000, memo_size: int = 4):
        super().__init__(language)
        self.max_strings = int(max_strings)
        self.memo_size = int(memo_size)
        self._words: dict[str, list[str]] = {}
        self.resets = 0

    def __getstate__(self):
        # Pickled to every datatrove worker: ship the settings, not a loaded spaCy pipeline.
        return {**self.__dict__, "_tokenizer": None, "_words": {}}

    def _nlp(self):
        nlp = self.tokenizer
        if len(nlp.vocab.strings) > self.max_strings:
            self._tokenizer = None
            self.resets += 1
            nlp = self.tokenizer
        return nlp

    def _do_tokenize(self, text: str):
        self._nlp()
        return super()._do_tokenize(text)

    def word_tokenize(self, text: str) -> list[str]:
        words = self._words.get(text)
        if words is None:
            tokens = [token.text for chunk in self._do_tokenize(text) for token in chunk]
            words = strip_strings(tokens)
            if len(self._words) >= self.memo_size:
                del self._words[next(iter(self._words))]
            self._words[text] = words
        # A copy: a caller may change its list without changing what the next filter reads.
        return list(words)

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings([sent.text for doc in self._do_tokenize(text) for sent in doc.sents])

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for doc in self._do_tokenize(text):
            start = spans[-1][1] if spans else 0
            spans.extend((start + sent.start_char, start + sent.end_char) for sent in doc.sents)
        return spans


_shared_tokenizers: dict[str, SharedSpaCyTokenizer] = {}


def shared_tokenizer(language: str) -> SharedSpaCyTokenizer | None:
    """This process's shared tokenizer for `language`, where datatrove tokenizes that language
    with a plain blank spaCy pipeline (None for the others: Japanese, Chinese, Vietnamese,
    NLTK/Stanza/... languages keep datatrove's own tokenizer)."""
    if language not in _shared_tokenizers:
        if (spacy_language := blank_spacy_language(language)) is None:
            return None
        _shared_tokenizers[language] = SharedSpaCyTokenizer(spacy_language)
    return _shared_tokenizers[language]
