"""What a new snapshot costs: adding a 10% drop to an already-built corpus vs a full rebuild.

    python benchmarks/bench_incremental.py --size-mb 20 [--snapshots 10] [--workers 2]

The sample corpus's web documents are dealt into N weekly snapshot folders (equal shares).
Full rebuild: every snapshot on a fresh data root. Incremental: the first N-1 snapshots are
built (not timed), then the last one is added and `run` is timed again; only the new partition
is ingested and deduplicated, the dedup index reuses the earlier snapshots, and the mixture is
rebuilt. Both paths use the real Dagster jobs (`run_recipe`) with a throw-away instance. The
last line is machine-readable.

    python benchmarks/bench_incremental.py --size-mb 20 --daemon

also times the unattended path: with the first N-1 snapshots built, a live `dagster-daemon`
(sensors at their default 30 s) watches the recipe; the last snapshot folder is dropped in and
the clock runs until the mixtures and the comparison are rebuilt and nothing is stale.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from mix_pipeline.sample.corpus import build_sample_corpus  # noqa: E402
from mix_pipeline.defs.runner import run_recipe  # noqa: E402
from mix_pipeline.names import MIXTURE_COMPARISON  # noqa: E402

RECIPE = """
name: bench_incremental
data_root: {root}
executor: {{kind: local, tasks: 2, workers: {workers}}}
sources:
  web:
    path: "{web}/{{snapshot}}/*.jsonl.gz"
    filters: [{{language: {{languages: [en]}}}}, gopher_repetition, gopher_quality, c4, fineweb, pii]
dedup: {{minhash: {{threshold: 0.8}}}}
mixtures:
  general: {{unit: documents, total: {total}, weights: {{web: 1.0}}, max_epochs: 2, seed: 1}}
"""


def snapshot_names(n: int) -> list[str]:
    return [f"2024-{1 + i // 4:02d}-{1 + 7 * (i % 4):02d}" for i in range(n)]


def deal_web(corpus: Path, out: Path, names: list[str]) -> int:
    """Deal the corpus's web records round-robin into one folder per snapshot; returns the count."""
    records = []
    for f in sorted((corpus / "web").glob("*.jsonl.gz")):
        records += gzip.decompress(f.read_bytes()).splitlines()
    for i, name in enumerate(names):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.jsonl.gz").write_bytes(gzip.compress(b"\n".join(records[i :: len(names)]) + b"\n", mtime=0))
    return len(records)


def write_recipe(work: Path, workers: int, total: int) -> Path:
    path = work / "recipe.yaml"
    path.write_text(RECIPE.format(root=work / "data", web=work / "web", workers=workers, total=total))
    return path


def timed_run(recipe: Path, instance) -> float:
    started = time.monotonic()
    run_recipe(str(recipe), instance=instance)
    return time.monotonic() - started


def unattended(corpus: Path, work: Path, names: list[str], workers: int, total: int) -> float:
    """Seconds from dropping the last snapshot folder to rebuilt mixtures under a live daemon."""
    from mix_pipeline.recipe import load_recipe
    from mix_pipeline_tests.helpers import daemon, latest_sid, settle

    live = work / "daemon"
    deal_web(corpus, live / "web", names)
    shutil.rmtree(live / "web" / names[-1])
    home = live / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    recipe = write_recipe(live, workers, total)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_recipe(str(recipe), instance=instance)
        with daemon(home, recipe, interval_s=30):
            time.sleep(40)  # the daemon loads the code location and has ticked once
            before = latest_sid(instance, MIXTURE_COMPARISON)
            shutil.copytree(work / "new" / names[-1], live / "web" / names[-1])
            return settle(instance, load_recipe(recipe), home, before, timeout=1800)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--daemon", action="store_true", help="also time a dropped snapshot under a live dagster-daemon")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    corpus = out / f"corpus-{args.size_mb:g}mb"
    if not (corpus / "ground_truth.json").exists():
        build_sample_corpus(corpus, size_mb=args.size_mb, seed=0, log=print)
    names = snapshot_names(args.snapshots)
    work = out / f"incremental-{args.size_mb:g}mb"
    shutil.rmtree(work, ignore_errors=True)
    full, inc = work / "full", work / "incremental"
    n = deal_web(corpus, full / "web", names)
    deal_web(corpus, inc / "web", names)
    shutil.rmtree(inc / "web" / names[-1])
    total = n // 4  # documents in the mixture: feasible at any snapshot count
    os.environ.setdefault("MIX_PIPELINE_LOG_LEVEL", "WARNING")

    with dg.instance_for_test() as instance:
        full_s = timed_run(write_recipe(full, args.workers, total), instance)
    with dg.instance_for_test() as instance:
        recipe = write_recipe(inc, args.workers, total)
        base_s = timed_run(recipe, instance)
        deal_web(corpus, work / "new", names)
        shutil.copytree(work / "new" / names[-1], inc / "web" / names[-1])
        add_s = timed_run(recipe, instance)
    daemon_s = unattended(corpus, work, names, args.workers, total) if args.daemon else None
    ratio = add_s / full_s
    print(f"\nweb: {n} documents in {args.snapshots} snapshots ({args.size_mb:g} MB corpus), workers={args.workers}")
    print(f"  full rebuild of {args.snapshots} snapshots   {full_s:8.1f} s")
    print(f"  first {args.snapshots - 1} snapshots (setup)     {base_s:8.1f} s")
    print(f"  adding snapshot {args.snapshots} ({100 / args.snapshots:.0f}%)       {add_s:8.1f} s")
    if daemon_s is not None:
        print(f"  dropped snapshot → mixtures, daemon {daemon_s:8.1f} s (sensor interval 30 s)")
    result = {"size_mb": args.size_mb, "snapshots": args.snapshots, "full_s": round(full_s, 2),
              "add_snapshot_s": round(add_s, 2), "ratio": round(ratio, 3),
              "daemon_drop_to_mixture_s": None if daemon_s is None else round(daemon_s, 1)}
    (out / f"incremental-{args.size_mb:g}mb.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"bench_incremental size_mb={args.size_mb:g} snapshots={args.snapshots} full_s={full_s:.1f} "
          f"add_snapshot_s={add_s:.1f} ratio={ratio:.3f}"
          + ("" if daemon_s is None else f" daemon_drop_to_mixture_s={daemon_s:.1f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
