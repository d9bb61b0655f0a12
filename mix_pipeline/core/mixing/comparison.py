"""Several named mixtures side by side, from their manifests alone."""

from __future__ import annotations

import json
import os

from mix_pipeline.core.io.documents import write_text_atomic

COLUMNS = ["mixture", "unit", "source", "requested_weight", "target_weight", "achieved_weight", "units",
           "tokens", "documents", "rows", "epochs", "max_epochs"]
JSON_FILE = "comparison.json"
MARKDOWN_FILE = "comparison.md"


def comparison_rows(manifests: dict[str, dict]) -> list[dict]:
    """One row per (mixture, source), mixtures and sources in name order."""
    rows = []
    for name in sorted(manifests):
        m = manifests[name]
        for source, row in sorted(m["sources"].items()):
            rows.append({"mixture": name, "unit": m["unit"], "source": source,
                         **{c: row.get(c) for c in COLUMNS[3:]}})
    return rows


def mixture_summaries(manifests: dict[str, dict]) -> dict[str, dict]:
    return {
        name: {
            "unit": m["unit"],
            "total_target": m["total_target"],
            "total_units": m["total_units"],
            "tokens": sum(row.get("tokens", 0) for row in m["sources"].values()),
            "seed": m["seed"],
            "weighting": m.get("weighting", {"kind": "explicit"}),
            "rebalanced": m.get("rebalanced", {}),
            "rows": {split: info["documents"] for split, info in m["splits"].items()},
            "output_sha256": m["output_sha256"],
        }
        for name, m in sorted(manifests.items())
    }


def markdown(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_comparison(mixtures_dir: str, manifests: dict[str, dict], missing: list[str] = ()) -> dict:
    """Write comparison.json and comparison.md under `mixtures_dir`; return the JSON document."""
    rows = comparison_rows(manifests)
    doc = {"mixtures": mixture_summaries(manifests), "rows": rows, "not_built": sorted(missing)}
    os.makedirs(mixtures_dir, exist_ok=True)
    write_text_atomic(os.path.join(mixtures_dir, JSON_FILE), json.dumps(doc, indent=2, sort_keys=True) + "\n")
    text = "# Mixtures compared\n\n" + markdown(rows)
    if missing:
        text += f"\nNot built yet: {', '.join(sorted(missing))}\n"
    write_text_atomic(os.path.join(mixtures_dir, MARKDOWN_FILE), text)
    return doc


def read_manifests(mixtures_dir: str, names: list[str]) -> tuple[dict[str, dict], list[str]]:
    """The manifests of `names` that exist, and the names that have none yet."""
    found, missing = {}, []
    for name in names:
        path = os.path.join(mixtures_dir, name, "manifest.json")
        if os.path.exists(path):
            with open(path) as f:
                found[name] = json.load(f)
        else:
            missing.append(name)
    return found, missing
