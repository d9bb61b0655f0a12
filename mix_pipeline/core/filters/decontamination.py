"""Benchmark decontamination: drop (or cut) training text that shares a word n-gram with an eval set.

The eval sets are local JSON-lines files named in the recipe. Each eval item's text is split into
lower-cased words (`\\w+`, so punctuation and case do not hide a copy) and every `ngram`-word window
goes into an in-memory index; a document sharing any window with the index is contaminated. In
`drop` mode it is dropped with reason `decontamination:<eval set>`; in `remove_span` mode the
overlapping spans are cut out and the rest is kept (dropped only if nothing is left).

Why not datatrove's `pipeline/decont` (NGramsDecontIndexer + NGramsDecontFilter)? Its indexer
imports `lighteval` and always asks lighteval's task registry for tasks, whose datasets it loads
from the Hugging Face hub, so it cannot index local files offline (and `lighteval` is not a
dependency); it must run as a separate single-task pipeline writing an index folder first; and its
filter only drops, keeping the first match. Eval sets are small, so building the index inside the
step (once per worker) costs well under a second and needs no extra pipeline or folder.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.logging import logger

from mix_pipeline.names import META_DECONTAMINATED, META_FILTER_VALUE

_WORD = re.compile(r"\w+")
MODES = ("drop", "remove_span")


def eval_set_name(path: str) -> str:
    """`evals/qa.jsonl` → `qa`: the name drops are attributed to."""
    name = os.path.basename(path)
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def _open_text(path: str):
    if "://" in path:  # an eval set on object storage
        from mix_pipeline.core.io import storage

        return storage.open_text(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def read_eval_items(path: str, text_fields: list[str]) -> Iterator[tuple[str, str]]:
    """(item id, text) for every text field of every record; the id is `id` or the line number."""
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: each line must be a JSON object")
            texts = [record.get(field) for field in text_fields]
            if not any(isinstance(t, str) for t in texts):
                raise ValueError(f"{path}:{line_no}: no text in field(s) {text_fields}")
            item_id = str(record.get("id", line_no))
            for text in texts:
                if isinstance(text, str):
                    yield item_id, text


@dataclass
class Match:
    eval_set: str
    eval_id: str
    ngram: str
    start: int  # word positions of the window
    end: int


class EvalIndex:
    """Every n-gram of every eval item, mapped to the first (eval set, item) it came from.

    Eval sets are indexed in the order given (the recipe sorts them), so attribution is
    deterministic. Items shorter than `ngram` words have no window and cannot be matched; they
    are counted in `too_short`.
    """

    def __init__(self, files: list[str], ngram: int, text_fields: list[str]):
        self.ngram = ngram
        self.windows: dict[tuple[str, ...], tuple[str, str]] = {}
        self.items: dict[str, int] = {}
        self.too_short: dict[str, int] = {}
        for path in files:
            name = eval_set_name(path)
            self.items.setdefault(name, 0)
            self.too_short.setdefault(name, 0)
            for item_id, text in read_eval_items(path, text_fields):
                words = _WORD.findall(text.lower())
                self.items[name] += 1
                if len(words) < ngram:
                    self.too_short[name] += 1
                for i in range(len(words) - ngram + 1):
                    self.windows.setdefault(tuple(words[i : i + ngram]), (name, item_id))

    def matches(self, text: str) -> tuple[list[re.Match], list[Match]]:
        """The document's word matches and every window it shares with an eval item."""
        spans = list(_WORD.finditer(text))
        words = [m.group(0).lower() for m in spans]
        n, found = self.ngram, []
        windows = self.windows
        for i in range(len(words) - n + 1):
            hit = windows.get(tuple(words[i : i + n]))
            if hit is not None:
                found.append(Match(hit[0], hit[1], " ".join(words[i : i + n]), i, i + n))
        return spans, found


def remove_spans(text: str, spans: list[re.Match], found: list[Match]) -> tuple[str, int]:
    """Cut out the union of the matched windows (from the first word's start to the last word's
    end); returns the new text and the number of separate spans removed."""
    merged: list[list[int]] = []
    for m in sorted(found, key=lambda m: m.start):
        if merged and m.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], m.end)
        else:
            merged.append([m.start, m.end])
    for start, end in reversed(merged):
        a, b = spans[start].start(), spans[end - 1].end()
        text = text[:a].rstrip(" \t") + (" " if a and b < len(text) and not text[b].isspace() else "") + text[b:]
    return text, len(merged)


class Decontaminator(BaseFilter):
    """A datatrove filter step; the index is built on first use in each worker process."""

    name = "🧪 Decontamination (word n-grams)"

    def __init__(self, eval_files: list[str], ngram: int = 13, mode: str = "drop",
                 text_fields: list[str] | None = None, exclusion_writer=None):
        super().__init__(exclusion_writer)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
        self.eval_files = list(eval_files)
        self.ngram = int(ngram)
        self.mode = mode
        self.text_fields = list(text_fields or ["text"])
        self._index: EvalIndex | None = None

    @property
    def index(self) -> EvalIndex:
        if self._index is None:
            self._index = EvalIndex(self.eval_files, self.ngram, self.text_fields)
            for name, n in self._index.too_short.items():
                if n:
                    # Logged, not a stat: every task builds the index, so a stat would sum over tasks.
                    logger.warning(f"decontamination: {n} text(s) of eval set '{name}' have fewer than "
                                   f"{self.ngram} words and cannot be matched")
        return self._index

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        spans, found = self.index.matches(doc.text)
        if not found:
            return True
        per_set: dict[str, int] = {}
        for m in found:
            per_set[m.eval_set] = per_set.get(m.eval_set, 0) + 1
        doc.metadata[META_DECONTAMINATED] = per_set
        # The eval set with the most shared windows takes the drop (ties: the first indexed).
        top = max(per_set, key=lambda s: (per_set[s], -list(self.index.items).index(s)))
        first = next(m for m in found if m.eval_set == top)
        for name, n in per_set.items():
            self.stat_update(f"contaminated_{name}")
            self.stat_update(f"matched_ngrams_{name}", value=n)
        value = {"eval_set": top, "eval_id": first.eval_id, "ngram": first.ngram, "matched_ngrams": per_set[top],
                 "mode": self.mode}
        if self.mode == "remove_span":
            doc.text, removed = remove_spans(doc.text, spans, found)
            self.stat_update("spans_removed", value=removed)
            if _WORD.search(doc.text):
                return True
            value["emptied"] = True
        doc.metadata[META_FILTER_VALUE] = json.dumps(value, sort_keys=True, ensure_ascii=False)
        return False, top
