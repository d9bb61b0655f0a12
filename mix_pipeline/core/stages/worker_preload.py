"""Imported once by datatrove's forkserver (see core.stages.WORKER_PRELOAD), so that the pool
workers it forks start with what every stage's pipeline needs already loaded.

Without it each worker of each stage (raw, filtered, dedup index, deduplicated: 12 pools of 2
on the demo's three text sources) imports datatrove, pyarrow, DuckDB and our stages again;
every Parquet writer imports pandas on its first batch (pyarrow's `RecordBatch.from_pylist`
does: about 0.4 CPU s a worker, 5 CPU s of the 100 MB benchmark); and each filtered worker
also imports spaCy, builds its English tokenizer and loads the py3langid model. Nothing here
changes what a worker computes: the same modules and the same model, loaded earlier.
"""

import gc

import pandas  # noqa: F401  (pyarrow's RecordBatch.from_pylist imports it: every Parquet writer)
import pyarrow.parquet  # noqa: F401
from datatrove.pipeline.filters import GopherRepetitionFilter

from mix_pipeline.core import stages as _stages  # noqa: F401  (every stage module)
from mix_pipeline.core.filters.language import fast_language_identifier
from mix_pipeline.core.filters.registry import FILTER_NAMES, filter_class
from mix_pipeline.core.filters.words import import_spacy, word_splitter

for _name in FILTER_NAMES:  # every filter family's module (the registry imports them on first use)
    filter_class(_name)
import_spacy()  # datatrove's word tokenizer imports it on first use (without torch: see there)
fast_language_identifier()
# The blank English pipeline the prose filters split words with, under the key they ask for
# (datatrove's default language, "eng").
_ = word_splitter(GopherRepetitionFilter().language).nlp
# What was loaded here lives as long as every worker: out of the cyclic GC's scans, so a
# worker's collections neither walk it nor touch (copy) the pages it shares with the forkserver.
gc.freeze()
