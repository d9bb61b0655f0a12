"""What a filter family declares about itself, and how our filters drop a document.

A family is one class in its own module of this package, listed once in `registry.FAMILIES`
(name -> class). The class states its nature as the class attributes of `FilterFamily`; the
registry reads them to build the filter, check its parameters at recipe load, and say whether
it drops documents. It also says what it reports: what it counts over a partition (the catalog's
`filter_counts`), the flat numbers drawn from those counts (the stage's statistics and the UI's
plots) and what it measured on one document (`trace`). This module imports no datatrove, so
the catalog can read these without loading the filters' dependencies until it asks.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, ClassVar

from mix_pipeline.names import META_FILTER_VALUE

if TYPE_CHECKING:
    from datatrove.data import Document


class FilterFamily:
    """The declarations of a filter class, and what it reports (class attributes and class methods
    with neutral defaults; a family overrides those that apply to it)."""

    # Drops documents, with datatrove's `exclusion_writer`; False: rewrites them and drops none.
    drops: ClassVar[bool] = True
    # Parameters that are lists of file paths, resolved against the recipe's folder.
    path_params: ClassVar[tuple[str, ...]] = ()
    # Splits text into words through `self.language`, as datatrove's prose filters do; the
    # registry hands it the shared word split.
    splits_words: ClassVar[bool] = False
    # Cheap to build: building one at recipe load checks its values too (a PII kind, a marker
    # regex, a fraction out of range) instead of mid-run.
    built_at_load: ClassVar[bool] = False

    @classmethod
    def counts_sql(cls, name: str) -> str | None:
        """What the family counts over a filtered partition, as a DuckDB query over `docs` (one
        `metadata` JSON column) returning (filter, kind, documents, matches) rows; None: nothing."""
        return None

    @classmethod
    def count_stats(cls, rows: list[dict]) -> dict[str, float]:
        """Flat numbers for the stage's statistics and the UI's plots from this family's rows of
        `counts_sql` (filter, kind, documents, matches)."""
        return {}

    @classmethod
    def measured(cls, meta: dict) -> dict | None:
        """What the filter measured on a document it kept, from the document's metadata (shown by
        `trace`); None: nothing beyond a drop's `filter_value`."""
        return None


def per_kind_counts_sql(name: str, key: str) -> str:
    """Counts of a metadata key holding {kind: count} objects: one row per kind with the
    documents that have it and the sum of its counts (PII kinds, decontaminated eval sets)."""
    return f"""SELECT '{name}', e.key, count(*), sum(e.value) FROM (
                   SELECT unnest(map_entries(CAST(json_extract(metadata, '$.{key}') AS MAP(VARCHAR, BIGINT)))) AS e
                   FROM docs WHERE json_extract(metadata, '$.{key}') IS NOT NULL) GROUP BY e.key"""


def drop(doc: Document, reason: str, **value) -> tuple[bool, str]:
    """Drop `doc`, keeping what was measured for the catalog's provenance column (every filter of
    ours drops through this)."""
    doc.metadata[META_FILTER_VALUE] = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return False, reason
