"""Where documents sit in the outputs: every published Parquet output that holds document text
(stage shards, dropped shards, mixture shards), and the search of them for given documents that
both `trace` (core/provenance/trace.py) and `forget` (core/provenance/forget.py) build on.
"""

from __future__ import annotations

import glob
import json
import os

from mix_pipeline.core.io.documents import sql_file_list


class ProvenanceError(ValueError):
    """A trace or removal request that cannot be answered, phrased as one line."""


def output_files(data_root: str) -> dict[str, list[str]]:
    """Every published Parquet output that holds document text, by stage (mixtures by name)."""
    out = {}
    for stage in ("raw", "filtered", "deduplicated"):
        out[stage] = sorted(glob.glob(os.path.join(data_root, stage, "*", "*", "part-*.parquet")))
    out["dropped"] = sorted(glob.glob(os.path.join(data_root, "dropped", "*", "*", "*", "part-*.parquet")))
    for manifest in sorted(glob.glob(os.path.join(data_root, "mixtures", "*", "manifest.json"))):
        folder = os.path.dirname(manifest)
        out[f"mixture:{os.path.basename(folder)}"] = mixture_shards(folder)
    return out


def mixture_shards(folder: str) -> list[str]:
    path = os.path.join(folder, "manifest.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        manifest = json.load(f)
    return [os.path.join(folder, rel) for split in manifest["splits"].values() for rel in split["files"]]


def find_in_outputs(con, data_root: str, docs: list[tuple[str, str]]) -> list[dict]:
    """Rows of any output (stage shards, dropped shards, mixture shards) that hold one of `docs`
    ((source, id) pairs): the proof that a removal left nothing behind is this list being empty."""
    if not docs:
        return []
    con.execute("CREATE OR REPLACE TEMP TABLE _sought (source VARCHAR, id VARCHAR)")
    con.executemany("INSERT INTO _sought VALUES (?, ?)", [list(d) for d in docs])
    found = []
    for where, files in output_files(data_root).items():
        if not files:
            continue
        for source, doc_id, filename, row in con.execute(
            f"""SELECT d.source, d.id, d.filename, d.file_row_number
                FROM read_parquet({sql_file_list(files)}, filename = true, file_row_number = true) d
                SEMI JOIN _sought s ON d.source = s.source AND d.id = s.id ORDER BY ALL"""
        ).fetchall():
            found.append({"output": where, "source": source, "id": doc_id,
                          "file": os.path.relpath(filename, data_root), "row": row})
    return found
