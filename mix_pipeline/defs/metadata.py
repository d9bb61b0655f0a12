"""Turning stage numbers into Dagster metadata the UI renders well."""

from __future__ import annotations

import dagster as dg

# What a partition was built from (see core.lineage); raw, filtered and deduplicated record it
# so a rerun can tell finished partitions from stale or interrupted ones.
INPUT_FINGERPRINT = "input_fingerprint"
# What the filtered stage records of its drift check; the planner and the drift sensor read them.
DRIFT_SCORE = "drift_score"
DRIFT_EXCEEDED = "drift_exceeded"


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_(none)_")
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
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
