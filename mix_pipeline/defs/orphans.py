"""Runs left behind by a dead process: found and failed, so that nothing waits on them for ever.

A run is *in flight* while its status is NOT_STARTED, QUEUED, STARTING, STARTED or CANCELING, and
both the CLI and the `pipeline` sensor start nothing while anything is (defs/plan.py). A process
killed at the wrong moment (SIGKILL, the OOM killer, a lost node) leaves its run in one of those
states, and only a live process ever moves a run out of them. So both call `fail_orphaned_runs`
before they look at what is in flight:

- Every run knows the process that runs it. The CLI tags its runs with its host, pid and the pid's
  start time from creation (`owner_tags`, through execute_in_process's tags); a run the daemon
  launched tags its run worker the same way when its first step starts (`tag_worker`, from
  defs/env.stage_env), and before that its worker's pid is in the run's first engine event
  ("Started process for run (pid: N)", written by Dagster's gRPC server). A run whose process on
  this host is gone (or is a zombie, or is another process that reused the pid) is failed, in
  whatever state it was.
- A run no process has claimed yet (created by a daemon killed before it queued or launched the
  run) is failed once it has been NOT_STARTED or STARTING longer than `start_timeout()`; a QUEUED
  one likewise, but only while no dagster-daemon is alive to launch it.

Dagster's own run monitoring (`run_monitoring` in dagster.yaml, which `DAGSTER_YAML` enables) does
the time-outs of NOT_STARTED/STARTING and CANCELING runs when a daemon runs, but cannot tell that a
STARTED run's worker died: DefaultRunLauncher.supports_check_run_worker_health is False, so a dead
worker's run stays STARTED until `max_runtime_seconds`, which no sensible value fits. Hence the
pids here.

A failed orphan carries ORPHANED_TAG ("1"): the planner retries a killed run, and holds one whose
step failed for its inputs.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import time
from collections.abc import Callable

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import GRPC_INFO_TAG

# Tags naming the process that runs a run: its host, pid, and the pid's start time (clock ticks
# since boot, from /proc; absent where there is no /proc), which tells a reused pid from the owner.
HOST_TAG, PID_TAG, PID_START_TAG = "mix_pipeline/host", "mix_pipeline/pid", "mix_pipeline/pid_start"
# Set ("1") on a run failed here, before it is reported failed: it was killed, not refused.
ORPHANED_TAG = "mix_pipeline/orphaned"
# Seconds an unclaimed run may stay NOT_STARTED, STARTING (or QUEUED with no daemon) before it is failed.
START_TIMEOUT_ENV = "MIX_PIPELINE_RUN_START_TIMEOUT"
DEFAULT_START_TIMEOUT_S = 180
# A daemon whose newest heartbeat is older than this is taken for dead (it beats every 30 s).
DAEMON_HEARTBEAT_STALE_S = 90

IN_FLIGHT = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]

# The instance settings the CLI writes into a new $DAGSTER_HOME/dagster.yaml (`make ui` has it
# write them too, through runner.dagster_instance): no telemetry; Dagster's run monitoring for runs that never start
# or never finish cancelling (see the module docstring for what it cannot see).
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  poll_interval_seconds: 30
"""

# Written into DAGSTER_HOME once its storage was created whole (see open_instance).
READY_MARKER = ".mix_pipeline_ready"

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_STARTED_PROCESS = "Started process for run (pid: "


def start_timeout() -> float:
    return float(os.environ.get(START_TIMEOUT_ENV) or DEFAULT_START_TIMEOUT_S)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None without /proc
    or without the process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ("?", "")
    return fields[0], fields[19]


def owner_tags(pid: int | None = None) -> dict[str, str]:
    """The tags naming this process (or `pid`) as a run's owner."""
    pid = os.getpid() if pid is None else pid
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    if (stat := _proc_stat(pid)) and stat[1]:
        tags[PID_START_TAG] = stat[1]
    return tags


def alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` on this host runs (not a zombie) and, given its recorded start time,
    is still the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if os.path.isdir("/proc/self"):
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z":
            return False
        if started and stat[1] and stat[1] != started:
            return False  # the pid was reused
    return True


def tag_worker(context) -> None:
    """Tag the run with the process executing it (a run worker the daemon launched), unless it is
    tagged already (a CLI run, or an earlier step)."""
    if PID_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run_id, owner_tags())


def _worker_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The pid of the run worker that Dagster's gRPC server started for `run` on this machine, from
    the run's engine events; None if it never started one (or it is on another machine)."""
    grpc = run.tags.get(GRPC_INFO_TAG)
    if grpc is None:
        return None
    try:
        host = json.loads(grpc).get("host") or "localhost"
    except ValueError:
        return None
    if host not in _LOOPBACK and host != socket.gethostname():
        return None
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event is not None and (event.message or "").startswith(_STARTED_PROCESS):
            pid = event.engine_event_data.metadata.get("pid")
            text = str(pid.value) if pid is not None else ""
            return int(text) if text.isdigit() else None
    return None


def daemon_alive(instance: dg.DagsterInstance, now: float | None = None) -> bool:
    """Whether some dagster-daemon beat its heart on this instance lately."""
    now = time.time() if now is None else now
    beats = instance.get_daemon_heartbeats().values()
    return any(now - beat.timestamp < DAEMON_HEARTBEAT_STALE_S for beat in beats)


def orphan_reason(instance: dg.DagsterInstance, record, now: float, daemon_running: bool | None) -> str | None:
    """Why the in-flight run of `record` can never finish (its message when failed), or None."""
    run = record.dagster_run
    status = run.status
    host = socket.gethostname()
    if PID_TAG in run.tags:
        if run.tags.get(HOST_TAG, host) != host:
            return None  # another machine's process: not ours to judge
        pid = int(run.tags[PID_TAG]) if run.tags[PID_TAG].isdigit() else 0
        if pid and not alive(pid, run.tags.get(PID_START_TAG)):
            return (f"the process running it (pid {pid} on {host}) ended without finishing it (killed?); "
                    f"it was {status.value}. The next run (mix-pipeline run, or the pipeline sensor) redoes its work")
        return None
    if status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING):
        pid = _worker_pid(instance, run)
        if pid is not None:
            if alive(pid):
                return None
            return (f"its run worker (pid {pid}) ended without finishing it (killed?); it was {status.value}. "
                    f"The next run (mix-pipeline run, or the pipeline sensor) redoes its work")
    timeout = start_timeout()
    if status == dg.DagsterRunStatus.NOT_STARTED:
        age = now - record.create_timestamp.timestamp()
        if age > timeout:
            return (f"it was created {age:.0f} s ago and never started: the process that created it (a killed "
                    f"dagster-daemon or mix-pipeline run) is gone. The next run redoes its work")
    elif status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING):
        age = now - record.update_timestamp.timestamp()
        if age > timeout:
            what = "launched" if status == dg.DagsterRunStatus.STARTING else "asked to cancel"
            return (f"it was {what} {age:.0f} s ago and no run worker took it up (the dagster-daemon or code server "
                    f"that launched it was killed?). The next run redoes its work")
    elif status == dg.DagsterRunStatus.QUEUED:
        age = now - record.update_timestamp.timestamp()
        if age > timeout and not (daemon_running if daemon_running is not None else daemon_alive(instance, now)):
            return (f"it was queued {age:.0f} s ago and no dagster-daemon is running to launch it; it was failed so "
                    f"`mix-pipeline run` could go on and redo its work. To have queued runs launched, keep a daemon "
                    f"running (`make ui`, or `dagster-daemon run -w workspace.yaml`)")
    # STARTED with no known process: a run started some other way (`dagster job execute`); left alone.
    return None


def fail_orphaned_runs(instance: dg.DagsterInstance, *, daemon_running: bool | None = None,
                       log: Callable[[str], None] | None = lambda line: print(line, flush=True)) -> list[str]:
    """Fail every in-flight run whose process is gone (see the module docstring), tagging it
    ORPHANED_TAG first; returns their run ids. `daemon_running`: whether a daemon is known to run
    (the sensor passes True); None looks at the daemons' heartbeats."""
    now = time.time()
    failed, ids = [], []
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT)):
        reason = orphan_reason(instance, record, now, daemon_running)
        if reason is None:
            continue
        run = instance.get_run_by_id(record.dagster_run.run_id)
        if run is None or run.status not in IN_FLIGHT:
            continue  # it finished, or someone else failed it, meanwhile
        instance.add_run_tags(run.run_id, {ORPHANED_TAG: "1"})
        instance.report_run_failed(run, message=f"Orphaned run: {reason}.")
        ids.append(run.run_id)
        failed.append(f"{run.run_id[:8]} ({run.job_name}{' ' + run.tags['dagster/partition'] if 'dagster/partition' in run.tags else ''}): {reason}")
    if failed and log is not None:
        log(f"marked {len(failed)} run(s) left by a dead process as failed:\n" + "\n".join(f"  {f}" for f in failed))
    return ids


def open_instance(home: str) -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME `home`, whose SQLite storage a process killed while creating it
    left half made (some tables missing: every later run failed with "Using dynamic partitions
    definitions requires the dynamic partitions table … run `dagster instance migrate`"). Until
    READY_MARKER says the storage was created whole, a home that holds no run's events yet is
    created afresh; one with runs in it (made before this marker existed) is taken as it is."""
    ready = os.path.join(home, READY_MARKER)
    if os.path.exists(ready):
        return dg.DagsterInstance.get()
    shards = [p for p in glob.glob(os.path.join(home, "history", "runs", "*.db")) if os.path.basename(p) != "index.db"]
    if not shards:
        for folder in ("history", "schedules"):
            shutil.rmtree(os.path.join(home, folder), ignore_errors=True)
    instance = dg.DagsterInstance.get()
    instance.get_dynamic_partitions(READY_MARKER)  # touch each storage: runs, event log, schedules
    instance.get_runs(limit=1)
    instance.all_instigator_state()
    with open(ready, "w"):
        pass
    return instance
