"""One pipeline run per data root at a time.

Two `mix-pipeline run` on one data root would stage, publish and clean up the same partition
folders and register the same partitions at once. The first takes an exclusive `flock` on
`data_root/_work/run.lock` (the kernel drops it when the process ends, however it ends); a second
says who holds it and waits. The daemon's planner sensor checks the same lock and starts nothing
while a CLI run holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator

LOCK_PARTS = ("_work", "run.lock")


def lock_path(data_root: str) -> str:
    return os.path.join(data_root, *LOCK_PARTS)


def _holder_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def data_root_lock(data_root: str, on_wait: Callable[[int | None], None] = lambda pid: None) -> Iterator[None]:
    """Hold the data root's run lock; if another process holds it, call `on_wait(its pid)` and wait."""
    path = lock_path(data_root)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait(_holder_pid(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_holder(data_root: str) -> int | None:
    """The pid of the process holding the data root's run lock (0 if unknown), or None if free."""
    path = lock_path(data_root)
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
