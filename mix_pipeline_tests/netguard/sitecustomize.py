"""Refuse outbound network connections, in the test process and in every Python process it starts.

The test suite's conftest installs the guard in-process and also sets MIX_PIPELINE_NO_NETWORK=1
and puts this folder first on PYTHONPATH. Python imports `sitecustomize` at start-up, so every
Python subprocess the tests spawn (the `dagster` CLI, datatrove's forkserver workers, whose
interpreters start fresh and would not inherit an in-process patch) installs the same guard
before running anything. Connections to loopback addresses and Unix sockets stay allowed: the
worker pools and local services talk over them. Non-Python subprocesses are not covered; the
suite starts none.
"""

from __future__ import annotations

import os
import socket
import sys

ENV_VAR = "MIX_PIPELINE_NO_NETWORK"
FOLDER = os.path.dirname(os.path.abspath(__file__))


class NetworkBlocked(OSError):
    pass


def _allowed(sock: socket.socket, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", object()):
        return True
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1", ""))


def install():
    """Patch socket connects; returns a function that undoes it (a no-op if already installed)."""
    if getattr(socket.socket.connect, "_mix_pipeline_guard", False):
        return lambda: None
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if not _allowed(self, address):
            raise NetworkBlocked(f"network access blocked in tests: {address}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _allowed(self, address):
            raise NetworkBlocked(f"network access blocked in tests: {address}")
        return real_connect_ex(self, address)

    connect._mix_pipeline_guard = True
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex

    def uninstall():
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex

    return uninstall


def _chain_to_next_sitecustomize() -> None:
    """Shadowing an environment's own sitecustomize would silently drop its set-up: run it too."""
    import importlib

    mine = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != FOLDER]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if mine is not None:
            sys.modules["sitecustomize"] = mine


if os.environ.get(ENV_VAR) == "1":
    install()
if __name__ == "sitecustomize":
    _chain_to_next_sitecustomize()
