"""Benchmark: the Ray executor against the local one, and 1 vs 2 Ray workers.

    python benchmarks/bench_ray.py [--size-mb 20] [--corpus data/sample] [--out benchmarks/out/ray]

The demo recipe (recipes/demo.yaml: seven sources, decontamination, near-dup dedup, two mixtures)
over the sample corpus, `mix-pipeline run` in a fresh child process per variant, each with its
own data_root and Dagster instance, `executor.tasks` 2 in all of them (so all three publish the
same bytes, which is checked):

- local: datatrove's LocalPipelineExecutor, 2 worker processes;
- ray x2: a local Ray cluster (one node on 127.0.0.1, 2 CPUs, started here once, before the
  runs: its start-up is not counted) with `workers: 2`;
- ray x1: the same cluster with `workers: 1` (one task at a time).

Prints one line per variant (wall seconds, input MB/s) and a last machine-readable line:
ray_overhead=<ray x2 wall / local wall> ray_speedup_2v1=<ray x1 wall / ray x2 wall> identical=<bool>.
One run each: on a shared 2-core machine expect ±10 % between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def published(root: Path) -> dict[str, str]:
    """sha256 of every published file, with the data root's own path masked in text files."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (rel == Path(".") and d == "_work"))
        for name in files:
            if name.startswith(".") or (rel == Path(".") and name.startswith("catalog.duckdb")):
                continue
            data = (Path(dirpath) / name).read_bytes()
            if name.endswith((".json", ".md", ".yaml", ".txt")):
                data = data.replace(str(root.resolve()).encode(), b"<root>")
            out[str(rel / name)] = hashlib.sha256(data).hexdigest()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=20)
    parser.add_argument("--corpus", default=None, help="an existing sample corpus (default: build one under --out)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "ray"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus).resolve() if args.corpus else out / "sample"
    bin_dir = Path(sys.executable).parent
    if not (corpus / "ground_truth.json").exists():
        subprocess.run([str(bin_dir / "mix-pipeline"), "sample-data", "--out", str(corpus), "--size-mb",
                        str(args.size_mb)], check=True)
    truth = json.loads((corpus / "ground_truth.json").read_text())
    size_mb = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 1e6

    # The demo recipe, pointed at this corpus; experiments are not part of `run`.
    text = (REPO / "recipes" / "demo.yaml").read_text()
    text = text.replace("../data/sample", str(corpus)).replace("allowed_roots: [../data]", f"allowed_roots: [{corpus}]")
    text = re.sub(r"executor: \{[^}]*\}", "executor: {kind: local, tasks: 2, workers: 2}", text)
    text = text.split("\nexperiments:")[0] + "\n"

    # A Ray cluster on this machine, started once (not timed).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # nodes on 127.0.0.1, see the tests
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 200 * 2**20, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    variants = [
        ("local", None),
        ("ray x2", f"{{kind: ray, address: '{cluster.address}', workers: 2, memory_per_task_gb: 0.5}}"),
        ("ray x1", f"{{kind: ray, address: '{cluster.address}', workers: 1, memory_per_task_gb: 0.5}}"),
    ]
    results, trees = {}, {}
    try:
        for name, executor in variants:
            work = out / name.replace(" ", "_")
            if work.exists():
                subprocess.run(["rm", "-rf", str(work)], check=True)
            work.mkdir(parents=True)
            recipe = work / "recipe.yaml"
            # The same text in every variant (data_root relative to the recipe's folder): the same
            # recipe hash in every manifest.
            recipe.write_text(text.replace("data_root: ../data", "data_root: data"))
            env = {**os.environ, "DAGSTER_HOME": str(work / "dagster_home"), "MIX_PIPELINE_LOG_LEVEL": "WARNING"}
            env.pop("MIX_PIPELINE_EXECUTOR", None)
            if executor:
                env["MIX_PIPELINE_EXECUTOR"] = executor
            started = time.monotonic()
            run = subprocess.run([str(bin_dir / "mix-pipeline"), "run", "--recipe", str(recipe)], env=env,
                                 capture_output=True, text=True)
            wall = time.monotonic() - started
            (work / "run.log").write_text(run.stdout + run.stderr)
            if run.returncode:
                sys.exit(f"{name}: mix-pipeline run failed, see {work / 'run.log'}")
            results[name] = wall
            trees[name] = published(work / "data")
            print(f"{name:8s} wall {wall:7.1f} s   {size_mb / wall:6.3f} MB/s   ({len(trees[name])} files published)",
                  flush=True)
    finally:
        cluster.shutdown()
    identical = trees["local"] == trees["ray x2"] == trees["ray x1"]
    summary = {"size_mb": round(size_mb, 1), "documents": truth["counts"]["total_documents"],
               "wall_s": {k: round(v, 2) for k, v in results.items()},
               "ray_overhead": round(results["ray x2"] / results["local"], 3),
               "ray_speedup_2v1": round(results["ray x1"] / results["ray x2"], 3), "identical": identical}
    (out / "bench-ray.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"ray_overhead={summary['ray_overhead']} ray_speedup_2v1={summary['ray_speedup_2v1']} identical={identical}")


if __name__ == "__main__":
    main()
