"""The filters a recipe can list, each built as a datatrove pipeline step.

Prose-quality filters are datatrove's own (Gopher repetition, Gopher quality, C4, FineWeb).
datatrove's LanguageFilter downloads a fastText model at run time; ours uses py3langid, whose
model ships inside the wheel, so filtering works on air-gapped machines. PII is redaction, not
dropping: it rewrites the text and counts what it replaced.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from mix_pipeline.names import FILTER_NAMES


class LanguageIdFilter(BaseFilter):
    """Keeps documents whose most likely language is listed, with probability ≥ `min_score`."""

    name = "🌍 Language ID (py3langid, offline)"

    def __init__(self, languages: list[str] | None = None, min_score: float = 0.5, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.languages = list(languages or ["en"])
        self.min_score = float(min_score)
        self._identifier = None

    def _identify(self, text: str) -> tuple[str, float]:
        if self._identifier is None:
            from py3langid.langid import _load_identifier

            self._identifier = _load_identifier(norm_probs=True)
        # The first 10k characters decide: enough for a stable answer, bounded cost on huge docs.
        lang, prob = self._identifier.classify(text[:10_000])
        return lang, float(prob)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang, score = self._identify(doc.text)
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = round(score, 4)
        self.stat_update(f"lang_{lang}")
        if lang not in self.languages:
            return False, f"language_{lang}"
        if score < self.min_score:
            return False, "language_low_score"
        return True


# Patterns for redaction. Phone numbers need a separator structure so that plain numbers
# (years, counts, version strings) are left alone.
PII_PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "ip": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "phone": re.compile(
        r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}(?![\w.])"
    ),
}
PII_REPLACEMENTS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>"}


def redact_pii(text: str, kinds: tuple[str, ...] = tuple(PII_PATTERNS)) -> tuple[str, dict[str, int]]:
    counts: dict[str, int] = {}
    for kind in kinds:
        text, n = PII_PATTERNS[kind].subn(PII_REPLACEMENTS[kind], text)
        if n:
            counts[kind] = n
    return text, counts


class PIIRedactor(PipelineStep):
    """Replaces emails, IP addresses and phone numbers with placeholders; drops nothing.

    Chat documents carry their turns in `metadata["messages"]` (they become the mixture's
    `messages` column), so those are redacted too, not only the rendered text."""

    type = "✂️ - FORMAT"
    name = "🔒 PII redaction"

    def __init__(self, kinds: list[str] | None = None):
        super().__init__()
        unknown = set(kinds or []) - set(PII_PATTERNS)
        if unknown:
            raise ValueError(f"pii: unknown kinds {sorted(unknown)} (known: {sorted(PII_PATTERNS)})")
        self.kinds = tuple(kinds or PII_PATTERNS)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("total")
            doc.text, counts = redact_pii(doc.text, self.kinds)
            messages = doc.metadata.get("messages")
            if isinstance(messages, list):
                for turn in messages:
                    if isinstance(turn, dict) and isinstance(turn.get("content"), str):
                        turn["content"], _ = redact_pii(turn["content"], self.kinds)
            if counts:
                doc.metadata["pii_redacted"] = counts
                self.stat_update("documents_redacted")
                for kind, n in counts.items():
                    self.stat_update(f"pii_{kind}", value=n)
            yield doc


# The prose-quality filters are datatrove's, used as they are.
_CLASSES = {
    "gopher_repetition": "datatrove.pipeline.filters.GopherRepetitionFilter",
    "gopher_quality": "datatrove.pipeline.filters.GopherQualityFilter",
    "c4": "datatrove.pipeline.filters.C4QualityFilter",
    "fineweb": "datatrove.pipeline.filters.FineWebQualityFilter",
}




def _filter_class(name: str) -> type[PipelineStep]:
    if name in _CLASSES:
        module, _, cls = _CLASSES[name].rpartition(".")
        return getattr(importlib.import_module(module), cls)
    if name == "language":
        return LanguageIdFilter
    if name == "pii":
        return PIIRedactor
    raise ValueError(f"unknown filter '{name}' (known: {', '.join(FILTER_NAMES)})")


def is_dropping(name: str) -> bool:
    """Every filter drops documents except `pii`, which rewrites them."""
    return name != "pii"


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming a parameter the filter does not take (checked at recipe load)."""
    accepted = set(inspect.signature(_filter_class(name).__init__).parameters) - {"self", "exclusion_writer"}
    for key in params:
        if key not in accepted:
            raise ValueError(f"unknown parameter '{key}' (accepted: {', '.join(sorted(accepted))})")


def build_filter(name: str, params: dict[str, Any], exclusion_writer=None) -> PipelineStep:
    cls = _filter_class(name)
    if is_dropping(name):
        return cls(exclusion_writer=exclusion_writer, **params)
    return cls(**params)
