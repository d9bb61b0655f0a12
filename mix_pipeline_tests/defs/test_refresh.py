"""Refreshes and backfills: snapshot partitions, the sensor and schedule, incremental dedup,
drift, and concurrent partition runs, all against a temporary Dagster instance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.plan import next_wave
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline.defs.sensors import drift_backfill_requests
from mix_pipeline.names import DEDUP_INDEX, FILTERED, MIXTURE, RAW
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.helpers import snapshot_corpus, write_snapshot

REPO = Path(__file__).resolve().parents[2]

RECIPE = """
name: refresh
data_root: {root}
allowed_roots: [{books}]
executor: {{kind: local, tasks: 2, workers: 1}}
schedule: {{cron: "0 3 * * 1"}}
sources:
  web:
    path: "{web}/{{snapshot}}/*.jsonl.gz"
    filters: [{{language: {{languages: [en]}}}}, gopher_repetition]
  books:
    path: "{books}/*.parquet"
    format: parquet
    filters: [gopher_repetition]
dedup: {{priority: [books, web]}}
mixtures:
  general: {{total: 60000, weights: {{web: 0.7, books: 0.3}}, max_epochs: 4, seed: 3}}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return snapshot_corpus(tmp_path_factory.mktemp("refresh_sample"))


def make_root(tmp: Path, corpus, snapshots: list[str]) -> Path:
    for snap in snapshots:
        write_snapshot(tmp / "web" / snap, corpus["snapshots"][snap])
    (tmp / "recipe.yaml").write_text(RECIPE.format(root=tmp / "data", web=tmp / "web", books=corpus["sample"] / "books"))
    return tmp / "recipe.yaml"


def kept(recipe_path: Path) -> dict[tuple[str, str], set[str]]:
    root = load_recipe(recipe_path).data_root_path
    out = {}
    for f in sorted(Path(root, "deduplicated").glob("*/*/part-*.parquet")):
        out.setdefault((f.parent.parent.name, f.parent.name), set()).update(pq.read_table(f, columns=["id"])["id"].to_pylist())
    return out


@pytest.fixture(scope="module")
def incremental(corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("incremental")
    recipe_path = make_root(tmp, corpus, ["2024-01-01", "2024-01-08"])
    with dg.instance_for_test() as instance:
        run_recipe(str(recipe_path), instance=instance)
        make_root(tmp, corpus, ["2024-01-15"])
        run_recipe(str(recipe_path), instance=instance)
        yield {"path": recipe_path, "instance": instance, "tmp": tmp}


def test_incremental_dedup_equals_a_full_recompute(incremental, corpus, tmp_path):
    full_path = make_root(tmp_path, corpus, ["2024-01-01", "2024-01-08", "2024-01-15"])
    with dg.instance_for_test() as instance:
        run_recipe(str(full_path), instance=instance)
    assert kept(incremental["path"]) == kept(full_path)
    # The second incremental build reused the two earlier snapshots instead of recomputing them.
    record = incremental["instance"].fetch_materializations(dg.AssetKey(DEDUP_INDEX), limit=1).records[0]
    meta = record.asset_materialization.metadata
    assert meta["reused_generations"].value == 3 and meta["generations"].value == 4  # books:default + 3 weeks
    # Every cross-snapshot planted copy is gone; what it copied survives in its older snapshot.
    ids = kept(full_path)
    web_kept = set().union(*(v for (s, _), v in ids.items() if s == "web"))
    planted = [i for snap in corpus["snapshots"].values() for i in (r["id"] for r in snap) if "-exact-" in i or "-near-" in i]
    assert len(planted) == 14 and not web_kept & set(planted)
    assert {r["id"] for r in corpus["snapshots"]["2024-01-01"][:11]} <= ids[("web", "2024-01-01")]


def test_rerun_with_nothing_new_ingests_nothing(incremental, capsys):
    run_recipe(str(incremental["path"]), instance=incremental["instance"])
    assert "ingest: 0 of 4 partition(s) to (re)build" in capsys.readouterr().out


def test_sensor_registers_a_new_snapshot_and_requests_its_run(incremental, corpus):
    recipe_path, instance, tmp = incremental["path"], incremental["instance"], incremental["tmp"]
    defs = build_definitions(load_recipe(recipe_path))
    sensor = defs.resolve_sensor_def("pipeline")
    result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(result, dg.SkipReason)  # everything on disk is registered and built already
    assert "up to date" in result.skip_message
    write_snapshot(tmp / "web" / "2024-01-22", corpus["snapshots"]["2024-01-15"][:20])
    result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert [(r.job_name, r.partition_key) for r in result] == [("ingest", "web:2024-01-22")]
    assert "web:2024-01-22" in instance.get_dynamic_partitions("refresh__source_snapshots")
    shutil.rmtree(tmp / "web" / "2024-01-22")
    instance.delete_dynamic_partition("refresh__source_snapshots", "web:2024-01-22")


def test_schedule_requests_only_partitions_whose_input_changed(incremental, corpus):
    recipe_path, instance, tmp = incremental["path"], incremental["instance"], incremental["tmp"]
    defs = build_definitions(load_recipe(recipe_path))
    schedule = defs.resolve_schedule_def("refresh")
    assert schedule.cron_schedule == "0 3 * * 1"
    context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
    assert isinstance(schedule.evaluate_tick(context).skip_message, str)
    write_snapshot(tmp / "web" / "2024-01-08", corpus["snapshots"]["2024-01-08"] + [{"id": "late", "text": "A late addition."}])
    requests = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def())).run_requests
    assert [r.partition_key for r in requests] == ["web:2024-01-08"]
    make_root(tmp, corpus, ["2024-01-08"])  # restore
    run_recipe(str(recipe_path), instance=instance)


def test_backfill_after_a_threshold_change_replaces_one_source(incremental):
    recipe_path, instance = incremental["path"], incremental["instance"]
    before = {k: len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(RAW), asset_partitions=[k]), limit=100).records)
        for k in ("books:default", "web:2024-01-01")}
    manifest_path = incremental["tmp"] / "data" / "mixtures" / "general" / "manifest.json"
    previous = json.loads(manifest_path.read_text())
    text = recipe_path.read_text()
    recipe_path.write_text(text.replace("filters: [{language: {languages: [en]}}, gopher_repetition]",
                                        "filters: [{language: {languages: [en]}}, gopher_repetition, "
                                        "{gopher_quality: {min_doc_words: 400}}]"))
    manifests = run_recipe(str(recipe_path), instance=instance, backfill_sources=["web"])
    after = {k: len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(RAW), asset_partitions=[k]), limit=100).records)
        for k in before}
    assert after["web:2024-01-01"] == before["web:2024-01-01"] + 1
    assert after["books:default"] == before["books:default"]
    assert manifests["general"]["output_sha256"] != previous["output_sha256"]
    assert manifests["general"]["sources"]["web"]["available_documents"] < previous["sources"]["web"]["available_documents"]
    for key in ("available_documents", "available_units"):  # books' pool is untouched
        assert manifests["general"]["sources"]["books"][key] == previous["sources"]["books"][key]
    recipe_path.write_text(text)


def test_a_shifted_snapshot_raises_drift_and_the_mixture_follows(incremental, corpus):
    recipe_path, instance, tmp = incremental["path"], incremental["instance"], incremental["tmp"]
    recipe = load_recipe(recipe_path)
    latest = instance.fetch_materializations(dg.AssetKey(FILTERED), limit=1).records[0].storage_id
    # The unshifted snapshots did not drift.
    for key in ("web:2024-01-08", "web:2024-01-15"):
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(FILTERED), asset_partitions=[key]), limit=1).records[0]
        assert record.asset_materialization.metadata["drift_exceeded"].value is False
    mixed_before = instance.fetch_materializations(dg.AssetKey(MIXTURE), limit=1).records[0].storage_id
    write_snapshot(tmp / "web" / "2024-01-29", corpus["shifted"])
    run_recipe(str(recipe_path), instance=instance)
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(FILTERED), asset_partitions=["web:2024-01-29"]), limit=1).records[0]
    meta = record.asset_materialization.metadata
    assert meta["drift_exceeded"].value is True and meta["drift_score"].value > 0.1
    assert "2024-01-29" in meta["drift_history"].value
    # The drift check's evaluation is on the partition it ran for, with a numeric observed value.
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey(FILTERED), "drift")])
    entry = next(iter(evaluation.values())).event
    assert entry.dagster_event.event_specific_data.partition == "web:2024-01-29"
    assert entry.dagster_event.event_specific_data.metadata["observed"].value > 0.1
    # The mixture was re-mixed after dedup took the drifted snapshot in (drift.remix defaults to true).
    mixed = instance.fetch_materializations(dg.AssetKey(MIXTURE), limit=1).records[0].storage_id
    deduplicated = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("deduplicated"), asset_partitions=["web:2024-01-29"]), limit=1).records[0]
    assert mixed > deduplicated.storage_id > record.storage_id and mixed > mixed_before
    assert next_wave(instance, recipe) == ([], [])
    # Without drift.backfill nothing more is requested.
    assert drift_backfill_requests(recipe, instance, latest)[0] == []
    # With drift.remix false, the planner holds the mixture after a drifted snapshot (the daemon's
    # path) and an explicit run accepts it; with drift.backfill the other snapshots are re-ingested.
    holding = recipe.model_copy(update={"drift": recipe.drift.model_copy(update={"remix": False, "backfill": True})})
    requests, _ = drift_backfill_requests(holding, instance, latest)
    assert sorted(r.partition_key for r in requests) == ["web:2024-01-01", "web:2024-01-08", "web:2024-01-15"]
    shutil.rmtree(tmp / "web" / "2024-01-29")


RUN_ONE = """
import sys
import dagster as dg
from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.jobs import INGEST_JOB
from mix_pipeline.defs.runner import execute
from mix_pipeline.recipe import load_recipe
execute(build_definitions(load_recipe(sys.argv[1])), INGEST_JOB, dg.DagsterInstance.get(), sys.argv[2], sys.argv[2])
"""


def test_four_partition_runs_in_parallel_leave_a_consistent_catalog(corpus, tmp_path):
    for snap in ("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"):
        write_snapshot(tmp_path / "web" / snap, corpus["snapshots"][snap] if snap in corpus["snapshots"]
               else corpus["snapshots"]["2024-01-15"][:30])
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(root=tmp_path / "data", web=tmp_path / "web",
                                                        books=corpus["sample"] / "books"))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        from mix_pipeline.defs.partitions import register
        register(instance, load_recipe(tmp_path / "recipe.yaml"))
    keys = [f"web:{s}" for s in ("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22")]
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    runs = [subprocess.Popen([sys.executable, "-c", RUN_ONE, str(tmp_path / "recipe.yaml"), k], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in keys]
    outputs = [r.communicate(timeout=300)[0] for r in runs]
    for run, out in zip(runs, outputs):
        assert run.returncode == 0, out[-3000:]
        assert "Could not set lock" not in out
    con = duckdb.connect(str(tmp_path / "data" / "catalog.duckdb"), read_only=True)
    inputs = con.execute("SELECT snapshot, records FROM source_inputs WHERE source = 'web' ORDER BY snapshot").fetchall()
    stats = con.execute("SELECT count(DISTINCT partition) FROM stage_stats WHERE stage = 'filtered'").fetchall()
    fates = con.execute("SELECT snapshot, count(*) FROM document_fates GROUP BY snapshot").fetchall()
    con.close()
    expected = {s: len(corpus["snapshots"].get(s, corpus["snapshots"]["2024-01-15"][:30])) for s in
                ("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22")}
    assert dict(inputs) == expected
    assert stats == [(4,)]
    assert all(n >= 0 for _, n in fates)
