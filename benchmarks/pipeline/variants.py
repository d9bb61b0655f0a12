"""Running one variant in its own child process (this same script, with --variant) and
measuring it; the child's side writes its own timings as JSON."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from benchmarks.pipeline.datatrove_script import run_datatrove
from benchmarks.pipeline.ours import run_ours
from benchmarks.pipeline.process_tree import Measurement, measure
from benchmarks.pipeline.settings import REPO_ROOT, size_label

# The entry script: the child runs it again with --variant (see child_main).
ENTRY_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench_pipeline.py")


def run_variant(variant: str, args, corpus: Path, run_dir: Path, log_dir: Path) -> tuple[Measurement, dict]:
    """Run one variant in a fresh work folder (reruns must redo all the work) and measure it."""
    work = run_dir / variant
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result_path = work / "result.json"
    log_path = log_dir / f"{variant}-{size_label(args.size_mb)}mb.log"
    cmd = [
        sys.executable,
        ENTRY_SCRIPT,
        "--size-mb",
        str(args.size_mb),
        "--workers",
        str(args.workers),
        "--variant",
        variant,
        "--work",
        str(work),
        "--corpus",
        str(corpus),
        "--result",
        str(result_path),
    ]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    print(f"running {variant} (log: {log_path})", flush=True)
    m = measure(cmd, env, log_path, args.timeout, args.stall_timeout)
    if m.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        status = {
            "timeout": f"was killed at the {args.timeout:g}s timeout",
            "stall": f"was killed: no CPU used for {args.stall_timeout:g}s (a lost datatrove task?)",
        }.get(m.killed_for, f"exited with {m.returncode}")
        raise SystemExit(f"{variant} {status} after {m.wall_s:.1f}s; last lines of {log_path}:\n{tail}")
    print(f"  {variant}: {m.wall_s:.1f}s wall", flush=True)
    return m, json.loads(result_path.read_text())


def child_main(args) -> int:
    """Entry point of a variant's child process: run it and write its own timings as JSON."""
    work, corpus = Path(args.work), Path(args.corpus)
    if args.variant == "ours":
        result = run_ours(work, corpus, args.workers, args.size_mb)
    else:
        result = run_datatrove(work, corpus, args.workers)
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0
