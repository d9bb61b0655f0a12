"""Run `mix-pipeline` in this process and measure its own peak memory, per stage.

    python -m benchmarks.pipeline.driver_probe OUT.json run --recipe R

The CLI process is the driver: it runs every Dagster step in-process (defs/runner.py), while
the stage work it hands out runs in worker processes (datatrove's pool, or Ray tasks on other
nodes), which this never counts. Peak memory is the kernel's VmHWM of this process alone
(/proc/self/status), so no sampling interval can miss a spike.

To tell which part of a run holds the memory, chosen functions are wrapped (PROBES: the Dagster
jobs, the stage functions, and inside them the executor launches, quality gates, catalog writes,
dedup clustering and mixture planning and writing). At every entry and exit of a wrapped
function the peak since the previous one is read and charged to the innermost open function
(its "self" peak) and to every open one (its "total" peak), then the peak is reset (writing 5 to
/proc/self/clear_refs). The run's peak is the largest of these readings. At exit OUT.json gets
the peak, the RSS at exit and per probe: calls, wall seconds, self and total peak (MiB), and the
largest RSS growth from entry to exit of one call (memory a call kept).
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import sys
import time

from benchmarks.pipeline.ours import OUR_STAGE_FUNCTIONS

KIB_PER_MB = 1024

# (module, function or regular expression over its function names, probe label; a regular
# expression's functions are labelled <label>.<function>). The stage functions are bench_pipeline's.
PROBES = [
    ("mix_pipeline.defs.runner", "execute", "job"),
    ("mix_pipeline.defs.plan", "next_wave", "planner"),
    *OUR_STAGE_FUNCTIONS,
    ("mix_pipeline.core.stages.raw", "quarantine_duplicate_ids", "raw.duplicate_ids"),
    ("mix_pipeline.core.dedup.generation", "dedup_generation", "dedup_index.clustering"),
    ("mix_pipeline.core.stages.deduplicated", "write_deduplicated", "deduplicated.write"),
    ("mix_pipeline.core.stages.mixture", "mixture_inputs", "mixture.inputs"),
    ("mix_pipeline.core.stages.mixture", "plan_in_task", "mixture.plan"),
    ("mix_pipeline.core.stages.mixture", "write_staged", "mixture.write"),
    ("mix_pipeline.core.gates.checks", r"\w+_checks|drift_check", "gates"),
    ("mix_pipeline.core.provenance.catalog", r"record_\w+|(raw|filter|dropped)_counts|filtered_report|dropped_samples",
     "catalog"),
    ("mix_pipeline.core.provenance.fates", r"replace_\w+|sync_view|migrate_table", "catalog.fates"),
]
# Labels followed by one of the call's positional arguments: the job's name for runner.execute.
LABEL_ARG = {"job": 1}
# The functions that make the runners (datatrove or Ray launches): what they return is probed.
RUNNER_FACTORIES = [("mix_pipeline.core.stages.base", "local_runner"), ("mix_pipeline.core.stages.executors", "runner_for")]
EXECUTOR_LABEL = "executor"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) if match else 0


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux 4.0+); False where refused, and then
    every probe's peak is the run's peak so far (the run's own peak stays right)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Probe:
    """Per label: calls, wall seconds, self and total peak, largest growth of one call (KiB)."""

    def __init__(self):
        self.stack: list[str] = []
        self.stats: dict[str, dict] = {}
        self.peak_kib = 0
        self.missing: list[str] = []
        self.resets_work = True
        # Imports, planning between jobs, the ledger print: the time no probe is open.
        self.outside = {"self_peak_kib": 0}

    def charge(self) -> int:
        """Charge the peak since the last reading to the open labels, reset it; returns RSS."""
        hwm = _status_kib("VmHWM")
        self.peak_kib = max(self.peak_kib, hwm)
        for label in self.stack:
            s = self.stats[label]
            s["total_peak_kib"] = max(s["total_peak_kib"], hwm)
        top = self.stats[self.stack[-1]] if self.stack else self.outside
        top["self_peak_kib"] = max(top["self_peak_kib"], hwm)
        self.resets_work = _reset_peak() and self.resets_work
        return _status_kib("VmRSS")

    def wrap(self, label: str, fn):
        """`fn`, probed under `label` (for a label in LABEL_ARG, followed by that argument)."""
        @functools.wraps(fn)
        def probed(*args, **kwargs):
            name = f"{label}:{args[LABEL_ARG[label]]}" if label in LABEL_ARG and len(args) > LABEL_ARG[label] else label
            s = self.stats.setdefault(name, {"calls": 0, "wall_s": 0.0, "self_peak_kib": 0, "total_peak_kib": 0,
                                              "max_growth_kib": 0})
            rss0 = self.charge()
            self.stack.append(name)
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                rss1 = self.charge()
                self.stack.pop()
                s["calls"] += 1
                s["wall_s"] += time.monotonic() - started
                s["max_growth_kib"] = max(s["max_growth_kib"], rss1 - rss0)

        probed.probed = True
        return probed

    def install(self) -> None:
        """Wrap every PROBES function in its module and in every loaded mix_pipeline module that
        imported it by name; a probe whose function no longer exists is listed as missing."""
        importlib.import_module("mix_pipeline.defs.runner")  # loads the asset and stage modules

        for module_name, pattern, label in PROBES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                self.missing.append(f"{module_name}:{pattern}")
                continue
            if re.fullmatch(r"\w+", pattern):  # one function, wherever it was defined
                names = [pattern] if callable(getattr(module, pattern, None)) else []
            else:  # a family: the module's own functions whose names match
                names = [n for n, v in vars(module).items()
                         if re.fullmatch(pattern, n) and callable(v) and getattr(v, "__module__", None) == module_name]
            if not names:
                self.missing.append(f"{module_name}:{pattern}")
            for name in names:
                # A pattern that is not one plain name (gates, catalog) is probed as <label>.<function>.
                member = label if re.fullmatch(r"\w+", pattern) else f"{label}.{name}"
                self._replace(getattr(module, name), self.wrap(member, getattr(module, name)))
        for module_name, name in RUNNER_FACTORIES:
            factory = getattr(importlib.import_module(module_name), name, None)
            if factory is None:
                self.missing.append(f"{module_name}:{name}")
            else:
                self._replace(factory, self._probed_factory(factory))

    def _probed_factory(self, factory):
        """A runner factory whose runners are probed (once: runner_for may call local_runner)."""
        @functools.wraps(factory)
        def probed_factory(*args, **kwargs):
            runner = factory(*args, **kwargs)
            return runner if getattr(runner, "probed", False) else self.wrap(EXECUTOR_LABEL, runner)

        return probed_factory

    @staticmethod
    def _replace(original, replacement) -> None:
        for name, module in list(sys.modules.items()):
            if name.startswith("mix_pipeline") and module is not None:
                for attr, value in list(vars(module).items()):
                    if value is original:
                        setattr(module, attr, replacement)

    def report(self) -> dict:
        self.charge()
        mb = {k: round(v / KIB_PER_MB, 1) for k, v in (("peak_rss_mb", self.peak_kib), ("rss_at_exit_mb", _status_kib("VmRSS")))}
        stages = {label: {"calls": s["calls"], "wall_s": round(s["wall_s"], 2),
                          "self_peak_mb": round(s["self_peak_kib"] / KIB_PER_MB, 1),
                          "total_peak_mb": round(s["total_peak_kib"] / KIB_PER_MB, 1),
                          "max_growth_mb": round(s["max_growth_kib"] / KIB_PER_MB, 1)}
                  for label, s in self.stats.items()}
        mb["outside_probes_peak_mb"] = round(self.outside["self_peak_kib"] / KIB_PER_MB, 1)
        return {**mb, "probes": stages, "missing_probes": self.missing, "peak_resets_work": self.resets_work}


def main(argv: list[str]) -> int:
    out_path, cli_args = argv[0], argv[1:]
    from mix_pipeline import cli

    probe = Probe()
    probe.install()
    code = 1
    try:
        code = cli.main(cli_args)
    finally:
        with open(out_path, "w") as f:
            json.dump({"returncode": code, **probe.report()}, f, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
