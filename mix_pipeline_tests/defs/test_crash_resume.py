"""Crash-safe resume: SIGKILL `mix-pipeline run` at seeded crash points, run it again, and the
published outputs must be byte-identical to a clean run's, with no leftovers and the catalog
still balanced.

The crash points (core.faults) sit where a kill does the most harm: mid-shard while documents
are written, just before and just after a folder is swapped into place, before a catalog
transaction commits, between dedup generations, mid-way through dropping duplicates,
mid-mixture and before its manifest. A clean
run traces every point it passes; a seeded draw picks which occurrences to kill at, spread over
all points. Each scenario is a fresh data root and Dagster home: a run killed at the chosen
point, then the same command again.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import random
import signal
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mix_pipeline.core.provenance.catalog import conservation
from mix_pipeline.core.io.faults import CRASH_AT, CRASH_TRACE
from mix_pipeline.sample.corpus import build_sample_corpus
from mix_pipeline_tests.helpers import published

# Change it to draw other kill points; CI uses the default so a failure is reproducible.
SEED = int(os.environ.get("MIX_PIPELINE_FAULT_SEED", "20261121"))
# Kill points drawn: each crash point at least once, the rest spread over all occurrences.
SCENARIOS = int(os.environ.get("MIX_PIPELINE_FAULT_SCENARIOS", "24"))

RECIPE = """
name: crash
data_root: data
allowed_roots: ["{inputs}"]
executor: {{kind: local, tasks: 2, workers: 1}}
sources:
  web:
    path: "{inputs}/web/{{snapshot}}/*.jsonl.gz"
    filters: [{{language: {{languages: [en]}}}}]
  books:
    path: "{inputs}/books/*.parquet"
    format: parquet
    filters: []
dedup: {{priority: [books, web]}}
mixtures:
  general:
    total: 60000
    weights: {{web: 0.6, books: 0.4}}
    max_epochs: 4
    shard_rows: 5
    seed: 9
    outputs: {{jsonl: true}}
"""


def _variant(text: str) -> str:
    words = text.split(" ")
    return " ".join("altered" if i % 40 == 7 else w for i, w in enumerate(words))


@pytest.fixture(scope="module")
def recipe_template(tmp_path_factory) -> tuple[Path, str]:
    """The sample corpus's web split into two snapshots (exact and near copies planted across
    them, a bad line in each) and its books."""
    inputs = tmp_path_factory.mktemp("crash_inputs")
    build_sample_corpus(inputs / "sample", size_mb=1.5, seed=11)
    web = []
    for f in sorted((inputs / "sample" / "web").glob("*.jsonl.gz")):
        web += [json.loads(line) for line in gzip.decompress(f.read_bytes()).splitlines()]
    half = len(web) // 2
    snapshots = {"2026-01": web[:half], "2026-02": web[half:]}
    snapshots["2026-02"] += [{"id": f"again-{r['id']}", "text": r["text"]} for r in web[:3]]
    snapshots["2026-02"] += [{"id": f"near-{r['id']}", "text": _variant(r["text"])} for r in web[3:6]]
    bad = {"2026-01": '{"id": "broken", "text": ', "2026-02": json.dumps({"id": "no-text"})}
    for snap, records in snapshots.items():
        lines = [json.dumps(r) for r in records] + [bad[snap]]
        folder = inputs / "web" / snap
        folder.mkdir(parents=True)
        for part in range(2):
            data = "".join(line + "\n" for line in lines[part::2]).encode()
            (folder / f"part-{part}.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
    return inputs, RECIPE.replace("{inputs}/books", "{inputs}/sample/books")


# Runs start from a fork server that has imported the pipeline once: a fresh interpreter per
# run would spend most of this test importing Dagster, datatrove and Great Expectations.
_FORKS = multiprocessing.get_context("forkserver")
_FORKS.set_forkserver_preload(["mix_pipeline.cli", "mix_pipeline.defs", "mix_pipeline.core.stages",
                               "great_expectations", "datatrove.pipeline.filters"])


@dataclass
class Outcome:
    exitcode: int
    output: str


def _cli(argv: list[str], env: dict[str, str], log: str) -> None:
    """Child: its own session (a kill takes the whole process group, as a preempted node would)."""
    os.setsid()
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from mix_pipeline.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(work: Path, template: tuple[Path, str], env_extra: dict[str, str] | None = None) -> Outcome:
    """`mix-pipeline run` with its own data root and Dagster home under `work`."""
    inputs, text = template
    recipe = work / "recipe.yaml"
    if not recipe.exists():
        # data_root is relative: every scenario's recipe is the same text (its hash is in the manifest).
        recipe.write_text(text.format(inputs=inputs))
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_AT, CRASH_TRACE)}
    env |= {"DAGSTER_HOME": str(work / "dagster_home"), "MIX_PIPELINE_LOG_LEVEL": "WARNING"} | (env_extra or {})
    log = work / f"run-{len(list(work.glob('run-*.log')))}.log"
    child = _FORKS.Process(target=_cli, args=(["run", "--recipe", str(recipe)], env, str(log)))
    child.start()
    child.join(600)
    if child.exitcode is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.join()
    return Outcome(child.exitcode, log.read_text(errors="replace"))


def leftovers(data_root: Path) -> list[str]:
    """Hidden staging or set-aside entries anywhere in the published tree."""
    found = []
    for root, dirs, files in os.walk(data_root):
        if Path(root) == data_root:
            dirs[:] = [d for d in dirs if d != "_work"]
        found += [os.path.join(root, n) for n in dirs + files if ".tmp-" in n or ".old-" in n]
    return sorted(found)


def catalog_rows(data_root: Path) -> list[dict]:
    with duckdb.connect(str(data_root / "catalog.duckdb"), read_only=True) as con:
        return conservation(con)


def runs_left_started(home: Path) -> list[str]:
    """Runs the Dagster instance still shows as started (the killed run must have been failed)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))]


@pytest.fixture(scope="module")
def clean_run(recipe_template, tmp_path_factory):
    work = tmp_path_factory.mktemp("clean")
    trace = work / "trace.txt"
    run = _run(work, recipe_template, {CRASH_TRACE: str(trace)})
    assert run.exitcode == 0, run.output
    points = trace.read_text().split()
    return {"data": work / "data", "hashes": published(work / "data"), "points": points,
            "conservation": catalog_rows(work / "data")}


def draw_scenarios(points: list[str], n: int, seed: int) -> list[tuple[str, int]]:
    """Every point once (at a random occurrence), then the rest spread by how often points occur."""
    counts = Counter(points)
    rng = random.Random(seed)
    chosen = {(p, rng.randint(1, c)) for p, c in sorted(counts.items())}
    occurrences = [(p, k) for p, c in sorted(counts.items()) for k in range(1, c + 1)]
    rest = [o for o in occurrences if o not in chosen]
    chosen |= set(rng.sample(rest, min(len(rest), n - len(chosen))))
    return sorted(chosen, key=lambda o: (points.index(o[0]), o[1]))


def test_the_clean_run_passes_every_crash_point(clean_run):
    counts = Counter(clean_run["points"])
    assert set(counts) == {"write.document", "publish.staged", "publish.swapped", "catalog.commit",
                           "dedup.generation", "deduplicated.batch", "mixture.rows", "mixture.manifest"}, counts
    assert counts["dedup.generation"] == 3  # one per generation: default (books), 2026-01, 2026-02
    assert clean_run["hashes"]["mixtures/general/manifest.json"]
    assert all(r["balanced"] for r in clean_run["conservation"]), clean_run["conservation"]
    assert leftovers(clean_run["data"]) == []


def kill_and_resume(point: str, nth: int, clean_run, recipe_template, work: Path) -> str | None:
    """Kill a fresh run at the n-th `point`, run again; what went wrong, or None."""
    where = f"{point}#{nth}"
    work.mkdir()
    killed = _run(work, recipe_template, {CRASH_AT: where})
    if killed.exitcode != -signal.SIGKILL:
        return f"{where}: the run was to be killed there but exited {killed.exitcode}: {killed.output[-2000:]}"
    resumed = _run(work, recipe_template)
    if resumed.exitcode != 0:
        return f"{where}: the rerun failed: {resumed.output[-3000:]}"
    data = work / "data"
    hashes = published(data)
    differ = sorted(k for k in set(hashes) | set(clean_run["hashes"]) if hashes.get(k) != clean_run["hashes"].get(k))
    if differ:
        return f"{where}: differs from the clean run: {differ[:8]}"
    if left := leftovers(data):
        return f"{where}: leftovers after the rerun: {left[:5]}"
    if started := runs_left_started(work / "dagster_home"):
        return f"{where}: runs still shown as started after the rerun: {started}"
    if (rows := catalog_rows(data)) != clean_run["conservation"]:
        return f"{where}: the catalog's conservation table differs from the clean run's: {rows}"
    return None


def test_kill_and_resume_matches_a_clean_run(clean_run, recipe_template, tmp_path):
    scenarios = draw_scenarios(clean_run["points"], SCENARIOS, SEED)
    assert len(scenarios) == max(SCENARIOS, len(set(clean_run["points"])))
    assert {p for p, _ in scenarios} == set(clean_run["points"])
    # Each run uses one process; two scenarios at a time keep both cores busy.
    with ThreadPoolExecutor(2) as pool:
        problems = list(pool.map(
            lambda i: kill_and_resume(*scenarios[i], clean_run, recipe_template, tmp_path / f"scenario-{i}"),
            range(len(scenarios)),
        ))
    failed = [p for p in problems if p]
    assert not failed, f"{len(failed)} of {len(scenarios)} kill points (seed {SEED}) went wrong:\n" + "\n".join(failed)
