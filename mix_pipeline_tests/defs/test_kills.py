"""Kills at any moment never block a later run: SIGKILL `mix-pipeline run` at seeded random delays
(chained: a run killed, its resume killed again, …, then one resume left alone), and kill a live
`dagster-daemon` and a run worker it launched mid-run. Every chain and the daemon must finish by
themselves, leave no run in flight, fail every run a dead process left (tagged as orphaned, so the
planner retries it) and publish exactly the bytes of a clean run.

Unlike test_crash_resume.py (kills at named crash points inside the stages), these kills land
anywhere in time: before the first run starts, between a run's creation and its start, between
runs, in the middle of a step. The corpus, recipe and clean reference run are test_crash_resume's.

Also, without any kill: the exact states a dead process can leave a run in (NOT_STARTED, QUEUED,
STARTING, STARTED, CANCELING; tagged with a dead pid, or with none) are each failed, or left alone
while their process lives.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import GRPC_INFO_TAG

from mix_pipeline.core.io.faults import CRASH_AT, CRASH_TRACE
from mix_pipeline.defs import orphans
from mix_pipeline.defs.orphans import IN_FLIGHT, ORPHANED_TAG, PID_TAG, START_TIMEOUT_ENV, fail_orphaned_runs
from mix_pipeline.defs.plan import next_wave
from mix_pipeline.names import MIXTURE_COMPARISON
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.defs.test_crash_resume import (  # noqa: F401 (recipe_template is a fixture)
    _FORKS,
    _cli,
    catalog_rows,
    leftovers,
    published,
    recipe_template,
)
from mix_pipeline_tests.helpers import daemon, latest_sid

# Change it to draw other delays; CI uses the default so a failure is reproducible.
SEED = int(os.environ.get("MIX_PIPELINE_KILL_SEED", "20261207"))
CHAINS, KILLS_PER_CHAIN = 5, 5  # at least 20 of the 25 drawn kills must land before their run ends
RESUME_TIMEOUT_S = 300  # a resume that waits for ever fails here, with its output
DAEMON_TIMEOUT_S = 420


# ---- the states a dead process leaves a run in ---------------------------------------------------
@dg.op
def _noop():
    pass


@dg.job
def _job():
    _noop()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _run(instance, status, tags=None):
    queued = status == dg.DagsterRunStatus.QUEUED  # only a run with a code origin can be queued
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("here"), "repo"), _job.name)
    run = instance.create_run_for_job(_job, status=dg.DagsterRunStatus.NOT_STARTED if queued else status,
                                      tags=tags or {}, remote_job_origin=origin if queued else None)
    if queued:
        instance.handle_run_event(run.run_id, DagsterEvent(DagsterEventType.RUN_ENQUEUED.value, job_name=run.job_name))
        run = instance.get_run_by_id(run.run_id)
        assert run.status == status
    return run


def test_every_in_flight_state_left_by_a_dead_process_is_failed_and_a_live_ones_are_kept(monkeypatch):
    with dg.instance_for_test() as instance:
        dead, live = _dead_pid(), os.getpid()
        by_dead = {s: _run(instance, s, orphans.owner_tags(dead)) for s in IN_FLIGHT}
        by_live = {s: _run(instance, s, orphans.owner_tags(live)) for s in IN_FLIGHT}
        reused = _run(instance, dg.DagsterRunStatus.STARTED, orphans.owner_tags(live) | {orphans.PID_START_TAG: "1"})
        # A daemon-launched worker known only from its engine event (before its first step tagged it).
        worker = _run(instance, dg.DagsterRunStatus.STARTED, {GRPC_INFO_TAG: '{"host": "localhost", "port": 4000}'})
        instance.report_engine_event(f"Started process for run (pid: {dead}).", worker, EngineEventData.in_process(dead))
        # Unclaimed (no pid anywhere), still young: kept.
        young = {s: _run(instance, s) for s in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED)}
        failed = set(fail_orphaned_runs(instance, log=None))
        assert failed == {r.run_id for r in by_dead.values()} | {reused.run_id, worker.run_id}
        for run_id in failed:
            run = instance.get_run_by_id(run_id)
            assert run.status == dg.DagsterRunStatus.FAILURE and run.tags[ORPHANED_TAG] == "1"
        assert all(instance.get_run_by_id(r.run_id).status == s for s, r in by_live.items())
        message = instance.all_logs(by_dead[dg.DagsterRunStatus.NOT_STARTED].run_id)[-1].message
        assert f"pid {dead}" in message and "ended without finishing it" in message

        # Past the start timeout: an unclaimed NOT_STARTED run is failed; a QUEUED one only while no
        # daemon is alive to launch it.
        monkeypatch.setenv(START_TIMEOUT_ENV, "0")
        assert set(fail_orphaned_runs(instance, daemon_running=True, log=None)) == {young[dg.DagsterRunStatus.NOT_STARTED].run_id}
        queued = young[dg.DagsterRunStatus.QUEUED].run_id
        assert fail_orphaned_runs(instance, log=None) == [queued]
        assert "no dagster-daemon is running" in instance.all_logs(queued)[-1].message
        assert all(instance.get_run_by_id(r.run_id).status == s for s, r in by_live.items())


def test_the_cli_and_the_sensor_go_on_past_a_run_created_by_a_killed_cli(tmp_path):
    """A NOT_STARTED run whose CLI was SIGKILLed made every later run wait for ever."""
    from mix_pipeline.defs.runner import _wait_for_daemon_runs
    from mix_pipeline.defs.sensors import planned_requests

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text("name: t\nsources:\n  web: {path: 'web/*.jsonl'}\n")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "a.jsonl").write_text('{"id": "a", "text": "hello there"}\n')
    recipe = load_recipe(recipe_path)
    with dg.instance_for_test() as instance:
        stuck = _run(instance, dg.DagsterRunStatus.NOT_STARTED, orphans.owner_tags(_dead_pid()))
        started = time.monotonic()
        _wait_for_daemon_runs(instance, poll=0.1)
        assert time.monotonic() - started < 5
        assert instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.FAILURE
        stuck = _run(instance, dg.DagsterRunStatus.STARTED, orphans.owner_tags(_dead_pid()))
        requests = planned_requests(recipe, instance)
        assert isinstance(requests, list) and requests, requests  # not "waiting for what is in flight"
        assert instance.get_run_by_id(stuck.run_id).tags[ORPHANED_TAG] == "1"


# ---- the CLI, killed at random moments ------------------------------------------------------------
def _start(work: Path, template) -> tuple:
    inputs, text = template
    recipe = work / "recipe.yaml"
    if not recipe.exists():
        recipe.write_text(text.format(inputs=inputs))
    env = {k: v for k, v in os.environ.items() if k not in (CRASH_AT, CRASH_TRACE)}
    env |= {"DAGSTER_HOME": str(work / "dagster_home"), "MIX_PIPELINE_LOG_LEVEL": "WARNING"}
    log = work / f"run-{len(list(work.glob('run-*.log')))}.log"
    # `mix-pipeline run` in its own session, forked from a server that imported it once (see
    # test_crash_resume: a fresh interpreter per run would spend most of the test importing).
    child = _FORKS.Process(target=_cli, args=(["run", "--recipe", str(recipe)], env, str(log)))
    child.start()
    return child, log


def _kill(child) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)  # the CLI and its workers, as a preempted node would
    except ProcessLookupError:
        os.kill(child.pid, signal.SIGKILL)  # killed before its first line made it a session leader


def _in_flight(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [f"{r.run_id[:8]} {r.job_name} {r.status.value}" for r in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT))]


def _failed_not_orphaned(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
                if not r.tags.get(ORPHANED_TAG)]


@pytest.fixture(scope="module")
def clean(recipe_template, tmp_path_factory):
    work = tmp_path_factory.mktemp("kills_clean")
    started = time.monotonic()
    child, log = _start(work, recipe_template)
    child.join(RESUME_TIMEOUT_S)
    assert child.exitcode == 0, log.read_text()[-3000:]
    return {"data": work / "data", "hashes": published(work / "data"), "seconds": time.monotonic() - started,
            "conservation": catalog_rows(work / "data")}


def differences(data: Path, clean) -> list[str]:
    hashes = published(data)
    return sorted(k for k in set(hashes) | set(clean["hashes"]) if hashes.get(k) != clean["hashes"].get(k))


def draw_delays(seconds: float, seed: int) -> list[list[float]]:
    """Per chain, how long each successive process runs before it is killed. Even chains start
    with a kill in the first 2 s (before any Dagster run starts, or as the first is created), then
    kill each resume a little further on; odd chains kill a fresh run a moment after a late stage
    (dedup, deduplicated, mixture) began, then its resumes within their first seconds."""
    rng = random.Random(seed)
    chains = []
    for i in range(CHAINS):
        if i % 2 == 0:
            moments = [rng.uniform(0.0, 2.0)] + sorted(rng.uniform(2.0, 0.9 * seconds) for _ in range(KILLS_PER_CHAIN - 1))
            # A resume skips what was published: it reaches the next moment about moment - previous s on.
            chains.append([moments[0]] + [max(0.2, b - a) for a, b in zip(moments, moments[1:])])
        else:
            # Late: a moment after a late stage began, whatever the machine's speed (two chains run
            # at once, so a time taken from the clean run alone would land in ingest).
            late = (rng.choice(LATE_STAGES), rng.uniform(0.0, 1.5))
            chains.append([late] + [rng.uniform(0.2, 3.0) for _ in range(KILLS_PER_CHAIN - 1)])
    return chains


# Stages a late kill waits for (the CLI prints "==> <stage> [...]" as each begins).
LATE_STAGES = ("dedup_index", "deduplicated", "mixture")


def _join(child, log: Path, delay) -> str:
    """Wait `delay` seconds for the child, or with (stage, seconds) until that stage began and then
    those seconds; returns how the kill moment was chosen, for the report."""
    if not isinstance(delay, tuple):
        child.join(delay)
        return f"{delay:.2f}"
    stage, after = delay
    deadline = time.monotonic() + RESUME_TIMEOUT_S
    while child.exitcode is None and time.monotonic() < deadline:
        if log.exists() and any(line.startswith(f"==> {stage}") for line in log.read_text(errors="replace").splitlines()):
            break
        time.sleep(0.05)
    child.join(after)
    return f"{stage}+{after:.2f}"


def kill_chain(delays: list[float], clean, template, work: Path) -> dict:
    """Kill a fresh run after the first delay, its resume after the next, …, then resume untouched."""
    work.mkdir()
    kills, problems = [], []
    for delay in delays:
        child, log = _start(work, template)
        moment = _join(child, log, delay)
        if child.exitcode is None:
            _kill(child)
            child.join()
            kills.append((moment, _stage(log.read_text(errors="replace"))))
        elif child.exitcode != 0:
            problems.append(f"a run meant to be killed at {moment} failed: {log.read_text()[-3000:]}")
            break
        else:
            break  # it finished first: it was the final resume
    started = time.monotonic()
    child, log = _start(work, template)
    child.join(RESUME_TIMEOUT_S)
    output = log.read_text(errors="replace")
    if child.exitcode is None:
        _kill(child)
        child.join()
        problems.append(f"the resume did not finish in {RESUME_TIMEOUT_S} s: {output[-3000:]}")
    elif child.exitcode != 0:
        problems.append(f"the resume failed: {output[-3000:]}")
    resume_s = time.monotonic() - started
    for log in sorted(work.glob("run-*.log")):
        if "waiting for what the daemon started" in log.read_text(errors="replace"):
            problems.append(f"{log.name} waited on runs no process runs")
    if not problems:
        if differ := differences(work / "data", clean):
            problems.append(f"differs from the clean run: {differ[:8]}")
        if left := leftovers(work / "data"):
            problems.append(f"leftovers: {left[:5]}")
        if (rows := catalog_rows(work / "data")) != clean["conservation"]:
            problems.append(f"conservation differs from the clean run's: {rows}")
        if flight := _in_flight(work / "dagster_home"):
            problems.append(f"runs left in flight: {flight}")
        if failed := _failed_not_orphaned(work / "dagster_home"):
            problems.append(f"failed runs not marked orphaned: {failed}")
    return {"kills": kills, "problems": problems, "resume_s": resume_s}


def _stage(output: str) -> str:
    """What the killed run was doing, from its output: the last stage it began, or the start."""
    stages = [line[4:] for line in output.splitlines() if line.startswith("==> ")]
    return stages[-1] if stages else "start-up"


def test_the_cli_killed_at_random_moments_always_resumes_to_the_clean_bytes(clean, recipe_template, tmp_path):
    chains = draw_delays(clean["seconds"], SEED)
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: kill_chain(chains[i], clean, recipe_template, tmp_path / f"chain-{i}"),
                                range(CHAINS)))
    kills = [k for r in results for k in r["kills"]]
    print(f"\nclean run {clean['seconds']:.1f} s; {len(kills)} kills (after s, in stage) in "
          f"{time.monotonic() - started:.0f} s: {kills}; final resumes: {[round(r['resume_s'], 1) for r in results]} s")
    problems = [f"chain {i}: {p}" for i, r in enumerate(results) for p in r["problems"]]
    assert not problems, f"seed {SEED}:\n" + "\n".join(problems)
    assert len(kills) >= 20, kills
    assert sum(stage == "start-up" for _, stage in kills) >= 3, kills  # before any run started
    assert any(stage.startswith(("dedup_index", "deduplicated", "mixture")) for _, stage in kills), kills  # late ones


# ---- the daemon and its run workers, killed mid-run -----------------------------------------------
def _wait_for(what, predicate, timeout: float, home: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.3)
    raise AssertionError(f"waited {timeout} s for {what}; daemon log:\n{(home / 'daemon.log').read_text()[-3000:]}")


def _running_worker(instance, jobs: set[str]) -> dg.DagsterRun | None:
    """A STARTED run of one of `jobs` whose worker tagged its pid (its step is running)."""
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run.job_name in jobs and PID_TAG in run.tags:
            return run
    return None


def test_killing_the_daemon_and_a_run_worker_mid_run_ends_in_the_clean_bytes(clean, recipe_template, tmp_path):
    inputs, text = recipe_template
    work = tmp_path / "daemon"
    work.mkdir()
    recipe_path = work / "recipe.yaml"
    recipe_path.write_text(text.format(inputs=inputs))
    recipe = load_recipe(recipe_path)
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(orphans.DAGSTER_YAML)  # the CLI's settings, run monitoring on
    rng = random.Random(SEED)
    os.environ[START_TIMEOUT_ENV] = "20"  # a run the killed daemon created but never launched
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            started = time.monotonic()
            # 1. The daemon (its code server and run workers with it: one process group) killed
            # while the first wave's runs are working.
            with daemon(home, recipe_path, interval_s=1) as proc:
                _wait_for("an ingest run at work", lambda: _running_worker(instance, {"ingest"}), DAEMON_TIMEOUT_S, home)
                time.sleep(rng.uniform(0.0, 2.0))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                left = [r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT))]
            assert left, "the daemon was to be killed mid-run"
            killed_at = time.monotonic()
            # 2. A new daemon fails what the dead one left, and carries on; then one of its run
            # workers is killed (alone) mid-step.
            with daemon(home, recipe_path, interval_s=1):
                _wait_for("the dead daemon's runs to be failed as orphaned", lambda: all(
                    instance.get_run_by_id(r).status == dg.DagsterRunStatus.FAILURE for r in left), DAEMON_TIMEOUT_S, home)
                recovered_s = time.monotonic() - killed_at
                # A short run may finish before the kill lands: then the next run at work is killed.
                for _ in range(8):
                    run = _wait_for("a later run at work", lambda: _running_worker(
                        instance, {"build_dedup_index", "deduplicate", "mix"}), DAEMON_TIMEOUT_S, home)
                    time.sleep(rng.uniform(0.0, 0.3))
                    try:
                        os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    worker_killed_at = time.monotonic()
                    _wait_for("the killed worker's run to end", lambda: instance.get_run_by_id(
                        run.run_id).status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS),
                        DAEMON_TIMEOUT_S, home)
                    if instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE:
                        break
                assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE, "no run worker was killed mid-run"
                worker_s = time.monotonic() - worker_killed_at
                _wait_for("the pipeline to finish", lambda: latest_sid(instance, MIXTURE_COMPARISON) > 0
                          and not instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)) and next_wave(instance, recipe) == ([], []),
                          DAEMON_TIMEOUT_S, home)
            failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            print(f"\ndaemon killed with {len(left)} run(s) in flight: failed {recovered_s:.1f} s after the kill "
                  f"(daemon restart included); worker of {run.job_name} killed: failed {worker_s:.1f} s later; "
                  f"{len(failed)} failed run(s); whole flow {time.monotonic() - started:.0f} s")
            assert {r.run_id for r in failed} >= set(left) | {run.run_id}
            # Failed as orphaned, or by Dagster's code server, which sees a worker it started die
            # ("terminated by signal 9"): either way killed, no step failed, so the planner retried it.
            other = {r.run_id: [e.message for e in instance.all_logs(r.run_id)][-3:] for r in failed
                     if r.tags.get(ORPHANED_TAG) != "1"}
            print(f"failed, not by fail_orphaned_runs: {other}")
            assert not [r for r in other if instance.all_logs(r, of_type=DagsterEventType.STEP_FAILURE)], other
    finally:
        os.environ.pop(START_TIMEOUT_ENV, None)
    assert differences(work / "data", clean) == []
    assert leftovers(work / "data") == []
    assert catalog_rows(work / "data") == clean["conservation"]
