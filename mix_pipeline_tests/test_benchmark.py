"""The benchmark's own logic: the recipe it writes is valid, dedup scoring counts what it
says, and the last line keeps its machine-readable shape. (Running the benchmark itself
takes minutes, so it is not part of the test suite.)"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.pipeline import ours, process_tree, report, scoring, settings
from mix_pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_pipeline.py"


@pytest.fixture(scope="module")
def bench():
    """The entry script, loaded as `python benchmarks/bench_pipeline.py` would run it."""
    spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_entry_script_keeps_its_command_line(bench):
    args = bench.parse_args(["--size-mb", "5", "--workers", "3", "--scale", "1"])
    assert (args.size_mb, args.workers, args.scale, args.ours_only, args.variant) == (5.0, 3, 1.0, False, None)
    assert callable(bench.main) and callable(bench.child_main)


def test_written_recipe_is_valid_and_mirrors_the_benchmark_settings(tmp_path):
    path = ours.write_recipe(tmp_path / "recipe.yaml", tmp_path / "corpus", tmp_path / "data", workers=2, size_mb=20)
    recipe = load_recipe(path, check_paths=False)
    assert sorted(recipe.sources) == sorted(settings.SOURCES)
    for source, filters in settings.FILTERS.items():
        assert [(f.name, f.params) for f in recipe.sources[source].filters] == filters
    assert recipe.executor.tasks == settings.TASKS and recipe.executor.workers == 2
    mh = recipe.dedup.minhash
    assert (mh.num_perm, mh.bands, mh.ngram, mh.threshold) == (
        settings.NUM_PERM,
        settings.BANDS,
        settings.NGRAM,
        settings.THRESHOLD,
    )
    assert recipe.data_root_path == str(tmp_path / "data")
    assert recipe.mixtures["general"].total == 2_000_000


def test_planted_pairs_skip_sources_not_benchmarked():
    truth = {
        "exact_duplicates": [{"source": "web", "id": "w1", "of_source": "books", "of_id": "b1"}],
        "near_duplicates": [{"source": "code", "id": "c1", "of_source": "code", "of_id": "c2"}],
        "cross_source_duplicates": [
            {"source": "web", "id": "w2", "of_source": "papers", "of_id": "p1", "kind": "near"}
        ],
    }
    assert scoring.planted_pairs(truth, settings.SOURCES) == [
        (("web", "w1"), ("books", "b1")),
        (("web", "w2"), ("papers", "p1")),
    ]


def test_score_dedup():
    a, b, c, d, x, y = (("web", n) for n in "abcdxy")
    pairs = [(a, b), (c, d), (x, y)]
    indexed = {a, b, c, d, x}  # y was filtered out before dedup: the pair is not scored
    survivors = {a, c, d, x}  # b removed (found); c and d both survive (missed)
    removed = {b, ("web", "unrelated")}
    score = scoring.score_dedup(pairs, indexed, survivors, removed)
    assert (score["pairs_scored"], score["pairs_found"]) == (2, 1)
    assert score["recall"] == 0.5 and score["precision"] == 0.5 and score["f1"] == 0.5
    assert math.isnan(scoring.score_dedup(pairs, indexed, survivors, set())["precision"])


def test_planted_near_pairs_are_near_only():
    truth = {
        "exact_duplicates": [{"source": "web", "id": "w1", "of_source": "books", "of_id": "b1"}],
        "near_duplicates": [{"source": "papers", "id": "p1", "of_source": "papers", "of_id": "p2"}],
        "cross_source_duplicates": [
            {"source": "web", "id": "w2", "of_source": "papers", "of_id": "p3", "kind": "near"},
            {"source": "web", "id": "w3", "of_source": "books", "of_id": "b2", "kind": "exact"},
        ],
    }
    assert scoring.planted_near_pairs(truth, settings.SOURCES) == [
        (("papers", "p1"), ("papers", "p2")),
        (("web", "w2"), ("papers", "p3")),
    ]


def test_last_line_shape():
    numbers = {
        "neardup_speedup": 12.34,
        "f1": 0.971,
        "precision": 0.99,
        "overall_ratio": 0.923,
        "rss_ratio": 1.04,
        "peak_rss_mb": 850.4,
        "ours_neardup_cpu_s": 2.04,
        "cpu_ratio": 0.8,
    }
    line = report.last_line(20.0, numbers)
    assert line == (
        "neardup_speedup=12.3 f1=0.97 precision=0.99 overall_ratio=0.92 rss_ratio=1.04 peak_rss_mb=850 "
        "ours_neardup_cpu_s=2.0 cpu_ratio=0.80 size_mb=20"
    )
    assert re.fullmatch(r"\w+=[\d.]+( \w+=([\d.]+|nan))*", line)


def test_filter_agreement_compares_fates_document_by_document(tmp_path):
    """Ours' filtered/dropped partitions against the script's filtered/dropped folders: same
    fate = kept by both, or dropped by the same filter for the same reason."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def shard(path: Path, rows: list[tuple[str, dict]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [i for i, _ in rows], "metadata": [json.dumps(m) for _, m in rows]}), path)

    ours, theirs = tmp_path / "ours" / "data", tmp_path / "datatrove"
    shard(ours / "filtered" / "web" / "default" / "part-00000.parquet", [("a", {}), ("b", {})])
    shard(ours / "dropped" / "web" / "default" / "c4" / "part-00000.parquet",
          [("c", {"filter_reason": "too_few_sentences"}), ("d", {"filter_reason": "curly_bracket"})])
    shard(ours / "dropped" / "web" / "default" / "language" / "part-00000.parquet", [("e", {"filter_reason": "language_fr"})])
    shard(ours / "filtered" / "books" / "default" / "part-00000.parquet", [("a", {})])
    shard(theirs / "filtered" / "web" / "00000.parquet", [("a", {"source": "web"}), ("d", {"source": "web"})])
    shard(theirs / "dropped" / "web" / "c4" / "00000.parquet",
          [("c", {"source": "web", "filter_reason": "too_few_sentences"})])
    shard(theirs / "dropped" / "web" / "gopher_quality" / "00000.parquet",
          [("b", {"source": "web", "filter_reason": "gopher_short_doc"})])
    shard(theirs / "dropped" / "web" / "language" / "00000.parquet", [("e", {"source": "web", "filter_reason": "language_fr"})])
    shard(theirs / "filtered" / "books" / "00000.parquet", [("a", {"source": "books"}), ("z", {"source": "books"})])
    got = scoring.filter_agreement(tmp_path)
    assert (got["documents"], got["same"], got["only_ours"], got["only_datatrove"]) == (6, 4, 0, 1)
    assert got["agreement"] == 4 / 6
    assert got["differences"] == {"kept -> c4/curly_bracket": 1, "gopher_quality/gopher_short_doc -> kept": 1}


def test_session_cpu_counts_reaped_children():
    """A child's CPU is still counted once it has exited and been reaped (cutime)."""
    before = process_tree.session_cpu_s()
    subprocess.run(
        [sys.executable, "-c", "import time; t = time.process_time()\nwhile time.process_time() - t < 1: pass"],
        check=True,
    )
    assert process_tree.session_cpu_s() - before >= 0.9


def test_session_processes_sees_this_process():
    procs = process_tree.session_processes(os.getsid(0))
    assert os.getpid() in procs and procs[os.getpid()] > 0  # it has used some CPU
    assert process_tree.rss_kib(os.getpid()) > 0


def measure_in_subprocess(tmp_path, child_code: str, **limits) -> dict:
    """process_tree.measure() on `python -c child_code`, from a separate driver process, so this test
    process neither becomes a subreaper nor reaps children it does not own."""
    driver = f"""
import dataclasses, json, sys
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
from benchmarks.pipeline import process_tree
assert process_tree.become_subreaper()
m = process_tree.measure([sys.executable, "-c", {child_code!r}], {{}}, Path({str(tmp_path / "log")!r}), **{limits!r})
print(json.dumps(dataclasses.asdict(m)))
"""
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_measure_counts_an_orphaned_grandchild(tmp_path):
    """The child exits at once, leaving a grandchild that burns CPU and holds memory: it must
    still be counted (the benchmark re-parents orphans to itself)."""
    grandchild = (
        "x = bytearray(200 * 2**20); import time; t = time.process_time()\nwhile time.process_time() - t < 2: pass"
    )
    child = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {grandchild!r}])"
    m = measure_in_subprocess(tmp_path, child, timeout_s=60, stall_s=60)
    assert m["returncode"] == 0 and m["killed_for"] is None
    assert m["cpu_s"] >= 1.9  # the grandchild's two seconds of CPU
    assert m["max_proc_rss_mb"] >= 200  # its 200 MiB buffer
    assert m["peak_rss_mb"] >= 200  # seen by the /proc sampler while it ran
    assert m["wall_s"] < 1.5  # wall time ends when the child exits, not the grandchild


def test_measure_kills_a_stalled_tree(tmp_path):
    m = measure_in_subprocess(tmp_path, "import time; time.sleep(60)", timeout_s=60, stall_s=1)
    assert m["killed_for"] == "stall" and m["returncode"] != 0 and m["wall_s"] < 10


def test_bench_scale_smoke_run_keeps_its_last_line_and_scores_planted_near_pairs(tmp_path):
    """bench_scale.py end to end on a tiny corpus with the local executor only (Ray is not
    started): the last line keeps its shape, and near_dup_recall is the share of the corpus's
    planted near pairs that ended in one dedup cluster, recomputed here from the cluster files."""
    import pyarrow.parquet as pq

    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_scale.py"), "--docs-large", "1200",
                          "--local-only", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"docs_small=300 docs_large=1200 driver_rss_small_mb=\d+\.\d driver_rss_large_mb=\d+\.\d "
                        r"driver_rss_ratio=\d+\.\d\d identical=n/a near_dup_recall=\d\.\d{3}", last), last
    report = json.loads((tmp_path / "bench_scale.json").read_text())
    assert report["driver_rss_large_mb"] > 100 and set(report["runs"]) == {"local_small", "local_large"}
    planted = pq.read_table(tmp_path / "scale" / "corpus-1200" / "planted.parquet").to_pylist()
    near = [p for p in planted if p["kind"] == "near"]
    clusters = {}
    for path in (tmp_path / "scale" / "local_large" / "data" / "dedup_index" / "clusters").glob("*/*.parquet"):
        for r in pq.read_table(path).to_pylist():
            clusters[(r["source"], r["id"])] = r if r["fate"] == "duplicate" else dict(r, duplicate_of_source=r["source"],
                                                                                         duplicate_of=r["id"])

    def root(source, doc_id):
        r = clusters[(source, doc_id)]
        return r["duplicate_of_source"], r["duplicate_of"]

    scored = [p for p in near if (p["source"], p["id"]) in clusters and (p["of_source"], p["of_id"]) in clusters]
    found = sum(root(p["source"], p["id"]) == root(p["of_source"], p["of_id"]) for p in scored)
    assert report["near_dup"]["planted"] == len(near) == 36 and 30 <= len(scored) <= 36
    assert (report["near_dup"]["scored"], report["near_dup"]["found"]) == (len(scored), found)
    assert last.endswith(f"near_dup_recall={found / len(scored):.3f}") and found / len(scored) >= 0.95
