"""data_root on object storage: a local mirror, published as whole generations.

Object stores have no rename, so the local "stage, then rename into place" publish does not
carry over. Instead the pipeline works in a local mirror of data_root (`work_dir`: the staging
folders, the DuckDB catalog and the Dagster runs stay with the driver), and after a run publishes
the mirror's published tree as one *generation* (`publish_tree`):
  1. every file goes to <data_root>/generations/<id>/<path>, where <id> is a digest of the
     tree's paths and contents. A file already there with the same size (an earlier, killed
     publish of the same outputs) is not uploaded again;
  2. then <data_root>/generations/<id>/_MANIFEST.json (every path with its size and sha256);
  3. last, <data_root>/CURRENT: one small object naming the generation. A single PUT is atomic,
     so a reader that reads CURRENT, then the generation's _MANIFEST.json (`current_tree`), sees
     a whole tree or the previous one, never half of one.
A run killed at any point leaves CURRENT on the previous generation; rerunning rebuilds what is
stale in the mirror (all of it, on a new machine: outputs are deterministic, so it is the same
tree, the same <id>, and objects already uploaded are kept) and publishes again.
"""

from __future__ import annotations

import json
import os

from mix_pipeline.core.io.documents import file_sha256
from mix_pipeline.core.io.storage import filesystem

CURRENT = "CURRENT"
GENERATIONS = "generations"
TREE_MANIFEST = "_MANIFEST.json"
# Not published: the driver's own state (catalog, Dagster runs, locks, scratch).
PRIVATE = ("_work", "catalog.duckdb", "catalog.duckdb.lock", "catalog.duckdb.wal")
WORK_DIR_ENV = "MIX_PIPELINE_WORK_DIR"


def work_dir(data_root_url: str, base_dir: str) -> str:
    """The local mirror of a data_root on object storage: $MIX_PIPELINE_WORK_DIR/<name>, or
    `.mix_pipeline_work/<name>` beside the recipe, <name> readable and unique per URL."""
    import hashlib
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", data_root_url.split("://", 1)[1]).strip("_")[:80]
    name += "-" + hashlib.sha256(data_root_url.encode()).hexdigest()[:8]
    parent = os.environ.get(WORK_DIR_ENV) or os.path.join(base_dir, ".mix_pipeline_work")
    return os.path.join(parent, name)


def _published_files(local_root: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(local_root):
        rel_root = os.path.relpath(root, local_root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (rel_root == "." and d in PRIVATE))
        for name in sorted(files):
            if name.startswith(".") or (rel_root == "." and name in PRIVATE) or ".tmp-" in name:
                continue
            out.append(os.path.normpath(os.path.join(rel_root, name)).replace(os.sep, "/"))
    return sorted(out)


def publish_tree(local_root: str, url: str, log=print) -> str:
    """Publish the mirror's tree to `url` as a generation (see the module docstring); returns its id."""
    import hashlib

    from mix_pipeline.core.io.faults import crash_point

    fs = filesystem(url)
    url = url.rstrip("/")
    files = [(rel, os.path.getsize(os.path.join(local_root, rel)), file_sha256(os.path.join(local_root, rel)))
             for rel in _published_files(local_root)]
    tree = json.dumps({"files": [{"path": p, "size": s, "sha256": h} for p, s, h in files]}, indent=1, sort_keys=True)
    generation = hashlib.sha256(tree.encode()).hexdigest()[:16]
    prefix = f"{url}/{GENERATIONS}/{generation}"
    try:
        current = fs.cat_file(f"{url}/{CURRENT}").decode().strip()
    except FileNotFoundError:
        current = None
    if current == generation:
        log(f"publish: {url} already holds generation {generation}")
        return generation
    try:
        there = {info["name"].split("://", 1)[-1]: info.get("size") for info in fs.find(prefix, detail=True).values()}
    except FileNotFoundError:
        there = {}
    uploaded = 0
    for rel, size, _ in files:
        target = f"{prefix}/{rel}"
        if there.get(target.split("://", 1)[1]) == size:
            continue  # uploaded by an earlier try of this same generation
        fs.put_file(os.path.join(local_root, rel), target)
        uploaded += 1
        crash_point("storage.upload")
    fs.pipe_file(f"{prefix}/{TREE_MANIFEST}", tree.encode())
    crash_point("storage.manifest")
    fs.pipe_file(f"{url}/{CURRENT}", (generation + "\n").encode())
    log(f"publish: {url} now at generation {generation} ({uploaded} of {len(files)} file(s) uploaded)")
    return generation


def current_tree(url: str) -> tuple[str, dict[str, dict]]:
    """(generation, {path: {size, sha256}}) of what `url` publishes now: how a reader finds the files."""
    fs = filesystem(url)
    url = url.rstrip("/")
    generation = fs.cat_file(f"{url}/{CURRENT}").decode().strip()
    tree = json.loads(fs.cat_file(f"{url}/{GENERATIONS}/{generation}/{TREE_MANIFEST}"))
    return generation, {f["path"]: {"size": f["size"], "sha256": f["sha256"]} for f in tree["files"]}
