"""The network guard reaches the test process, Python subprocesses and datatrove's worker pool."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

# TEST-NET-3 (RFC 5737): never routed, so without the guard a connect would time out, not pass.
OUTSIDE = ("203.0.113.7", 80)
TRY_CONNECT = f"import socket; socket.create_connection({OUTSIDE!r}, timeout=3)"


def test_in_process_connections_are_refused_but_loopback_works():
    with pytest.raises(OSError, match="network access blocked in tests"):
        socket.create_connection(OUTSIDE, timeout=3)
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=3):
            pass


def test_python_subprocesses_are_guarded_too():
    done = subprocess.run([sys.executable, "-c", TRY_CONNECT], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "network access blocked in tests" in done.stderr, done.stderr


class TryConnect(PipelineStep):
    name = "try to reach the outside"

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        try:
            socket.create_connection(OUTSIDE, timeout=3)
            result = "connected"
        except OSError as exc:
            result = str(exc)
        with open(f"{self.out_dir}/{rank}.txt", "w") as f:
            f.write(result)
        yield from ()


def test_datatrove_worker_processes_are_guarded(tmp_path):
    # Two workers: datatrove starts them from a forkserver, fresh interpreters.
    LocalPipelineExecutor([TryConnect(str(tmp_path))], tasks=2, workers=2, logging_dir=str(tmp_path / "logs")).run()
    results = [(tmp_path / f"{rank}.txt").read_text() for rank in range(2)]
    assert all("network access blocked in tests" in r for r in results), results
