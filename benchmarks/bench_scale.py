"""Benchmark: does the driver's memory grow with the corpus?

    python benchmarks/bench_scale.py [--docs-large 2000000] [--docs-small N] [--out benchmarks/out] [--local-only]
    make bench-scale DOCS_LARGE=2000000

Builds two synthetic corpora of short documents (benchmarks/pipeline/short_docs.py: 500-700
bytes each, two sources, planted exact and near copies), the larger `--docs-large` documents and
the smaller a quarter of that, and runs the whole pipeline (`mix-pipeline run`: raw, filters,
dedup, mixture) over each on a local multi-node Ray cluster (a head without CPUs and two worker
nodes of one CPU each, all on 127.0.0.1, started here and stopped at the end). The smaller corpus
also runs with the local executor, to check that both publish the same bytes.

Each run is a fresh `mix-pipeline run` process, the driver: it runs the Dagster steps while the
stage work runs in Ray tasks on the worker nodes (or, locally, datatrove's worker pool). Its peak
memory is its own VmHWM, read by benchmarks/pipeline/driver_probe.py in that process, which also
charges the memory to the stage and the part of it (executor launch, gates, catalog, clustering,
mixture planning) that was running. Ray workers and pool workers are never counted.

Prints per run the wall seconds and driver peak of every stage and part, then what grew from the
small corpus to the large one, and on its last line:

    docs_small=N docs_large=N driver_rss_small_mb=X driver_rss_large_mb=X driver_rss_ratio=X identical=True|False near_dup_recall=X

`driver_rss_*` are the Ray runs' driver peaks, `identical` compares the Ray run of the small
corpus with the local one (every published file, as bench_ray.py does), `near_dup_recall` is the
share of the large corpus's planted near copies (both documents reaching dedup) that ended in one
cluster with their original. With `--local-only` (no Ray: the smoke test) both sizes run locally
and `identical` is `n/a`. The full results go to `<out>/bench_scale.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing it
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bench_ray import published  # noqa: E402
from benchmarks.pipeline.ours import OUR_STAGE_FUNCTIONS  # noqa: E402
from benchmarks.pipeline.report import fmt_num, json_safe  # noqa: E402
from benchmarks.pipeline.short_docs import SOURCE_FORMATS, SOURCE_PATTERNS, build_corpus  # noqa: E402

TASKS = 4  # tasks per stage: two per Ray worker node
WORKERS = 2
RAY_NODES = 2
OBJECT_STORE_BYTES = 150 * 2**20  # per node: the tasks pass file names, not documents
MIX_TOKENS_PER_DOC = 40  # about a third of a document's estimated tokens: the mixture is feasible at any size
MIX_WEIGHTS = {"web": 0.7, "wiki": 0.3}  # the corpus's own shares
FILTERS = {
    "web": [{"language": {"languages": ["en"]}}, "gopher_repetition", "gopher_quality"],
    "wiki": [{"language": {"languages": ["en"]}}, "gopher_repetition"],
}
# Stages as driver_probe labels them (bench_pipeline's), in pipeline order.
STAGES = [label for _, _, label in OUR_STAGE_FUNCTIONS]
LAST_LINE_KEYS = ["docs_small", "docs_large", "driver_rss_small_mb", "driver_rss_large_mb", "driver_rss_ratio",
                  "identical", "near_dup_recall"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs-large", type=int, default=2_000_000)
    parser.add_argument("--docs-small", type=int, default=None, help="default: a quarter of --docs-large")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "out"))
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds one pipeline run may take")
    parser.add_argument("--local-only", action="store_true", help="no Ray: both sizes with the local executor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.docs_small is None:
        args.docs_small = args.docs_large // 4
    return args


def recipe_text(corpus: Path, docs: int) -> str:
    """The benchmark recipe over `corpus`: its data_root is `data` beside the recipe file, so the
    same corpus gives the same text (and recipe hash) wherever it runs."""
    import yaml

    recipe = {
        "name": "bench_scale",
        "data_root": "data",
        "allowed_roots": [str(corpus)],
        "tokenizer": {"kind": "estimate"},
        "executor": {"kind": "local", "tasks": TASKS, "workers": WORKERS},
        "sources": {source: {"path": str(corpus / SOURCE_PATTERNS[source]), "format": fmt, "domain": source,
                             "filters": FILTERS[source]} for source, fmt in SOURCE_FORMATS.items()},
        "dedup": {"exact": True, "minhash": {"threshold": 0.8}, "priority": ["wiki", "web"]},
        "mixtures": {"general": {"unit": "tokens", "total": docs * MIX_TOKENS_PER_DOC, "weights": MIX_WEIGHTS,
                                 "max_epochs": 2, "splits": {"validation": 0.01, "test": 0.01}, "seed": 1}},
    }
    return yaml.safe_dump(recipe, sort_keys=False)


def start_ray_cluster():
    """A head node without CPUs (the tasks go to the workers) and RAY_NODES worker nodes of one
    CPU each, all on 127.0.0.1; not connected from this process."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # nodes on 127.0.0.1 (docs/scaling.md)
    from ray.cluster_utils import Cluster

    common = {"node_ip_address": "127.0.0.1", "object_store_memory": OBJECT_STORE_BYTES}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **common})
    for _ in range(RAY_NODES):
        cluster.add_node(num_cpus=1, **common)
    cluster.wait_for_nodes()
    return cluster


def ray_executor(address: str) -> str:
    return f"{{kind: ray, address: '{address}', workers: {WORKERS}, memory_per_task_gb: 0.5}}"


def run_driver(work: Path, name: str, recipe: str, executor: str | None, timeout_s: float) -> dict:
    """One `mix-pipeline run` of `recipe`, its driver wrapped by driver_probe; the wall seconds and
    what the probe measured. Every run works in the same folder, `<work>/run`, moved to
    `<work>/<name>` afterwards: the outputs name their data root (a mixture's olmo_mix.yaml), so
    only runs at one path can publish the same bytes. Exits naming the log when the run fails."""
    run, final = work / "run", work / name
    for folder in (run, final):
        if folder.exists():
            shutil.rmtree(folder)
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(recipe)
    env = {**os.environ, "DAGSTER_HOME": str(run / "dagster_home"), "MIX_PIPELINE_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("MIX_PIPELINE_EXECUTOR", None)
    env.pop("MIX_PIPELINE_RECIPE", None)  # the Makefile exports the demo's; this run's is on the command line
    if executor:
        env["MIX_PIPELINE_EXECUTOR"] = executor
    cmd = [sys.executable, "-m", "benchmarks.pipeline.driver_probe", str(run / "driver.json"),
           "run", "--recipe", str(run / "recipe.yaml")]
    started = time.monotonic()
    with open(run / "run.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=run, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker pool
            proc.wait()
            code = "killed"
        except BaseException:  # Ctrl-C: the driver is in its own session, so it would live on
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    wall = time.monotonic() - started
    run.rename(final)
    if code != 0:
        sys.exit(f"{name}: mix-pipeline run failed ({code} after {wall:.0f} s), see {final / 'run.log'}")
    return {"wall_s": round(wall, 1), "executor": executor or "local",
            "driver": json.loads((final / "driver.json").read_text())}


def dup_recall(planted: Path, data_root: Path, kind: str) -> dict:
    """Planted pairs of `kind` ('near' or 'exact') whose copy and original both reached dedup,
    and how many of those ended in one cluster: one is the other's duplicate, or both are
    duplicates of the same survivor."""
    import duckdb

    from mix_pipeline import layout
    from mix_pipeline.core.io.documents import sql_file_list

    con = duckdb.connect()
    con.execute(f"CREATE VIEW c AS SELECT * FROM read_parquet({sql_file_list(layout.cluster_files(str(data_root)))})")
    planted_n, scored, found = con.execute(
        """SELECT (SELECT count(*) FROM read_parquet(?) WHERE kind = ?), count(*),
                  count(*) FILTER (WHERE (a.duplicate_of_source = b.source AND a.duplicate_of = b.id)
                                      OR (b.duplicate_of_source = a.source AND b.duplicate_of = a.id)
                                      OR (a.duplicate_of_source = b.duplicate_of_source
                                          AND a.duplicate_of = b.duplicate_of))
           FROM read_parquet(?) p JOIN c a ON a.source = p.source AND a.id = p.id
           JOIN c b ON b.source = p.of_source AND b.id = p.of_id WHERE p.kind = ?""",
        [str(planted), kind, str(planted), kind]).fetchone()
    con.close()
    return {"planted": planted_n, "scored": scored, "found": found, "recall": found / scored if scored else float("nan")}


def unplanted_duplicates(planted: Path, data_root: Path) -> int:
    """Documents dedup marked duplicate that are neither a planted copy nor an original: false
    matches (an unrelated pair of word-salad documents shares no 5-word shingle)."""
    import duckdb

    from mix_pipeline import layout

    con = duckdb.connect()
    try:
        return con.execute(
            """SELECT count(*) FROM read_parquet(?) c ANTI JOIN
                   (SELECT source, id FROM read_parquet(?) UNION ALL SELECT of_source, of_id FROM read_parquet(?)) k
                   USING (source, id)
               WHERE c.fate = 'duplicate'""",
            [layout.cluster_files(str(data_root)), str(planted), str(planted)]).fetchone()[0]
    finally:
        con.close()


def _probe_order(label: str) -> tuple:
    """Jobs first, then each stage followed by its parts, then the parts every stage has."""
    if label.startswith("job:"):
        return (0, label)
    stage = label.split(".")[0]
    return (1, STAGES.index(stage), label) if stage in STAGES else (2, label)


def print_run(name: str, run: dict, docs: int) -> None:
    """The run's wall time and driver peak, then per probe: calls, wall seconds, self and total
    peak of the driver while it ran, and the most one call kept."""
    d = run["driver"]
    executor = "local" if run["executor"] == "local" else f"ray ({RAY_NODES} worker nodes)"
    print(f"\n{name}: {docs:,} documents, executor {executor}, wall {run['wall_s']:.1f} s, driver peak "
          f"{d['peak_rss_mb']:.0f} MiB (RSS at exit {d['rss_at_exit_mb']:.0f}, outside every probe "
          f"{d['outside_probes_peak_mb']:.0f})")
    print(f"  {'probe':<38}{'calls':>6}{'wall_s':>9}{'self_mb':>9}{'total_mb':>10}{'kept_mb':>9}")
    for label in sorted(d["probes"], key=_probe_order):
        p = d["probes"][label]
        print(f"  {label:<38}{p['calls']:>6}{p['wall_s']:>9.1f}{p['self_peak_mb']:>9.0f}{p['total_peak_mb']:>10.0f}"
              f"{p['max_growth_mb']:>9.1f}")
    if d["missing_probes"]:
        print(f"  (probes not found, not measured: {', '.join(d['missing_probes'])})")


def growth(small: dict, large: dict) -> list[dict]:
    """Per probe in both runs: driver total peak and wall seconds at each size, largest peak
    growth first: which stage, or which part of it, makes the driver grow."""
    rows = []
    for label, s in small["driver"]["probes"].items():
        if (g := large["driver"]["probes"].get(label)) is not None:
            rows.append({"probe": label, "small_mb": s["total_peak_mb"], "large_mb": g["total_peak_mb"],
                         "delta_mb": round(g["total_peak_mb"] - s["total_peak_mb"], 1),
                         "small_wall_s": s["wall_s"], "large_wall_s": g["wall_s"]})
    return sorted(rows, key=lambda r: -r["delta_mb"])


def print_growth(rows: list[dict]) -> None:
    print("\ndriver peak while each probe ran (MiB) and its wall seconds, small -> large:")
    print(f"  {'probe':<38}{'small_mb':>9}{'large_mb':>9}{'delta_mb':>9}{'small_s':>9}{'large_s':>9}{'x_time':>7}")
    for r in rows:
        ratio = r["large_wall_s"] / r["small_wall_s"] if r["small_wall_s"] else float("nan")
        print(f"  {r['probe']:<38}{r['small_mb']:>9.0f}{r['large_mb']:>9.0f}{r['delta_mb']:>+9.0f}"
              f"{r['small_wall_s']:>9.1f}{r['large_wall_s']:>9.1f}{fmt_num(ratio, 2):>7}")


def last_line(numbers: dict) -> str:
    """`docs_small=N docs_large=N driver_rss_small_mb=X driver_rss_large_mb=X driver_rss_ratio=X
    identical=True|False near_dup_recall=X` (`identical=n/a` when Ray did not run)."""
    def cell(key: str) -> str:
        value = numbers[key]
        if key == "identical":
            return "n/a" if value is None else str(value)
        if isinstance(value, int):
            return str(value)
        return fmt_num(value, 1 if key.endswith("_mb") else 3 if key == "near_dup_recall" else 2)

    return " ".join(f"{k}={cell(k)}" for k in LAST_LINE_KEYS)


def run_all(args: argparse.Namespace, work: Path, corpora: dict[str, tuple[Path, dict]]) -> dict[str, dict]:
    """The pipeline runs, on a Ray cluster started for them and stopped whatever happens:
    local_small, ray_small, ray_large (local_small and local_large with --local-only)."""
    plan = ([("local_small", "small", False), ("local_large", "large", False)] if args.local_only else
            [("local_small", "small", False), ("ray_small", "small", True), ("ray_large", "large", True)])
    cluster = None if args.local_only else start_ray_cluster()
    runs = {}
    try:
        for name, size, on_ray in plan:
            folder, summary = corpora[size]
            executor = ray_executor(cluster.address) if on_ray else None
            print(f"running {name} ({summary['documents']:,} documents)…", flush=True)
            runs[name] = run_driver(work, name, recipe_text(folder, summary["documents"]), executor, args.timeout)
            print_run(name, runs[name], summary["documents"])
    finally:
        if cluster is not None:
            cluster.shutdown()
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    work = out / "scale"
    corpora = {}
    for size, n in (("small", args.docs_small), ("large", args.docs_large)):
        folder = work / f"corpus-{n}"
        corpora[size] = (folder, build_corpus(folder, n, seed=args.seed, log=lambda m: print(m, flush=True)))
    runs = run_all(args, work, corpora)
    small, large = ("local_small", "local_large") if args.local_only else ("ray_small", "ray_large")
    identical = None if args.local_only else published(work / "local_small" / "data") == published(work / "ray_small" / "data")
    planted, large_root = corpora["large"][0] / "planted.parquet", work / large / "data"
    near, exact = dup_recall(planted, large_root, "near"), dup_recall(planted, large_root, "exact")
    near["unplanted_duplicates"] = unplanted_duplicates(planted, large_root)
    rows = growth(runs[small], runs[large])
    print_growth(rows)
    rss_small, rss_large = runs[small]["driver"]["peak_rss_mb"], runs[large]["driver"]["peak_rss_mb"]
    numbers = {"docs_small": args.docs_small, "docs_large": args.docs_large, "driver_rss_small_mb": rss_small,
               "driver_rss_large_mb": rss_large, "driver_rss_ratio": rss_large / rss_small, "identical": identical,
               "near_dup_recall": near["recall"]}
    print(f"\nlarge corpus: near copies {near['found']:,} of {near['scored']:,} found ({near['planted']:,} planted), "
          f"exact copies {exact['found']:,} of {exact['scored']:,}, "
          f"{near['unplanted_duplicates']:,} unplanted documents marked duplicate")
    report = {**numbers, "corpora": {k: v[1] for k, v in corpora.items()}, "runs": runs, "near_dup": near,
              "exact_dup": exact, "growth": rows, "ray_nodes": 0 if args.local_only else RAY_NODES,
              "tasks": TASKS, "workers": WORKERS}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_scale.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    print(last_line(numbers))


if __name__ == "__main__":
    main()
