"""A mixture's manifest: what it holds (`build_manifest`), its text, and the digest of its output files."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from mix_pipeline.core.mixing.splits import SPLITS

if TYPE_CHECKING:
    from mix_pipeline.core.mixing.selection import Plan


def output_files(splits: dict[str, dict]) -> list[str]:
    """Every output file the manifest lists, relative to the mixture folder, in a fixed order."""
    out = []
    for split in SPLITS:
        info = splits[split]
        out += info["files"] + info.get("jsonl_files", [])
        for entry in info.get("tokenized", {}).values():
            out += [entry["prefix"] + ".bin", entry["prefix"] + ".idx"]
    return out


def output_digest(out_dir: str, splits: dict[str, dict]) -> str:
    """sha256 over the (relative path, sha256) of every output file, in order."""
    from mix_pipeline.core.io.documents import file_sha256

    h = hashlib.sha256()
    for rel in output_files(splits):
        h.update(f"{rel}\0{file_sha256(os.path.join(out_dir, rel))}\n".encode())
    return h.hexdigest()


def build_manifest(name: str, spec, recipe_sha256: str, tokenizer: str, plan: Plan, splits: dict,
                   output_sha256: str, exports: dict | None = None) -> dict:
    return {
        "mixture": name,
        "recipe_sha256": recipe_sha256,
        "seed": spec.seed,
        "unit": spec.unit,
        "tokenizer": tokenizer,
        "total_target": spec.total,
        "total_units": sum(row.units for row in plan.ledger),
        "max_epochs": spec.max_epochs,
        "weighting": plan.weighting,
        "on_infeasible": spec.on_infeasible,
        "rebalanced": plan.rebalanced,
        "sources": {
            row.source: {k: v for k, v in asdict(row).items() if k != "source"} for row in plan.ledger
        },
        "splits": splits,
        "output_sha256": output_sha256,
        "exports": exports or {},
    }


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
