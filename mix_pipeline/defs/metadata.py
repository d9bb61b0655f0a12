"""Turning stage numbers into Dagster metadata the UI renders well."""

from __future__ import annotations

import dagster as dg

# What a partition was built from (see core.lineage); raw, filtered and deduplicated record it
# so a rerun can tell finished partitions from stale or interrupted ones.
INPUT_FINGERPRINT = "input_fingerprint"
# What the filtered stage records of its drift check; the planner and the drift sensor read them.
DRIFT_SCORE = "drift_score"
DRIFT_EXCEEDED = "drift_exceeded"


# Short column labels: the UI cuts a markdown table wider than its metadata panel at the panel's
# edge, with no scroll bar and no hint, so a wide table (the mixture ledger, the comparison) is shown
# as two tables of at most eight short columns, the key columns repeated in each.
SHORT_HEADERS = {"requested_weight": "requested", "target_weight": "target", "achieved_weight": "achieved",
                 "available_units": "available", "max_epochs": "max epochs", "shortfall_units": "shortfall"}


def markdown_table(rows: list[dict], columns: list[str] | None = None, headers: dict[str, str] | None = None) -> dg.MetadataValue:
    """`rows` as a markdown table of `columns` (all of the first row's by default), each headed by its
    label in `headers` or its own name."""
    if not rows:
        return dg.MetadataValue.md("_(none)_")
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join((headers or {}).get(c, c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    # A pipe inside a cell (document text, JSON) would split it into columns.
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def numbers(stats: dict) -> dict:
    """Flat numeric stats as metadata entries (ints stay ints, so the UI plots them)."""
    out = {}
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(float(value))
    return out
