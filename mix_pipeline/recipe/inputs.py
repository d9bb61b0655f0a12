"""Input resolution: the files a recipe's declarations name, as they are now.

The schema (schema.py) says what the user declared; these functions look at the file system or
object storage (core/io/storage.py) to list a source's snapshots and files, the decontamination
eval sets, and the folder that a text-directory source's ids are relative to. Every listing is
sorted, so every run sees the same files in the same order.

`recipe` is a loaded `Recipe` (schema.py). It is not imported here: the quality model, which
the schema builds on, lists its sources' files through this module.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from pathlib import Path

from mix_pipeline.errors import RecipeError
from mix_pipeline.names import DEFAULT_SNAPSHOT, SNAPSHOT_PLACEHOLDER, snapshot_name_problem


def glob_base(pattern: str) -> str:
    """The part of a path pattern before its first wildcard or `{snapshot}` component."""
    head = []
    for part in Path(pattern).parts:
        if any(ch in part for ch in "*?[") or SNAPSHOT_PLACEHOLDER in part:
            break
        head.append(part)
    return os.path.join(*head) if head else "."


def source_pattern(recipe, source: str, snapshot: str, as_glob: bool = False) -> str:
    """The resolved path pattern of one snapshot of a source (`{snapshot}` filled in)."""
    path = recipe.sources[source].path
    if SNAPSHOT_PLACEHOLDER in path:
        if snapshot == DEFAULT_SNAPSHOT:
            raise ValueError(f"source '{source}' has dated snapshots; name one")
        # A folder named `2024[05]` is a name, not a character class.
        path = path.replace(SNAPSHOT_PLACEHOLDER, glob.escape(snapshot) if as_glob else snapshot)
    elif snapshot != DEFAULT_SNAPSHOT:
        raise ValueError(f"source '{source}' has no snapshots (its path has no {SNAPSHOT_PLACEHOLDER})")
    return recipe.resolve(path)


def _snapshot_folders(recipe, source: str) -> tuple[str, list[str], list[str]] | None:
    """(parent, entries, folder names) where the `{snapshot}` placeholder stands; None when the
    parent folder does not exist. A file beside the snapshot folders is refused."""
    parent = recipe.resolve(recipe.sources[source].path.split(SNAPSHOT_PLACEHOLDER)[0] or ".")
    if "://" in parent:  # object storage (core/io/storage.py)
        from mix_pipeline.core.io import storage

        entries, names = storage.list_dirs(parent)
    elif not os.path.isdir(parent):
        return None
    else:
        entries = sorted(e for e in os.listdir(parent) if not e.startswith("."))
        names = [d for d in entries if os.path.isdir(os.path.join(parent, d))]
    tail = recipe.sources[source].path.replace("\\", "/").split(SNAPSHOT_PLACEHOLDER + "/", 1)[-1]
    if "/" not in tail:
        # An input file beside the snapshot folders belongs to none of them: never read, so refused.
        stray = [e for e in entries if e not in names and fnmatch.fnmatchcase(e, tail)]
        if stray:
            raise RecipeError(f"sources.{source}.path: {os.path.join(parent, stray[0])} sits beside the snapshot "
                              f"folders and belongs to none, so it would never be read; move it into a snapshot folder")
    return parent, entries, names


def snapshots(recipe, source: str) -> list[str]:
    """The snapshots on disk, sorted: each sub-folder where the placeholder stands that holds
    at least one input file; `default` for a source without snapshots."""
    if not recipe.has_snapshots(source):
        return [DEFAULT_SNAPSHOT]
    found = _snapshot_folders(recipe, source)
    if found is None:
        return []
    parent, _entries, names = found
    out = []
    for d in names:
        problem = snapshot_name_problem(d)
        if problem is None and d == DEFAULT_SNAPSHOT:
            problem = f"'{DEFAULT_SNAPSHOT}' is the name of the single snapshot of sources without snapshots"
        if problem is None:
            if source_files(recipe, source, d):
                out.append(d)
        elif files_matching(recipe.resolve(recipe.sources[source].path.replace(SNAPSHOT_PLACEHOLDER,
                                                                               glob.escape(d)))):
            # Never skipped silently: a snapshot with input files that cannot be a partition.
            raise RecipeError(f"sources.{source}.path: snapshot folder {os.path.join(parent, d)!r} cannot be "
                              f"a partition: {problem}; rename the folder")
    return out


def source_files(recipe, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> list[str]:
    """The input files of one snapshot of a source, sorted; directories expand to every file below them."""
    def unlistable(err: OSError) -> None:
        # os.walk would skip the folder silently, and every file under it would go uncounted.
        raise RecipeError(f"source '{source}': cannot list folder {err.filename}: {err.strerror}")

    return files_matching(source_pattern(recipe, source, snapshot, as_glob=True), unlistable)


def files_matching(pattern: str, onerror=None) -> list[str]:
    """The files a pattern names, sorted, each file once: paths that reach the same file through
    symlinks (a `**` through a link to a parent folder) or hard links count once, under the
    path without symlinks where there is one, else the shortest."""
    if "://" in pattern:  # object storage (core/io/storage.py)
        from mix_pipeline.core.io import storage

        return storage.glob_files(pattern)
    files: set[str] = set()
    for match in glob.glob(pattern, recursive=True):
        if os.path.isdir(match):
            for root, dirs, names in os.walk(match, onerror=onerror):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.update(os.path.join(root, n) for n in names if not n.startswith("."))
        else:
            files.add(match)

    def preference(path: str) -> tuple:
        return (os.path.realpath(path) != os.path.abspath(path), len(path), path)

    seen: set[tuple[int, int]] = set()
    out = []
    for path in sorted(files, key=preference):
        try:
            st = os.stat(os.path.realpath(path))  # realpath: a path looping through links may be too deep to stat
        except OSError:  # a dangling link: listed, so validation or the reader reports it
            out.append(path)
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(path)
    return sorted(out)


def eval_set_files(recipe) -> list[str]:
    """The decontamination eval sets, sorted by path (the order drops are attributed in)."""
    if recipe.decontamination is None:
        return []
    files: set[str] = set()
    for pattern in recipe.decontamination.eval_sets:
        if "://" in recipe.resolve(pattern):  # object storage (core/io/storage.py)
            from mix_pipeline.core.io import storage

            files.update(storage.glob_files(recipe.resolve(pattern)))
            continue
        files.update(f for f in glob.glob(recipe.resolve(pattern), recursive=True) if os.path.isfile(f))
    return sorted(files)


def source_root(recipe, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> str:
    """The folder that ids of text-directory documents are relative to."""
    pattern = source_pattern(recipe, source, snapshot)
    if "://" in pattern:  # object storage (core/io/storage.py)
        from mix_pipeline.core.io import storage

        if not any(ch in pattern for ch in "*?[") and storage.isdir(pattern):
            return pattern.rstrip("/")
        root = storage.glob_base(pattern)
        return root if root != pattern else root.rsplit("/", 1)[0]
    if os.path.isdir(pattern):
        return pattern
    root = glob_base(pattern)
    return root if os.path.isdir(root) else os.path.dirname(root)
