"""Named crash points, so tests can kill the pipeline at exact, repeatable places.

Production code calls `crash_point("publish.swapped")` where a kill would be most harmful
(between two renames, mid-shard, before a catalog commit). With no environment variable set
this is one dictionary lookup. Two variables drive it:

- `MIX_PIPELINE_CRASH_TRACE=<file>`: append each point reached to `<file>`, one name a line,
  so a test can list every place a clean run passes through.
- `MIX_PIPELINE_CRASH_AT=<point>#<n>`: the n-th time (1-based) this process reaches `<point>`,
  SIGKILL its whole process group, as a preempted node or the OOM killer would: no cleanup,
  no `finally`, no flush.

Counts are per process, so fault-injection runs use one worker process (datatrove then runs
its tasks in the calling process) to make the n-th hit the same in every run.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "MIX_PIPELINE_CRASH_AT"
CRASH_TRACE = "MIX_PIPELINE_CRASH_TRACE"

_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    if CRASH_AT not in os.environ and CRASH_TRACE not in os.environ:
        return
    if trace := os.environ.get(CRASH_TRACE):
        with open(trace, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    target = os.environ.get(CRASH_AT)
    if not target:
        return
    point, _, nth = target.rpartition("#")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth):
        os.killpg(os.getpgid(0), signal.SIGKILL)
