"""Measuring a variant's whole process tree: wall and CPU time, peak memory, stalls."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

KIB_PER_MB = 1024  # memory is reported in MiB (2^20 bytes), like ps and top
PR_SET_CHILD_SUBREAPER = 36


CLK_TCK = os.sysconf("SC_CLK_TCK")


def session_cpu_s(sid: int | None = None) -> float:
    """CPU seconds used so far by the whole process tree of this session: each live process's
    own user + system time plus that of the children it has reaped (cutime/cstime). A pool
    worker reaped by datatrove's forkserver is counted through the forkserver, so the
    difference of two readings is the CPU the whole tree spent in between (10 ms ticks)."""
    sid = os.getsid(0) if sid is None else sid
    ticks = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 14 and int(fields[3]) == sid:
            ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / CLK_TCK


@dataclass
class Measurement:
    returncode: int
    killed_for: str | None  # "timeout" or "stall" when the benchmark had to kill the variant
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # sum of PSS over the process tree, maximum over samples
    max_proc_rss_mb: float  # largest ru_maxrss of any single process in the tree
    lingering: int  # descendants still alive after the grace period (then killed)


def become_subreaper() -> bool:
    """Make orphaned descendants (datatrove's forkserver and resource tracker outlive the child
    briefly) re-parent to this process instead of init, so we reap them and their CPU time
    and memory are counted. Returns False where the kernel refuses (then they are missed)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def session_processes(sid: int) -> dict[int, int]:
    """pid → CPU clock ticks used so far, for every process in session `sid`. The child is
    started in a new session, and datatrove's pool workers, forkserver, manager and resource
    tracker all inherit it."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # exited between listdir and open
            continue
        # Fields after the parenthesised command name, from field 3 (state): session is
        # field 6, utime and stime are fields 14 and 15 (proc(5)).
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 12 and int(fields[3]) == sid:
            procs[int(name)] = int(fields[11]) + int(fields[12])
    return procs


def rss_kib(pid: int) -> int:
    """The process's proportional set size: shared pages (the forkserver's imports inherited by
    every worker) count once across the tree instead of once per process, as VmRSS would."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0  # gone, or a zombie


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


GRACE_S = 30.0  # how long descendants may outlive the child before they are killed


def _reap_exited() -> tuple[list[tuple[int, int, object]], bool]:
    """(pid, wait status, rusage) of every child that has exited, without waiting, and whether
    nothing is left to reap (the whole tree is done)."""
    reaped = []
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped, True
        if pid == 0:
            return reaped, False
        reaped.append((pid, status, usage))


def measure(
    cmd: list[str], env: dict, log_path: Path, timeout_s: float, stall_s: float, poll_s: float = 0.1
) -> Measurement:
    """Run `cmd` as a child and measure its whole process tree.

    CPU and ru_maxrss come from wait4() on every process we reap (the child, whose figures
    include the descendants it waited for, and orphans re-parented to us). Per-process wait4
    rather than getrusage(RUSAGE_CHILDREN): the latter's ru_maxrss is a running maximum over
    every child this process ever had, so the second variant would inherit the first's.

    The tree is killed after `timeout_s`, or once no process in it has used any CPU for
    `stall_s`: a pool worker that dies while unpickling its task (an import error, say) loses
    the task, and datatrove's LocalPipelineExecutor then waits for it forever.
    """
    cpu_s, maxrss_kib, peak_kib, returncode, killed_for = 0.0, 0, 0, None, None
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wall_s = None
    last_ticks, last_progress = -1, started
    while True:
        procs = session_processes(proc.pid)
        peak_kib = max(peak_kib, sum(rss_kib(pid) for pid in procs))
        now = time.monotonic()
        if sum(procs.values()) != last_ticks:
            last_ticks, last_progress = sum(procs.values()), now
        reaped, tree_done = _reap_exited()
        for pid, status, usage in reaped:
            cpu_s += usage.ru_utime + usage.ru_stime
            maxrss_kib = max(maxrss_kib, usage.ru_maxrss)
            if pid == proc.pid:
                wall_s = time.monotonic() - started
                returncode = proc.returncode = os.waitstatus_to_exitcode(status)
        if tree_done:
            break
        if wall_s is None and killed_for is None and (now - started > timeout_s or now - last_progress > stall_s):
            killed_for = "timeout" if now - started > timeout_s else "stall"
            kill_all(list(session_processes(proc.pid)) + [proc.pid])
        elif wall_s is not None and now > started + wall_s + GRACE_S:
            break
        time.sleep(poll_s)
    lingering = list(session_processes(proc.pid))
    kill_all(lingering)
    for _ in lingering:
        try:
            _, _, usage = os.wait4(-1, 0)
        except ChildProcessError:  # the rest were grandchildren, reaped by their own parents
            break
        cpu_s += usage.ru_utime + usage.ru_stime
        maxrss_kib = max(maxrss_kib, usage.ru_maxrss)
    return Measurement(
        returncode=returncode,
        killed_for=killed_for,
        wall_s=wall_s if wall_s is not None else time.monotonic() - started,
        cpu_s=cpu_s,
        peak_rss_mb=peak_kib / KIB_PER_MB,
        max_proc_rss_mb=maxrss_kib / KIB_PER_MB,
        lingering=len(lingering),
    )
