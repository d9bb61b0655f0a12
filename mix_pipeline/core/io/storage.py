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

A data_root on object storage is a local mirror published as generations: core/io/remote_root.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator

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
