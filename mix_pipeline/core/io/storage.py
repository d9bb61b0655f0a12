"""Inputs on object storage: sources and eval sets named by fsspec URLs (s3://, gs://, ...).

A path with a scheme (`s3://bucket/corpus/web/*.jsonl.gz`) is listed and read through fsspec;
`file:///abs/path` is the local path `/abs/path`. Each protocol's filesystem is an optional extra
(`pip install 'mix_pipeline[s3]'` installs s3fs; gs:// needs gcsfs of fsspec's release).

Settings come from the environment, as the filesystem packages read them, so that every worker
(a local process or a Ray task on another node) sees the same ones without the recipe holding a
secret:
  - s3://  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_DEFAULT_REGION,
           AWS_ENDPOINT_URL (an S3-compatible server: MinIO, Ceph, moto), or AWS_PROFILE.
  - gs://  GOOGLE_APPLICATION_CREDENTIALS.
  - MIX_PIPELINE_STORAGE_OPTIONS: a JSON object {protocol: {option: value}} passed to
    fsspec.filesystem(protocol, **options), e.g. {"s3": {"anon": true}}.
The Ray runner forwards these variables to its tasks (core/stages/executors.py).

How a remote file is read: the task that reads it (rank r reads files r, r+N, ...) copies the
object to a local temporary file and reads that with the same readers as a local file, so ids and
provenance (`file` is the path relative to the pattern's folder) are the same as for the same
corpus on local disk, and outputs are byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator

from mix_pipeline.core.io.documents import file_sha256
from mix_pipeline.errors import RecipeError

OPTIONS_ENV = "MIX_PIPELINE_STORAGE_OPTIONS"
# Environment variables the filesystems read; forwarded to Ray tasks.
FORWARDED_ENV = (OPTIONS_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")
# The package each protocol needs, and the extra that installs it.
PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", None), "gcs": ("gcsfs", None)}


def is_url(path: str) -> bool:
    """A path on a filesystem other than the local one (file:// is local)."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    """`file:///x` → `/x`; anything else unchanged."""
    return path[len("file://"):] if path.startswith("file://") else path


def protocol(url: str) -> str:
    return url.split("://", 1)[0]


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def _options(proto: str) -> dict:
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise RecipeError(f"{OPTIONS_ENV}: not JSON ({exc}); give an object like {{\"s3\": {{\"anon\": true}}}}") from None
    return dict(options.get(proto, {})) if isinstance(options, dict) else {}


def require_filesystem(url: str, key: str = "path"):
    """The fsspec filesystem of `url`'s protocol; a one-line RecipeError when its package is missing."""
    import fsspec

    proto = protocol(url)
    try:
        # A new instance each time: fsspec's instance cache would keep the endpoint and
        # credentials of the environment it was first made in.
        return fsspec.filesystem(proto, skip_instance_cache=True, **_options(proto))
    except ImportError:
        package, extra = PACKAGES.get(proto, (None, None))
        how = f"pip install 'mix_pipeline[{extra}]'" if extra else f"pip install {package or 'the fsspec filesystem for ' + proto}"
        raise RecipeError(f"{key}: '{url}' is on {proto}://, whose filesystem package "
                          f"{'(' + package + ') ' if package else ''}is not installed: {how}") from None
    except ValueError as exc:  # unknown protocol
        raise RecipeError(f"{key}: '{url}': {exc}") from None


def filesystem(url: str):
    return require_filesystem(url)


def _with_protocol(url: str, path: str) -> str:
    return f"{protocol(url)}://{path.split('://', 1)[-1]}"


def _unreachable(url: str, exc: Exception) -> RecipeError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RecipeError(f"cannot list {url}: {text[:300]} (check the endpoint and credentials: AWS_ENDPOINT_URL, "
                       f"AWS_ACCESS_KEY_ID, ... or {OPTIONS_ENV})")


def glob_files(pattern: str) -> list[str]:
    """The objects a URL pattern names, sorted; a "folder" expands to every object below it
    (names starting with '.' skipped, as for local folders)."""
    fs = filesystem(pattern)
    try:
        if not any(ch in pattern for ch in "*?[") and fs.isdir(pattern):
            found = fs.find(pattern)
            base = pattern.split("://", 1)[-1].rstrip("/")
            found = [p for p in found if not any(part.startswith(".") for part in p[len(base):].split("/"))]
        else:
            found = [p for p in fs.glob(pattern) if fs.isfile(p)]
    except FileNotFoundError:
        return []
    except Exception as exc:  # botocore's errors are not OSErrors
        raise _unreachable(pattern, exc) from None
    return sorted(_with_protocol(pattern, p) for p in found)


def isdir(url: str) -> bool:
    try:
        return filesystem(url).isdir(url)
    except FileNotFoundError:
        return False


def list_dirs(url: str) -> tuple[list[str], list[str]]:
    """(entries, folders) directly under a URL, names only, sorted; ([], []) when there is none."""
    fs = filesystem(url)
    try:
        listing = fs.ls(url, detail=True)
    except FileNotFoundError:
        return [], []
    except Exception as exc:
        raise _unreachable(url, exc) from None
    names = sorted(posixpath.basename(e["name"].rstrip("/")) for e in listing)
    folders = sorted(posixpath.basename(e["name"].rstrip("/")) for e in listing if e.get("type") == "directory")
    return [n for n in names if not n.startswith(".")], [n for n in folders if not n.startswith(".")]


def glob_base(pattern: str) -> str:
    """The part of a URL pattern before its first wildcard or `{snapshot}` component."""
    scheme, rest = pattern.split("://", 1)
    head = []
    for part in rest.split("/"):
        if any(ch in part for ch in "*?[") or "{snapshot}" in part:
            break
        head.append(part)
    return f"{scheme}://{'/'.join(head)}".rstrip("/")


def relpath(path: str, root: str) -> str:
    """`path` relative to the folder `root` (URLs or local paths)."""
    if is_url(path):
        return posixpath.relpath(path.split("://", 1)[1], root.split("://", 1)[1] if "://" in root else root)
    return os.path.relpath(path, root)


def stat(path: str) -> tuple[int, str]:
    """(size, version) of a file: mtime for a local file, the ETag (or mtime) of an object."""
    if not is_url(path):
        st = os.stat(path)
        return st.st_size, str(st.st_mtime_ns)
    info = filesystem(path).info(path)
    version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return int(info.get("size") or 0), str(version)


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[str]:
    """A local temporary copy of an object (same name suffix, so `.parquet` and `.gz` still read
    as such), removed afterwards. OSError (FileNotFoundError, PermissionError) when it cannot be read."""
    folder = tempfile.mkdtemp(prefix="mix_pipeline_input_")
    target = os.path.join(folder, posixpath.basename(url.split("://", 1)[1]) or "object")
    try:
        try:
            filesystem(url).get_file(url, target)
        except OSError:
            raise
        except Exception as exc:  # botocore errors: an unreadable object, like an unreadable local file
            raise PermissionError(13, f"cannot read {url}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def open_text(url: str):
    """A remote text file (gzip by its `.gz` name, as local eval sets), opened for reading."""
    import fsspec

    proto = protocol(url)
    return fsspec.open(url, "rt", encoding="utf-8", compression="gzip" if url.endswith(".gz") else None,
                       **_options(proto)).open()


# ---- data_root on object storage -------------------------------------------------------------
# Object stores have no rename, so the local "stage, then rename into place" publish does not
# carry over. Instead the pipeline works in a local mirror of data_root (work_dir below: the
# staging folders, the DuckDB catalog and the Dagster runs stay with the driver), and after a run
# publishes the mirror's published tree as one *generation*:
#   1. every file goes to <data_root>/generations/<id>/<path>, where <id> is a digest of the
#      tree's paths and contents. A file already there with the same size (an earlier, killed
#      publish of the same outputs) is not uploaded again;
#   2. then <data_root>/generations/<id>/_MANIFEST.json (every path with its size and sha256);
#   3. last, <data_root>/CURRENT: one small object naming the generation. A single PUT is atomic,
#      so a reader that reads CURRENT, then the generation's _MANIFEST.json, sees a whole tree or
#      the previous one, never half of one.
# A run killed at any point leaves CURRENT on the previous generation; rerunning rebuilds what is
# stale in the mirror (all of it, on a new machine: outputs are deterministic, so it is the same
# tree, the same <id>, and objects already uploaded are kept) and publishes again.
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
    """Publish the mirror's tree to `url` as a generation (see above); returns its id."""
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
