"""Candidate source files of the running interpreter's standard library.

They feed both the English model (their docstrings) and the code source (the files
themselves); listings are sorted so the corpus does not depend on directory order.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_CODE_FILE_BYTES = 200_000
MIN_CODE_FILE_BYTES = 512
SKIPPED_STDLIB_DIRS = ("__pycache__", "idlelib", "site-packages", "test", "tests")


def _stdlib_dir() -> Path:
    return Path(os.path.dirname(os.__file__))


def stdlib_py_files() -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of candidate stdlib sources, sorted."""
    root = _stdlib_dir()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_STDLIB_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath, name)
                out.append((path.relative_to(root).as_posix(), path))
    return out


def read_utf8(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
