"""The safety filter: drops documents with too many offensive words. The default word list ships
inside this package (core.filters.wordlists)."""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from mix_pipeline.core.filters import wordlists
from mix_pipeline.core.filters.base import FilterFamily, drop
from mix_pipeline.names import META_FLAGGED_WORDS


class SafetyFilter(BaseFilter, FilterFamily):
    """Drops documents whose share of flagged (offensive) words exceeds `max_flagged_fraction`.

    Words come from the built-in list (unless `use_default_list` is false) plus every file in
    `word_lists`; matching is on whole words, case-insensitive. `min_flagged_words` keeps a long
    or short document from being dropped over one quoted word.
    """

    name = "🛡️ Safety (offensive word lists)"
    path_params = ("word_lists",)
    built_at_load = True

    @classmethod
    def counts_sql(cls, name: str) -> str:
        return f"""SELECT '{name}', 'flagged', count(*) FILTER (WHERE n > 0), sum(n) FROM (
                SELECT CAST(json_extract(metadata, '$.{META_FLAGGED_WORDS}') AS BIGINT) AS n FROM docs
            ) WHERE n IS NOT NULL HAVING count(*) > 0"""

    @classmethod
    def count_stats(cls, rows: list[dict]) -> dict[str, float]:
        stats: dict[str, float] = {}
        for r in rows:
            stats["safety_flagged_documents"] = r["documents"]
            stats["safety_flagged_words"] = r["matches"]
        return stats

    @classmethod
    def measured(cls, meta: dict) -> dict | None:
        return {"flagged_words": meta[META_FLAGGED_WORDS]} if META_FLAGGED_WORDS in meta else None

    def __init__(
        self,
        word_lists: list[str] | None = None,
        use_default_list: bool = True,
        max_flagged_fraction: float = 0.01,
        min_flagged_words: int = 2,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        if not 0.0 <= float(max_flagged_fraction) <= 1.0:
            raise ValueError(f"max_flagged_fraction must be within [0, 1] (got {max_flagged_fraction})")
        entries = wordlists.read_word_list(wordlists.default_word_list()) if use_default_list else []
        for path in word_lists or []:
            with open(path, encoding="utf-8") as f:
                entries += wordlists.read_word_list(f.read())
        if not entries:
            raise ValueError("no words to flag: the word lists are empty and use_default_list is false")
        self.max_flagged_fraction = float(max_flagged_fraction)
        self.min_flagged_words = int(min_flagged_words)
        self.words = frozenset(e[0] for e in entries if len(e) == 1)
        self.phrases = frozenset(e for e in entries if len(e) > 1)
        self.phrase_lengths = sorted({len(p) for p in self.phrases})

    def flagged(self, text: str) -> tuple[int, int, list[str]]:
        """(flagged occurrences, words, the distinct flagged words/phrases in order of appearance)."""
        words = wordlists.words(text)
        hits = [w for w in words if w in self.words]
        for n in self.phrase_lengths:
            hits += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1) if tuple(words[i : i + n]) in self.phrases]
        return len(hits), len(words), list(dict.fromkeys(hits))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        n_flagged, n_words, which = self.flagged(doc.text)
        doc.metadata[META_FLAGGED_WORDS] = n_flagged
        if n_flagged:
            self.stat_update("documents_flagged")
            self.stat_update("flagged_words", value=n_flagged)
        fraction = n_flagged / n_words if n_words else 0.0
        if n_flagged >= self.min_flagged_words and fraction > self.max_flagged_fraction:
            return drop(doc, "offensive_words", flagged_fraction=round(fraction, 4), flagged_words=n_flagged,
                         words=n_words, max_flagged_fraction=self.max_flagged_fraction, examples=which[:3])
        return True
