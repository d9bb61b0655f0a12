"""Published partitions, checked against what their stage wrote before anything trusts them.

Each stage that publishes a source:snapshot partition (raw + quarantine, filtered + dropped,
deduplicated) first writes a seal, `_published.json`, into every folder it publishes: each
file's path, size, rows (Parquet) and sha256. `verify_partition` compares the folders with their
seals: a shard deleted, truncated, rewritten or added after publication is named, so the caller
rebuilds the partition (`mix-pipeline run` does) or refuses in one line that names the file and
the fix. Without this, a deleted shard silently shrinks everything downstream while the catalog
still counts the documents it held.

The seal holds no timestamps, so a partition rebuilt from the same input is byte-identical,
seal included. Checking costs a stat per file; a file is hashed again only when its mtime is
not older than the seal's (written, or touched, after the seal).
"""

from __future__ import annotations

import json
import os

from mix_pipeline import layout
from mix_pipeline.core.io.documents import file_sha256
from mix_pipeline.names import DEDUPLICATED, FILTERED, RAW, partition_key

SEAL = "_published.json"

# The folders (under data_root) a stage publishes per partition, by asset name.
PARTITION_FOLDERS = {
    RAW: (layout.RAW_DIR, layout.QUARANTINE_DIR),
    FILTERED: (layout.FILTERED_DIR, layout.DROPPED_DIR),
    DEDUPLICATED: (layout.DEDUPLICATED_DIR,),
}


# The folder a later stage reads of each (the others are checked when deciding what to rebuild).
READ_FOLDER = {RAW: layout.RAW_DIR, FILTERED: layout.FILTERED_DIR, DEDUPLICATED: layout.DEDUPLICATED_DIR}


class DamagedPartition(RuntimeError):
    """A published partition no longer matches its seal; the message is one line with the fix."""


def _files(folder: str) -> list[str]:
    """Every file under `folder` but the seal, relative, sorted (walk order does not matter)."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = os.path.relpath(os.path.join(root, name), folder)
            if path != SEAL:
                out.append(path)
    return sorted(out)


def _rows(path: str) -> int | None:
    if not path.endswith(".parquet"):
        return None
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def seal(folder: str) -> None:
    """Record every file of a staged folder (call it last, right before publishing the folder)."""
    entries = []
    for rel in _files(folder):
        path = os.path.join(folder, rel)
        entries.append({"path": rel, "bytes": os.path.getsize(path), "rows": _rows(path), "sha256": file_sha256(path)})
    with open(os.path.join(folder, SEAL), "w", encoding="utf-8") as f:
        json.dump({"files": entries}, f, indent=1, sort_keys=True)
        f.write("\n")


def verify(folder: str, require_seal: bool = True) -> str | None:
    """What is wrong with a published folder against its seal, in a few words naming the file;
    None when it matches. A folder without a seal (published before seals existed, or written by
    hand) is a problem only with `require_seal`."""
    if not os.path.isdir(folder):
        return f"{folder} is missing"
    seal_path = os.path.join(folder, SEAL)
    try:
        with open(seal_path, encoding="utf-8") as f:
            recorded = {e["path"]: e for e in json.load(f)["files"]}
        sealed_at = os.stat(seal_path).st_mtime_ns
    except FileNotFoundError:
        return f"{folder} has no record of its published files ({SEAL})" if require_seal else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{seal_path} is unreadable ({type(exc).__name__})"
    present = set(_files(folder))
    for rel, entry in sorted(recorded.items()):
        path = os.path.join(folder, rel)
        if rel not in present:
            rows = f" ({entry['rows']:,} rows)" if entry.get("rows") is not None else ""
            return f"{path}{rows} is missing"
        st = os.stat(path)
        if st.st_size != entry["bytes"]:
            return f"{path} changed since it was published ({st.st_size:,} bytes, {entry['bytes']:,} when published)"
        if st.st_mtime_ns >= sealed_at and file_sha256(path) != entry["sha256"]:
            return f"{path} changed since it was published (its sha256 differs)"
    extra = sorted(present - set(recorded))
    if extra:
        return f"{os.path.join(folder, extra[0])} was not published by the stage"
    return None


def verify_partition(root: str, stage: str, source: str, snapshot: str, require_seal: bool = True) -> str | None:
    """The first problem of a stage's published folders for one partition, or None."""
    for name in PARTITION_FOLDERS[stage]:
        problem = verify(os.path.join(root, name, source, snapshot), require_seal)
        if problem:
            return problem
    return None


def require_intact(root: str, stage: str, source: str, snapshot: str) -> None:
    """Raise DamagedPartition when the folder of a stage's partition that later stages read no
    longer matches its seal (a folder without a seal passes: it predates seals or was written by
    hand)."""
    problem = verify(os.path.join(root, READ_FOLDER[stage], source, snapshot), require_seal=False)
    if problem:
        raise DamagedPartition(
            f"{stage}[{partition_key(source, snapshot)}]: {problem}; nothing downstream may read it: rebuild it with "
            "`mix-pipeline run` (it rebuilds partitions whose published files changed) or `mix-pipeline run --full`"
        )
