"""What a filter family declares about itself, and how our filters drop a document.

A family is one class in its own module of this package, listed once in `registry.FAMILIES`
(name -> class). The class states its nature as the class attributes of `FilterFamily`; the
registry reads them to build the filter, check its parameters at recipe load, and say whether
it drops documents. Nothing outside the registry asks a class about these.
"""

from __future__ import annotations

import json
from typing import ClassVar

from datatrove.data import Document

from mix_pipeline.names import META_FILTER_VALUE


class FilterFamily:
    """The declarations of a filter class (a mixin of class attributes, no behaviour)."""

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


def drop(doc: Document, reason: str, **value) -> tuple[bool, str]:
    """Drop `doc`, keeping what was measured for the catalog's provenance column (every filter of
    ours drops through this)."""
    doc.metadata[META_FILTER_VALUE] = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return False, reason
