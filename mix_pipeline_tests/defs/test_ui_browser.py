"""A source×snapshot partition can be launched from the Dagster UI, in a real browser.

`dagster dev -w workspace.yaml` (what `make ui` starts) on a temporary DAGSTER_HOME whose pipeline
the CLI built first, driven with Chromium through Playwright as a person would: open asset
`filtered`, pick partition `web:2024-05-13`, *Materialize…* → *Launch 1 run*; then *Materialize…*,
pick two partitions in the dialog → *Launch backfill*. Each launched run must succeed. With keys
`web|2024-05-13` the dialog offered `web` instead ("web cannot be materialized because upstream
materializations are not available"): it splits a key at `|`, its multi-partition delimiter.

Chromium is Debian's (`apt-get install chromium`), not Playwright's download (see docs/testing.md).
Without it, or without the `playwright` package, the test skips, except under CI (`CI=true`), where
it fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from mix_pipeline.defs.partitions import source_snapshots
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline.names import FILTERED, partition_key
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.conftest import prose_doc, write_jsonl
from mix_pipeline_tests.helpers import REPO

SNAPSHOTS = ("2024-05-06", "2024-05-13", "2024-05-20")
RECIPE = """\
name: ui
executor: {kind: local, tasks: 1, workers: 1}
sources:
  web: {path: "web/{snapshot}/*.jsonl"}
dedup: {minhash: null}
mixtures:
  m: {unit: documents, total: 60, weights: {web: 1.0}, max_epochs: 2}
"""
STEP_TIMEOUT_S = 150  # one launch until its runs finished, on two busy cores


def chromium_or_skip() -> str:
    """The system Chromium's path; skips (fails under CI) when it or Playwright is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the `playwright` package (pip install -e '.[test]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing.append("Chromium (`apt-get install -y --no-install-recommends chromium`, see docs/testing.md)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run it")
        pytest.skip(reason)
    return browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, ok, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ok()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; dagster dev log:\n"
                         f"{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    browser = chromium_or_skip()
    tmp = tmp_path_factory.mktemp("ui")
    for n, snapshot in enumerate(SNAPSHOTS):
        write_jsonl(tmp / "web" / snapshot / "part.jsonl",
                    [{"id": f"{snapshot}-{i}", "text": prose_doc(i + 40 * n, 4)} for i in range(40)])
    recipe = tmp / "recipe.yaml"
    recipe.write_text(RECIPE)
    home = tmp / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # What the UI stores once its first-visit "Join the Dagster community" prompt is skipped: the
    # prompt would otherwise pop up over whatever the test clicks first.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    instance = dg.DagsterInstance.from_config(str(home))
    run_recipe(str(recipe), instance=instance)  # upstream (raw) materialized for every partition

    # The UI's runs alone: the sensors tick once at start (nothing stale then) and not again.
    env = {**os.environ, "DAGSTER_HOME": str(home), "MIX_PIPELINE_RECIPE": str(recipe),
           "MIX_PIPELINE_SENSOR_SECONDS": "3600"}
    port, log = free_port(), tmp / "dagster-dev.log"
    with open(log, "w") as out:
        dev = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
                                "-h", "127.0.0.1", "-p", str(port)],
                               cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert dev.poll() is None, f"dagster dev exited ({dev.returncode}):\n{log.read_text()[-3000:]}"
            try:
                return urllib.request.urlopen(f"{base}/server_info", timeout=5).status == 200
            except OSError:
                return False

        wait_until("dagster dev to serve", up, 180, log)
        yield {"base": base, "browser": browser, "instance": instance, "tmp": tmp, "log": log,
               "partitions": source_snapshots(load_recipe(recipe)).name}
    finally:
        # Ctrl-C to `dagster dev` alone: it stops its webserver, daemon and code servers itself (a
        # SIGTERM to the whole group can leave it hanging); whatever is left then is killed.
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)
        dev.wait()
        instance.dispose()


def finished_runs(instance, keys: list[str], before: set[str], log: Path) -> dict[str, dg.DagsterRun]:
    """Wait until a run started since `before` finished for each of `keys`; exactly one run per key."""
    def done():
        runs = [r for r in instance.get_runs() if r.run_id not in before]
        if {r.tags.get("dagster/partition") for r in runs} >= set(keys) and all(r.is_finished for r in runs):
            return runs
        return None

    runs = wait_until(f"runs of {keys}", done, STEP_TIMEOUT_S, log)
    by_key = {r.tags.get("dagster/partition"): r for r in runs}
    assert len(runs) == len(keys) and sorted(by_key) == sorted(keys), \
        f"expected one run per {keys}, got {[(r.job_name, r.tags.get('dagster/partition')) for r in runs]}"
    return by_key


def test_a_source_snapshot_partition_launches_from_the_ui_as_a_run_and_as_a_backfill(ui):
    from playwright.sync_api import expect, sync_playwright

    instance, log = ui["instance"], ui["log"]
    one = partition_key("web", SNAPSHOTS[1])
    two = [partition_key("web", SNAPSHOTS[0]), partition_key("web", SNAPSHOTS[2])]
    assert sorted(instance.get_dynamic_partitions(ui["partitions"])) == sorted([one, *two])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=ui["browser"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        step = "open filtered's partitions"
        try:
            # One partition: picked in the asset's partition list, then Materialize… (the path).
            page.goto(f"{ui['base']}/assets/{FILTERED}?view=partitions")
            page.get_by_title(one).last.click()
            expect(page).to_have_url(f"{ui['base']}/assets/{FILTERED}?view=partitions&partition={quote(one, safe='')}")
            step = f"launch 1 run of {one}"
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
            expect(dialog.get_by_title(one)).to_be_visible()  # the key itself, not `web`
            expect(dialog.get_by_text("Upstream data missing")).to_have_count(0)
            before = {r.run_id for r in instance.get_runs()}
            dialog.get_by_role("button", name="Launch 1 run").click()
            expect(dialog).to_have_count(0)
            launched = finished_runs(instance, [one], before, log)
            assert launched[one].status == dg.DagsterRunStatus.SUCCESS, launched[one]

            # Two partitions picked in the dialog: a backfill of two runs.
            step = f"launch a backfill of {two}"
            page.goto(f"{ui['base']}/assets/{FILTERED}")
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            dialog.get_by_text("Select a partition or create one").click()
            picker = dialog.locator(".dagster-popover").filter(has=page.get_by_placeholder("Filter partitions"))
            for key in two:
                picker.get_by_role("menuitem").filter(has=page.get_by_title(key)).click()
            expect(dialog.get_by_text("2 partitions", exact=True)).to_be_visible()
            dialog.get_by_text("Launch runs to materialize").click()  # a click outside closes the picker
            expect(picker).to_be_hidden()
            expect(dialog.get_by_text("Upstream data missing")).to_have_count(0)
            before = {r.run_id for r in instance.get_runs()}
            dialog.get_by_role("button", name="Launch backfill").click()
            expect(dialog).to_have_count(0)
            runs = finished_runs(instance, two, before, log)
            assert {k: r.status for k, r in runs.items()} == {k: dg.DagsterRunStatus.SUCCESS for k in two}, runs
            [backfill] = instance.get_backfills()
            assert {r.tags.get("dagster/backfill") for r in runs.values()} == {backfill.backfill_id}
            wait_until("the backfill to complete", lambda: instance.get_backfill(backfill.backfill_id).status
                       == BulkActionStatus.COMPLETED_SUCCESS, STEP_TIMEOUT_S, log)
            launched.update(runs)
        except Exception as err:
            shot = ui["tmp"] / "failure.png"
            page.screenshot(path=str(shot), full_page=True)
            raise AssertionError(f"{step}: {err}\nscreenshot: {shot}\npage text: {page.inner_text('body')[:1500]!r}\n"
                                 f"dagster dev log:\n{log.read_text(errors='replace')[-2000:]}") from err
        finally:
            browser.close()
    # Each partition's latest filtered materialization is the one its UI-launched run recorded.
    for key, run in launched.items():
        record = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(FILTERED), asset_partitions=[key]), limit=1).records[0]
        assert record.run_id == run.run_id, (key, record.run_id, run.run_id)
