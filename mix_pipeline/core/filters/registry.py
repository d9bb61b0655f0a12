"""The filters a recipe can list: one line per family in `FAMILIES`, name -> class.

This is the one place a filter's name is spelled; the family's class, in its own module of this
package, declares its nature (`base.FilterFamily`: whether it drops or rewrites, which parameters
are file paths, whether it splits words as the prose filters do, whether building it checks its
values). The stages, the recipe, the catalog, the gates, the dataset card and the scoring ask
here. Adding a filter is its module plus one line in `FAMILIES` (and a name constant below only
where other code must name that filter).

Classes are named by dotted path and imported when first asked for: importing the registry, as
the recipe and `names` users do for the names alone, loads neither datatrove nor spaCy.

Filters that drop a document stamp what they measured (`filter_value`) next to datatrove's
`filter_reason`, so the catalog can say not only which filter dropped a document but why.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datatrove.pipeline.base import PipelineStep

# Names other code refers to a filter by.
GOPHER_REPETITION = "gopher_repetition"
GOPHER_QUALITY = "gopher_quality"
C4 = "c4"
FINEWEB = "fineweb"
LANGUAGE = "language"
SAFETY = "safety"
CODE_QUALITY = "code_quality"
PII = "pii"
QUALITY_CLASSIFIER = "quality_classifier"

_HERE = "mix_pipeline.core.filters"
# The filters a recipe may list, in the order they are documented.
FAMILIES: dict[str, str] = {
    # datatrove's classes with their `filter` computed from one shared word split (core.filters.prose):
    # the same parameters, decisions and reasons, plus the measured value of each drop.
    GOPHER_REPETITION: f"{_HERE}.prose.FastGopherRepetitionFilter",
    GOPHER_QUALITY: f"{_HERE}.prose.FastGopherQualityFilter",
    C4: f"{_HERE}.prose.FastC4QualityFilter",
    FINEWEB: f"{_HERE}.prose.FastFineWebQualityFilter",
    LANGUAGE: f"{_HERE}.language.LanguageIdFilter",
    SAFETY: f"{_HERE}.safety.SafetyFilter",
    CODE_QUALITY: f"{_HERE}.code_quality.CodeQualityFilter",
    PII: f"{_HERE}.pii.PIIRedactor",
    QUALITY_CLASSIFIER: f"{_HERE}.quality_model.QualityClassifierFilter",
}
FILTER_NAMES = tuple(FAMILIES)
# Prose-quality filters; `code_quality` replaces them on code sources.
PROSE_FILTERS = (GOPHER_REPETITION, GOPHER_QUALITY, C4, FINEWEB)
# Not listed under a source's filters: the recipe's top-level `decontamination` runs it on every
# source, first in the filtered stage (core.filters.decontamination). Its drops are attributed to
# this name like a filter's.
DECONTAMINATION = "decontamination"


def filter_class(name: str) -> type[PipelineStep]:
    """The family class of the filter `name` (imported on first use)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown filter '{name}' (known: {', '.join(FILTER_NAMES)})")
    module, _, attr = FAMILIES[name].rpartition(".")
    return getattr(importlib.import_module(module), attr)


def counts_queries() -> list[str]:
    """Every family's query of what it counts over a filtered partition (`FilterFamily.counts_sql`)."""
    return [query for name in FAMILIES if (query := filter_class(name).counts_sql(name)) is not None]


def is_dropping(name: str) -> bool:
    """Whether the filter drops documents (as all do but PII redaction, which rewrites them)."""
    return filter_class(name).drops


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming a parameter the filter does not take (checked at recipe load)."""
    cls = filter_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "exclusion_writer"}
    for key in params:
        if key not in accepted:
            raise ValueError(f"unknown parameter '{key}' (accepted: {', '.join(sorted(accepted))})")
    for key in cls.path_params:
        value = params.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"'{key}' must be a list of file paths")
    if cls.built_at_load:
        # Files are checked once paths resolve (the recipe's check_source_paths).
        try:
            cls(**{k: v for k, v in params.items() if k not in cls.path_params})
        except (TypeError, ValueError, re.error) as exc:
            raise ValueError(str(exc)) from None


def path_params(name: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(parameter, path) for every file path a filter's parameters name."""
    return [(key, p) for key in filter_class(name).path_params for p in params.get(key) or []]


def build_filter(name: str, params: dict[str, Any], exclusion_writer=None,
                 resolve: Callable[[str], str] = lambda p: p) -> PipelineStep:
    cls = filter_class(name)
    params = dict(params)
    for key in cls.path_params:
        if params.get(key):
            params[key] = [resolve(p) for p in params[key]]
    step = cls(exclusion_writer=exclusion_writer, **params) if cls.drops else cls(**params)
    if cls.splits_words and isinstance(step.language, str):
        from mix_pipeline.core.filters.tokenizer import shared_tokenizer
        from mix_pipeline.core.filters.words import word_splitter

        if word_splitter(step.language) is None:
            # A language core.filters.words cannot split runs datatrove's own filter code. Both
            # helpers accept the same languages (those datatrove splits with a blank spaCy
            # pipeline), so this keeps datatrove's tokenizer; SharedSpaCyTokenizer stays as the
            # benchmarks' "before" reference.
            step.language = shared_tokenizer(step.language) or step.language
    return step
