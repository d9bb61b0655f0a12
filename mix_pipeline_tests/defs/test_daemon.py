"""The unattended path, live: a real `dagster-daemon` process on a temporary DAGSTER_HOME, loading
the code location the way `make ui` does, with nothing but files landing on disk (and one
backfill submitted through the instance) to set it off. Each flow ends when the planner has
nothing left and nothing is in flight; its mixtures must equal a from-scratch `mix-pipeline run`
over the same inputs in another data root."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.plan import HELD_TAG, next_wave, runs_in_flight
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline.names import FILTERED, MIXTURE, MIXTURE_COMPARISON, RAW
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.helpers import check_statuses, daemon, latest_sid, settle, snapshot_corpus, write_snapshot

FLOW_TIMEOUT_S = 900
# The snapshot the first test drops refused (its refused run stays on the instance).
BAD = "web:2024-01-10"

# Both kinds of mixture: weights, and a temperature over every source (the drift sensor used to
# crash on the latter).
RECIPE = """
name: live
data_root: {root}
allowed_roots: [{inputs}]
executor: {{kind: local, tasks: 1, workers: 1}}
sources:
  web:
    path: "{inputs}/web/{{snapshot}}/*.jsonl.gz"
    filters: [{{language: {{languages: [en]}}}}, gopher_repetition]
  books:
    path: "{inputs}/books/*.parquet"
    format: parquet
    filters: [gopher_repetition]
dedup: {{priority: [books, web]}}
drift: {{remix: true}}
mixtures:
  general: {{total: 16000, weights: {{web: 0.7, books: 0.3}}, max_epochs: 4, seed: 3, tolerance: 0.05}}
  tempered: {{total: 12000, temperature: 2.0, max_epochs: 4, seed: 5, tolerance: 0.05}}
"""


def write_recipe(folder: Path, inputs: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(root=folder / "data", inputs=inputs))
    return path


def from_scratch(tmp: Path, inputs: Path) -> dict[str, str]:
    """output_sha256 of each mixture built by `mix-pipeline run` in a fresh data root and instance
    (once per state of the inputs)."""
    state = tuple(sorted((str(p.relative_to(inputs)), p.stat().st_size, p.stat().st_mtime_ns) for p in inputs.rglob("*")))
    if state in _SCRATCH:
        return _SCRATCH[state]
    shutil.rmtree(tmp, ignore_errors=True)
    path = write_recipe(tmp, inputs)
    with dg.instance_for_test() as instance:
        manifests = run_recipe(str(path), instance=instance)
    _SCRATCH[state] = {name: m["output_sha256"] for name, m in manifests.items()}
    return _SCRATCH[state]


_SCRATCH: dict = {}


def built(recipe_path: Path) -> dict[str, str]:
    root = load_recipe(recipe_path).data_root_path
    return {name: json.loads(Path(root, "mixtures", name, "manifest.json").read_text())["output_sha256"]
            for name in ("general", "tempered")}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Two web snapshots and books, built once by the CLI; then a daemon on the same instance."""
    tmp = tmp_path_factory.mktemp("live")
    corpus = snapshot_corpus(tmp / "sample", size_mb=0.8, seed=7)
    inputs = tmp / "inputs"
    shutil.copytree(corpus["sample"] / "books", inputs / "books")
    for snap in ("2024-01-01", "2024-01-08"):
        write_snapshot(inputs / "web" / snap, corpus["snapshots"][snap])
    recipe_path = write_recipe(tmp / "live", inputs)
    home = tmp / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_recipe(str(recipe_path), instance=instance)
        with daemon(home, recipe_path, interval_s=2):
            yield {"tmp": tmp, "inputs": inputs, "recipe": recipe_path, "home": home, "instance": instance,
                   "corpus": corpus}


def test_a_bad_drop_is_held_and_a_good_one_flows_through_to_the_mixtures(live):
    """A snapshot that fails raw's gate is refused and held (with its reason on its run); a
    good snapshot dropped after it still reaches every mixture unattended, which then equal a
    from-scratch run without the bad snapshot. Once the bad folder is gone its partition is retired."""
    instance, recipe = live["instance"], load_recipe(live["recipe"])
    bad, good = live["inputs"] / "web" / "2024-01-10", live["inputs"] / "web" / "2024-01-15"
    dedup_before = latest_sid(instance, "dedup_index")
    # Half of its lines are not JSON: raw's quarantine-rate gate refuses the snapshot.
    records = live["corpus"]["snapshots"]["2024-01-01"][:20]
    write_snapshot(bad, [r if i % 2 else "{not json" for i, r in enumerate(records)])
    deadline, data = time.monotonic() + FLOW_TIMEOUT_S, None
    while time.monotonic() < deadline:
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(RAW), "raw_quarantine_rate")])
        evaluation = next(iter(latest.values()), None)
        # While the check runs its latest record is the planned evaluation; then the evaluation.
        done = evaluation is not None and evaluation.status.value in ("SUCCEEDED", "FAILED")
        data = evaluation.event.dagster_event.event_specific_data if done else None
        if data is not None and data.partition == "web:2024-01-10" and not runs_in_flight(instance):
            break
        time.sleep(2)
    assert data is not None and data.partition == "web:2024-01-10", (live["home"] / "daemon.log").read_text()[-3000:]
    assert data.passed is False and data.severity == dg.AssetCheckSeverity.ERROR
    assert data.metadata["observed"].value > 0.05  # a number, so the UI can plot it
    time.sleep(8)  # a few more sensor ticks: nothing downstream starts, the bad partition is not retried
    assert latest_sid(instance, FILTERED, "web:2024-01-10") == -1
    assert latest_sid(instance, "dedup_index") == dedup_before
    # A refusal publishes nothing and its run succeeds (defs/checks.gated): no run failed, and
    # filtered's checks, which never ran, read "Skipped" on the partition, not "Execution failed".
    assert instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])) == []
    refused = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "web:2024-01-10"}))
    assert [r.status for r in refused] == [dg.DagsterRunStatus.SUCCESS]
    assert HELD_TAG in refused[0].tags  # the Runs list says it is held
    assert set(check_statuses(instance, FILTERED, "web:2024-01-10").values()) == {"SKIPPED"}

    before = latest_sid(instance, MIXTURE_COMPARISON)
    write_snapshot(good, live["corpus"]["snapshots"]["2024-01-15"])
    seconds = settle(instance, recipe, live["home"], before, FLOW_TIMEOUT_S, may_fail=("web:2024-01-10",))
    print(f"new snapshot after a refused one → rebuilt mixtures and comparison in {seconds:.0f} s")
    steps, held = next_wave(instance, recipe)
    assert steps == [] and [h.step.partition for h in held] == ["web:2024-01-10"]
    assert "raw_quarantine_rate failed" in held[0].reason
    assert len(instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "web:2024-01-10"}))) == 1  # never retried
    for name in ("general", "tempered"):  # every downstream asset rematerialized
        assert latest_sid(instance, MIXTURE, name) > latest_sid(instance, FILTERED, "web:2024-01-15")
    shutil.rmtree(bad)
    assert built(live["recipe"]) == from_scratch(live["tmp"] / "scratch", live["inputs"])
    deadline = time.monotonic() + 60
    while "web:2024-01-10" in instance.get_dynamic_partitions("live__source_snapshots") and time.monotonic() < deadline:
        time.sleep(2)
    assert "web:2024-01-10" not in instance.get_dynamic_partitions("live__source_snapshots")


def test_a_drifted_snapshot_is_remixed_after_dedup_took_it_in(live):
    instance, recipe = live["instance"], load_recipe(live["recipe"])
    before = latest_sid(instance, MIXTURE_COMPARISON)
    write_snapshot(live["inputs"] / "web" / "2024-01-29", live["corpus"]["shifted"])
    settle(instance, recipe, live["home"], before, FLOW_TIMEOUT_S, may_fail=(BAD,))
    record = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(FILTERED), asset_partitions=["web:2024-01-29"]), limit=1).records[0]
    assert record.asset_materialization.metadata["drift_exceeded"].value is True
    assert built(live["recipe"]) == from_scratch(live["tmp"] / "scratch", live["inputs"])


def test_a_backfill_through_the_instance_rebuilds_only_what_changed(live):
    """A UI-style backfill of two web partitions whose inputs did not change: both are ingested
    again, publish the same bytes, and so nothing downstream is rebuilt."""
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    instance, recipe = live["instance"], load_recipe(live["recipe"])
    before = {name: latest_sid(instance, MIXTURE, name) for name in ("general", "tempered")}
    index = latest_sid(instance, "dedup_index")
    web = sorted(k for k in instance.get_dynamic_partitions("live__source_snapshots") if k.startswith("web:"))
    filtered = {k: latest_sid(instance, FILTERED, k) for k in web[:2]}
    # What the UI's "Materialize → backfill" of raw and filtered over a range of web partitions submits.
    backfill_id = make_new_backfill_id()
    instance.add_backfill(PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=build_definitions(recipe).resolve_asset_graph(),
        partition_names=web[:2], asset_selection=[dg.AssetKey(RAW), dg.AssetKey(FILTERED)],
        backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance, all_partitions=False,
        title="web backfill", description=None, run_config=None))
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    while time.monotonic() < deadline and (instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED
                                           or runs_in_flight(instance)):
        time.sleep(2)
    assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
    assert all(latest_sid(instance, FILTERED, k) > sid for k, sid in filtered.items())
    time.sleep(8)  # a few sensor ticks: same bytes, so no index, deduplicated or mixture run starts
    assert not runs_in_flight(instance) and not next_wave(instance, recipe)[0]
    assert latest_sid(instance, "dedup_index") == index
    assert {name: latest_sid(instance, MIXTURE, name) for name in before} == before
    assert built(live["recipe"]) == from_scratch(live["tmp"] / "scratch", live["inputs"])
