"""Names shared by the plain modules and the Dagster layer, defined once.

One stage, one name: the asset key, its modules (core/stages/<name>.py, defs/<name>.py), its
checks' stage (core/gates/checks.py, the recipe's `checks` overrides) and its rows in the catalog's
`stage_stats`. Jobs are phases of several stages and carry their own names (defs/jobs.py): a job
may not share its name with an asset. Paths live in mix_pipeline/layout.py, filter names in
core/filters/registry.py."""

import re

# Stage (asset) names.
RAW = "raw"
FILTERED = "filtered"
DEDUP_INDEX = "dedup_index"
DEDUPLICATED = "deduplicated"
MIXTURE = "mixture"
MIXTURE_COMPARISON = "mixture_comparison"
MIXTURE_LAB = "mixture_lab"
QUALITY_MODEL = "quality_model"  # the recipe's trained quality classifier (core/filters/quality_model.py)
# The lab's recommendation for experiment E becomes mixture E + this suffix.
RECOMMENDED_SUFFIX = "_recommended"

# Sources without dated drops have a single snapshot of this name. A source whose path holds
# the placeholder (crawl/{snapshot}/*.jsonl.gz) has one snapshot per sub-folder there.
DEFAULT_SNAPSHOT = "default"
SNAPSHOT_PLACEHOLDER = "{snapshot}"
# A source×snapshot partition key is "<source>:<snapshot>". Not `|`: the Dagster UI's Materialize…
# dialog splits a `partition` it is opened with at `|` (its multi-partition delimiter), so `web|x`
# arrived there as `web`. `:` is an ordinary character to the UI's partition-selection grammar (as
# in Dagster's own hourly keys, `2024-05-13-00:00`), needs no quoting there, and cannot occur in a
# source name, so a key splits at its first `:`.
PARTITION_SEPARATOR = ":"


def snapshot_order(snapshot: str) -> tuple[bool, str]:
    """Snapshots in generation order: `default` first (sources without dated drops), then by name."""
    return (snapshot != DEFAULT_SNAPSHOT, snapshot)


def partition_key(source: str, snapshot: str) -> str:
    return f"{source}{PARTITION_SEPARATOR}{snapshot}"


def split_partition_key(key: str) -> tuple[str, str]:
    source, _, snapshot = key.partition(PARTITION_SEPARATOR)
    return source, snapshot


# What Dagster refuses in a partition key (dagster's INVALID_PARTITION_SUBSTRINGS). The separator
# `:` is fine in a snapshot name: source names cannot hold it, so a key splits at its first `:`.
_INVALID_KEY_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
# What the UI cannot take in a one-dimensional key: its Materialize… dialog splits the partition it
# is opened with at `|` (the multi-partition delimiter), so `web:2024|05` would arrive as `web:2024`.
_UI_KEY_CHARACTERS = {"|": "the Dagster UI splits partition keys at '|' (its multi-partition delimiter)"}


def snapshot_name_problem(name: str) -> str | None:
    """Why a snapshot folder's name cannot be a partition key, or None when it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    bad = next((s for s in _INVALID_KEY_SUBSTRINGS if s in name), None)
    if bad is not None:
        return f"its name holds {bad!r}, which a partition key cannot"
    bad = next((c for c in _UI_KEY_CHARACTERS if c in name), None)
    if bad is not None:
        return f"its name holds {bad!r}: {_UI_KEY_CHARACTERS[bad]}"
    return None


# Every input document ends in exactly one of these.
FATE_KEPT = "kept"
FATE_DROPPED = "dropped"
FATE_DUPLICATE = "duplicate"
FATE_QUARANTINED = "quarantined"
# Taken out on a removal request (`mix-pipeline forget`): the raw stage sets it aside unread
# by any later stage, keeping no text (see core/provenance/forget.py).
FATE_REMOVED = "removed"
FATES = (FATE_KEPT, FATE_DROPPED, FATE_DUPLICATE, FATE_QUARANTINED, FATE_REMOVED)
# The removal requests of a data_root, one JSON object a line (core/provenance/forget.py).
REMOVALS_FILE = "removals.jsonl"

# Filter names live with the filters, in core/filters/registry.py.

# PII kinds, in the order they are redacted: secrets and card numbers first, so the looser phone
# pattern never claims digits that belong to them.
PII_KINDS = ("secret_key", "credit_card", "email", "ip", "phone")

# Document metadata keys our filters write and the catalog and checks read back.
META_FILTER_REASON = "filter_reason"  # datatrove's BaseFilter writes it on dropped documents
META_FILTER_VALUE = "filter_value"  # what our filters measured when they dropped a document (JSON)
META_LANGUAGE = "language"
META_LANGUAGE_SCORE = "language_score"
META_PII = "pii_redacted"  # {kind: replacements}
META_FLAGGED_WORDS = "flagged_words"  # safety: flagged words counted in the document
META_DECONTAMINATED = "decontaminated"  # {eval set: matched n-grams}
META_QUALITY_SCORE = "quality_score"  # the quality classifier's P(reference-like), in [0, 1]

SOURCE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
