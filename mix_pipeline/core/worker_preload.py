"""Imported once by datatrove's forkserver (see core.stages.WORKER_PRELOAD), so that the pool
workers it forks start with what every stage's pipeline needs already loaded.

Without it each worker of each stage (raw, filtered, dedup index, deduplicated: 12 pools of 2
on the demo's three text sources) imports datatrove, pyarrow, DuckDB and our stages again;
every Parquet writer imports pandas on its first batch (pyarrow's `RecordBatch.from_pylist`
does: about 0.4 CPU s a worker, 5 CPU s of the 100 MB benchmark); and each filtered worker
also imports spaCy, builds its English tokenizer and loads the py3langid model. Nothing here
changes what a worker computes: the same modules and the same model, loaded earlier.
"""

import sys

import pandas  # noqa: F401  (pyarrow's RecordBatch.from_pylist imports it: every Parquet writer)
import pyarrow.parquet  # noqa: F401

# spaCy's thinc imports torch whenever it is installed (the `lab` extra installs it): ~1 CPU s
# and a few hundred MB in this process, for tokenizers that never use it. Hide it while spaCy
# loads; a step that imports torch itself later still gets it.
_torch_hidden = "torch" not in sys.modules
if _torch_hidden:
    sys.modules["torch"] = None  # `import torch` raises ImportError: thinc runs without it
try:
    import spacy  # noqa: F401  (datatrove's word tokenizer imports it on first use)
    import spacy.lang.en  # noqa: F401
finally:
    if _torch_hidden:
        del sys.modules["torch"]
from datatrove.pipeline.filters import GopherRepetitionFilter

from mix_pipeline.core import stages as _stages  # noqa: F401  (every stage module)
from mix_pipeline.core.filters import fast_language_identifier
from mix_pipeline.core.prose import word_splitter

fast_language_identifier()
# The blank English pipeline the prose filters split words with, under the key they ask for
# (datatrove's default language, "eng").
_ = word_splitter(GopherRepetitionFilter().language).nlp
