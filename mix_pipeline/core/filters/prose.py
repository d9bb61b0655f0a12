"""datatrove's prose-quality filters (Gopher repetition, Gopher quality, C4, FineWeb) computed
from one word split per document, with the statistics as array operations.

datatrove's filters split every document into words with a blank spaCy pipeline, once per
filter (and C4 once per kept line, for its sentence count), and compute their statistics in
Python loops over the words and n-grams. That was most of the filtered stage's CPU. Here:

- **The same words, split once per distinct chunk.** spaCy tokenizes each whitespace-delimited
  chunk of a text on its own (its tokenizer cache is keyed on the chunk), so the words of a text
  are the concatenation of the words of its chunks. `WordSplitter` (core.filters.words) asks spaCy's own tokenizer
  for the chunks it has not seen yet, in one call, and keeps the answer per chunk; a text then
  costs a `str.split` and dictionary lookups. The words are spaCy's, not an approximation.
- **One split per document**, shared by the filters that run one after the other on it.
- **Statistics over hashed word ids** with numpy: n-gram counts by sorting, only over the
  positions whose shorter n-gram repeats (`NgramCandidates`, core.filters.ngrams), the duplicated-n-gram greedy walk
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

from collections import Counter

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

from mix_pipeline.core.filters.base import FilterFamily, drop
from mix_pipeline.core.filters.ngrams import MAX_BATCH, NgramCandidates, duplicated_ngram_chars, top_ngram_chars
from mix_pipeline.core.filters.words import HAS_ALPHA, NON_SYMBOL, Words, WordSplitter, word_ids, word_splitter


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


class FastGopherRepetitionFilter(GopherRepetitionFilter, FilterFamily):
    """datatrove's GopherRepetitionFilter on shared words and hashed n-grams, `batch_size`
    documents at a time (one sort per n-gram length for the whole batch)."""

    splits_words = True

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


class FastGopherQualityFilter(GopherQualityFilter, FilterFamily):
    """datatrove's GopherQualityFilter on shared words, with per-word properties looked up."""

    splits_words = True

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        splitter = word_splitter(self.language)
        if splitter is None:
            return super().filter(doc)
        text = doc.text
        words = splitter.arrays(text)
        n_words, flags = len(words), words.flags
        non_symbol = (flags & NON_SYMBOL).astype(bool)
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
            v := int(np.count_nonzero(flags & HAS_ALPHA)) / n_words
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
            _STOP_IDS[key] = word_ids(sorted(key))
        stop = _STOP_IDS[key]
        if len(stop) > 64:
            return int(np.isin(stop, words.ids).sum())
        # A handful of stop words (datatrove's 8): one comparison per word and stop word is
        # several times cheaper than isin's sorts.
        return int(np.count_nonzero((words.ids[:, None] == stop).any(axis=0)))


_STOP_IDS: dict[frozenset, np.ndarray] = {}


class FastC4QualityFilter(C4QualityFilter, FilterFamily):
    """datatrove's C4QualityFilter, counting sentences from cached spaCy tokens."""

    splits_words = True

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


class FastFineWebQualityFilter(FineWebQualityFilter, FilterFamily):
    """datatrove's FineWebQualityFilter on shared words."""

    splits_words = True

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
