"""Time and memory of building a mixture's selection over millions of documents.

    python benchmarks/bench_selection.py --documents 10_000_000 --sources 10

Writes deduplicated-style shards (id, n_tokens; the planner never reads text) and a cluster
table in which 2% of each source are copies of another document, then, in a fresh process,
reads the pools and plans a token mixture over them (weights, one source upsampled past one
epoch, validation/test splits keyed on cluster survivors). Reports wall time per phase and
peak RSS of that process, against its RSS after imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SHARD_ROWS = 500_000
DUPLICATE_SHARE = 0.02


def _source_names(n: int) -> list[str]:
    return [f"source_{i:02d}" for i in range(n)]


def generate(folder: str, documents: int, n_sources: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    per_source = documents // n_sources
    layout, clusters = {}, []
    for source in _source_names(n_sources):
        files = []
        for start in range(0, per_source, SHARD_ROWS):
            n = min(SHARD_ROWS, per_source - start)
            ids = pc.binary_join_element_wise(pa.scalar(f"{source}-"), pc.cast(pa.array(np.arange(start, start + n)), pa.string()), "")
            # Log-normal lengths around ~700 tokens, like web pages.
            tokens = np.maximum(1, rng.lognormal(6.2, 0.9, n)).astype(np.int64)
            path = os.path.join(folder, source, f"part-{len(files):05d}.parquet")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pq.write_table(pa.table({"id": ids, "n_tokens": tokens}), path)
            files.append(path)
        copies = rng.choice(per_source, int(per_source * DUPLICATE_SHARE), replace=False)
        survivors = rng.choice(per_source, len(copies))
        clusters.append(pa.table({
            "source": pa.array([source] * len(copies)),
            "id": pc.binary_join_element_wise(pa.scalar(f"{source}-"), pc.cast(pa.array(copies), pa.string()), ""),
            "fate": pa.array(["kept"] * len(copies)),
            "duplicate_of_source": pa.array([source] * len(copies)),
            "duplicate_of": pc.binary_join_element_wise(pa.scalar(f"{source}-"), pc.cast(pa.array(survivors), pa.string()), ""),
        }))
        layout[source] = files
    clusters_path = os.path.join(folder, "clusters.parquet")
    pq.write_table(pa.concat_tables(clusters), clusters_path)
    return {"files": layout, "clusters": clusters_path}


def _status_mb(key: str) -> int:
    """VmRSS / VmHWM of this process (getrusage's maxrss would include the parent's, kept across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024)
    raise KeyError(key)


def measure(layout_path: str) -> dict:
    """Runs in a fresh process: read pools, plan, report."""
    from mix_pipeline.core.mixing.pools import load_pool, read_survivors
    from mix_pipeline.core.mixing.selection import plan_mixture
    from mix_pipeline.recipe import MixtureSpec

    baseline_rss = _status_mb("VmRSS")
    with open(layout_path) as f:
        layout = json.load(f)
    sources = sorted(layout["files"])
    started = time.perf_counter()
    pools = {s: load_pool(s, layout["files"][s], "tokens", read_survivors([layout["clusters"]], s)) for s in sources}
    loaded = time.perf_counter()
    available = sum(p.available for p in pools.values())
    weights = {s: float(i + 1) for i, s in enumerate(sources)}
    spec = MixtureSpec(
        unit="tokens", total=int(available * 0.6), weights=weights, max_epochs=1.0,
        # At 60% of all tokens the heaviest source (weight 10/55) needs ~1.1 epochs: let it repeat.
        sources={sources[-1]: {"max_epochs": 3.0}},
        splits={"validation": 0.005, "test": 0.005}, seed=1234,
    )
    plan = plan_mixture("bench", spec, pools)
    planned = time.perf_counter()
    errors = [abs(r.achieved_weight - r.target_weight) / r.target_weight for r in plan.ledger]
    return {
        "documents": sum(len(p) for p in pools.values()),
        "sources": len(sources),
        "selected_rows": plan.selection.num_rows,
        "load_s": round(loaded - started, 2),
        "plan_s": round(planned - loaded, 2),
        "total_s": round(planned - started, 2),
        "max_relative_weight_error": round(max(errors), 6),
        "max_epochs_used": max(r.epochs for r in plan.ledger),
        "rss_after_imports_mb": baseline_rss,
        "peak_rss_mb": _status_mb("VmHWM"),
        "selection_mb": round(plan.selection.nbytes / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000_000)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--workdir", help="keep the generated shards here (default: a temp folder)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or tmp
        started = time.perf_counter()
        layout = generate(folder, args.documents, args.sources)
        print(f"generated {args.documents:,} documents in {args.sources} sources in {time.perf_counter() - started:.1f}s",
              flush=True)
        layout_path = os.path.join(folder, "layout.json")
        with open(layout_path, "w") as f:
            json.dump(layout, f)
        out = subprocess.run([sys.executable, __file__, "--measure", layout_path], check=True,
                             capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
