"""Names shared by the plain modules and the Dagster layer, defined once."""

import re

# Asset (stage) names.
RAW = "raw_documents"
FILTERED = "filtered_documents"
DEDUP_INDEX = "dedup_index"
DEDUPLICATED = "deduplicated_documents"
MIXTURE = "mixture"
MIXTURE_COMPARISON = "mixture_comparison"

# Folder names under data_root for each stage's documents.
STAGE_DIRS = {RAW: "raw", FILTERED: "filtered", DEDUPLICATED: "deduplicated"}

# Sources without dated drops have a single snapshot of this name.
DEFAULT_SNAPSHOT = "default"

# Every input document ends in exactly one of these.
FATE_KEPT = "kept"
FATE_DROPPED = "dropped"
FATE_DUPLICATE = "duplicate"
FATE_QUARANTINED = "quarantined"
FATES = (FATE_KEPT, FATE_DROPPED, FATE_DUPLICATE, FATE_QUARANTINED)

# Filters a recipe may list, in the order they are documented.
FILTER_NAMES = ("gopher_repetition", "gopher_quality", "c4", "fineweb", "language", "pii")

SOURCE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
