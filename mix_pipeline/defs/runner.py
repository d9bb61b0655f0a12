"""Running the planner's waves from a process (the CLI, the lab, `forget`): the attended path.

`run_pipeline` takes the data root's run lock, waits for runs the daemon started, registers new
partitions, then asks the planner (defs/plan.py) for the next wave and executes each of its steps
as the same Dagster job the daemon would launch, in this process, against the persistent instance
(so the runs show in the UI), until nothing is stale.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable

import dagster as dg

from mix_pipeline import layout
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.io import remote_root, storage
from mix_pipeline.core.stages.executors import preflight, recipe_runner
from mix_pipeline.core.lab.report import recommended_spec
from mix_pipeline.core.io.locks import data_root_lock
from mix_pipeline.core.provenance.forget import add_removals, resolve_request, verify_removals
from mix_pipeline.core.stages.base import StageEnv, release_workers
from mix_pipeline.core.stages.mixture import run_mixture
from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.jobs import AFTER_WORKER_JOBS, INGEST_JOB, LAB_JOB, QUALITY_MODEL_JOB
# Every run a process starts carries its host and pid (owner_tags), so a later one can fail the runs
# of a killed process (fail_orphaned_runs).
from mix_pipeline.defs.orphans import DAGSTER_YAML, fail_orphaned_runs, open_instance, owner_tags
from mix_pipeline.defs.partitions import discovered_keys, register, retire
from mix_pipeline.defs.plan import PLANNED_TAG, STEP_TAG, Held, Step, cause, mark_held, next_wave, runs_in_flight
from mix_pipeline.names import MIXTURE, MIXTURE_LAB, REMOVALS_FILE, split_partition_key
from mix_pipeline.recipe import Recipe, RecipeError, load_recipe

DEFAULT_DAGSTER_HOME = ".dagster_home"


class RunFailed(RuntimeError):
    pass


def dagster_instance() -> dg.DagsterInstance:
    """The persistent instance in DAGSTER_HOME, created on first use."""
    home = os.environ.setdefault("DAGSTER_HOME", os.path.abspath(DEFAULT_DAGSTER_HOME))
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        # Offline by default: no usage statistics leave the machine; run monitoring on (defs/orphans.py).
        with open(config + ".tmp", "w") as f:  # renamed into place: a kill never leaves half a file
            f.write(DAGSTER_YAML)
        os.replace(config + ".tmp", config)
    return open_instance(home)  # never a half-made one a kill left (defs/orphans.py)


def execute(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance, partition_key: str | None,
            label: str, tags: dict[str, str] | None = None) -> None:
    """Run one job in this process; print its checks; raise RunFailed with the cause on failure."""
    started = time.monotonic()
    print(f"==> {label}", flush=True)
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        raise_on_error=False,
        tags={**owner_tags(), **(tags or {})},
        run_config={"loggers": {"console": {"config": {"log_level": os.environ.get("MIX_PIPELINE_LOG_LEVEL", "INFO")}}}},
    )
    evaluations = result.get_asset_check_evaluations()
    failed = [e for e in evaluations if not e.passed and e.severity.value == "ERROR"]
    warned = [e for e in evaluations if not e.passed and e.severity.value != "ERROR"]
    for e in failed + warned:
        level = "FAILED" if e in failed else "warning"
        print(f"    check {level}: {e.asset_key.to_user_string()}.{e.asset_check_key.name}: {e.description}", flush=True)
    if not result.success or failed:
        reasons = []
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                reasons.append(cause(event.step_failure_data.error))
        # A refused gate is a successful run that published nothing (defs/checks.gated): one line per stage.
        for stage in dict.fromkeys(e.asset_key.to_user_string() for e in failed):
            names = ", ".join(e.asset_check_key.name for e in failed if e.asset_key.to_user_string() == stage)
            reasons.append(f"{stage}: quality gate failed ({names}), output not published")
        raise RunFailed(f"{label} failed (run {result.run_id}): " + "; ".join(reasons or ["see the run in the UI"]))
    passed = len(evaluations) - len(warned)
    print(f"    done in {time.monotonic() - started:.1f}s, checks: {passed} passed, {len(warned)} warned "
          f"(run {result.run_id[:8]})", flush=True)


def _wait_for_daemon_runs(instance: dg.DagsterInstance, poll: float = 2.0) -> None:
    said = False
    while True:
        fail_orphaned_runs(instance)  # also a run whose process dies while we wait (a killed run worker)
        if not (runs := runs_in_flight(instance)):
            return
        if not said:
            print(f"waiting for what the daemon started to finish: {', '.join(runs[:5])}…", flush=True)
            said = True
        time.sleep(poll)


@functools.cache
def _freeze_imports() -> None:
    """Move what is loaded so far (Dagster's and our modules, the definitions: objects that
    live as long as the process) out of the cyclic GC's scans; each full collection walked them
    all, ~1 CPU s of a 100 MB run. Once per process: objects frozen later, then dropped in a
    cycle, would never be collected. Unfrozen at exit: the interpreter's last collections skip
    frozen objects, so duckdb's bindings (nanobind) would find theirs alive and print ~40
    "nanobind: leaked …" lines on every run's stderr."""
    gc.freeze()
    atexit.register(gc.unfreeze)


def run_pipeline(
    recipe: Recipe,
    instance: dg.DagsterInstance | None = None,
    *,
    mixture: str | None = None,
    force_sources: list[str] | None = None,
    full: bool = False,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> list[str]:
    """Build everything stale, wave by wave, as the daemon would (see defs/plan.py); a step that
    fails is held and the rest goes on. Returns the failures (one line each). Without an
    `instance`, the one in DAGSTER_HOME, opened under the data root's lock (two processes creating
    a new instance's tables at once would collide)."""
    def waiting(pid: int | None) -> None:
        log(f"another mix-pipeline run (pid {pid or '?'}) is working on {recipe.data_root_path}; waiting for it to finish…")

    with data_root_lock(recipe.data_root_path, on_wait=waiting):
        instance, defs = _prepare_instance(instance, recipe, log)
        keys = discovered_keys(recipe)
        force = frozenset(k for k in keys if full or split_partition_key(k)[0] in (force_sources or []))
        done: set[str] = set()
        failed: list[str] = []
        retrain, said = full, False
        while True:
            steps, held = next_wave(instance, recipe, force_ingest=force, retrain=retrain, accept_drift=True,
                                    mixtures=None if mixture is None else [mixture])
            if not said and (not steps or steps[0].job != QUALITY_MODEL_JOB):
                ingest = sum(s.job == INGEST_JOB for s in steps)
                log(f"ingest: {ingest} of {len(keys)} partition(s) to (re)build, the rest are unchanged")
                said = True
            if not steps:
                _report_held(instance, held, log)
                return failed
            _run_wave(defs, instance, recipe, steps, done, failed, log)
            # What was forced is done once its wave ran.
            retrain = retrain and steps[0].job != QUALITY_MODEL_JOB
            force = force if steps[0].job == QUALITY_MODEL_JOB else frozenset()


def _prepare_instance(instance: dg.DagsterInstance | None, recipe: Recipe,
                      log: Callable[[str], None]) -> tuple[dg.DagsterInstance, dg.Definitions]:
    """The instance (DAGSTER_HOME's when none is given) and the recipe's definitions, with orphaned
    runs failed, the daemon's runs finished, new partitions registered and gone ones retired."""
    instance = instance or dagster_instance()
    defs = build_definitions(recipe)
    _freeze_imports()
    fail_orphaned_runs(instance)
    _wait_for_daemon_runs(instance)
    new = register(instance, recipe)
    if new:
        log(f"registered {len(new)} new partition(s): {', '.join(new)}")
    retire(instance, recipe, log=log)
    return instance, defs


def _report_held(instance: dg.DagsterInstance, held: list[Held], log: Callable[[str], None]) -> None:
    """Tag and log the steps left held when no wave remains."""
    mark_held(instance, held)
    for h in held:
        log(f"held: {h.step.label}: {h.reason}")
    if held:
        log("a held step runs again when its input or the recipe changes; to retry it now, materialize it "
            "in the UI or run `mix-pipeline backfill --source SOURCE` (`run --full` for everything)")


def _run_wave(defs: dg.Definitions, instance: dg.DagsterInstance, recipe: Recipe, steps: list[Step], done: set[str],
              failed: list[str], log: Callable[[str], None]) -> None:
    """Run one wave's steps in order; a step that fails is logged and added to `failed` (held from
    now on), and a step that comes back after it ran is an error."""
    if {step.job for step in steps} <= AFTER_WORKER_JOBS:
        # Waves come in pipeline order, so no worker stage follows: the idle workers'
        # forkserver need not hold its memory through the mixtures.
        release_workers()
    for step in steps:
        if step.damaged:
            log(f"{step.label}: {step.why}: rebuilding it")
        if step.run_key in done:  # a step that ran must not come back: held if it failed, else built
            raise RunFailed(f"{step.label}: still stale after it ran; see the run in the UI")
        done.add(step.run_key)
        try:
            execute(defs, step.job, instance, step.partition, step.label,
                    tags={PLANNED_TAG: recipe.name, STEP_TAG: step.run_key})
        except RunFailed as exc:
            # Held from now on (plan.held_reason): the rest proceeds without it.
            log(f"    {exc}")
            failed.append(str(exc))


# What the CLI's commands call.
def _manifests(recipe: Recipe, names: list[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        path = layout.manifest_path(recipe.data_root_path, name)
        if os.path.exists(path):
            with open(path) as f:
                out[name] = json.load(f)
    return out


def run_recipe(
    recipe_path: str,
    mixture: str | None = None,
    instance: dg.DagsterInstance | None = None,
    full: bool = False,
    backfill_sources: list[str] | None = None,
) -> dict[str, dict]:
    """Build everything stale in a recipe (see defs/plan.py); returns the manifest of each mixture.

    Incremental: a source:snapshot partition is ingested only when it is new or its input files or
    recipe entry changed; `backfill_sources` forces every snapshot of those sources, `full` every
    partition; the later stages follow what changed, in the order the daemon would run them.
    """
    recipe = load_recipe(recipe_path)
    if mixture is not None and mixture not in recipe.mixtures:
        raise RecipeError(f"--mixture: recipe has no mixture '{mixture}' (mixtures: {', '.join(recipe.mixtures)})")
    for source in backfill_sources or []:
        if source not in recipe.sources:
            raise RecipeError(f"--source: recipe has no source '{source}' (sources: {', '.join(recipe.sources)})")
    preflight(recipe)  # a missing extra (ray, s3fs) or an unreachable Ray address fails here, in one line
    failed = run_pipeline(recipe, instance, mixture=mixture, force_sources=backfill_sources, full=full)
    if storage.is_url(recipe.resolve(recipe.data_root)):  # publish the local mirror as a generation
        remote_root.publish_tree(recipe.data_root_path, recipe.resolve(recipe.data_root))
    if failed:
        raise RunFailed(f"{len(failed)} step(s) failed and are held until their input changes; everything else "
                        f"was built: " + " | ".join(failed))
    return _manifests(recipe, sorted(recipe.mixtures) if mixture is None else [mixture])


def run_lab_experiment(recipe_path: str, experiment: str, materialize: bool = False,
                       instance: dg.DagsterInstance | None = None) -> dict:
    """Run one mixture-lab experiment as the `mixture_lab` asset (so it shows in the UI); returns
    its results. With `materialize`, build its recommendation as mixture `<experiment>_recommended`
    through the mixture stage (plan, write, gate, publish, record its ledger in the catalog); its
    manifest is then under results["materialized"]. The pipeline must have run first: the lab reads
    the deduplicated shards."""
    recipe = load_recipe(recipe_path)
    if experiment not in recipe.experiments:
        raise RecipeError(f"--experiment: recipe has no experiment '{experiment}' "
                          f"(experiments: {', '.join(recipe.experiments) or 'none'})")
    instance = instance or dagster_instance()
    fail_orphaned_runs(instance)
    execute(build_definitions(recipe), LAB_JOB, instance, experiment, f"{MIXTURE_LAB} [{experiment}]")
    with open(os.path.join(layout.lab_dir(recipe.data_root_path, experiment), "results.json")) as f:
        results = json.load(f)
    if materialize:
        name, spec = recommended_spec(results)
        if name in recipe.mixtures and recipe.mixtures[name] != spec:
            raise RecipeError(f"mixtures.{name}: the recipe already defines it with other settings; "
                              f"rename or remove it, or build it with `mix-pipeline run --mixture {name}`")
        # The block was validated as a MixtureSpec; it is the prior's settings (sources, caps)
        # with new weights, so the recipe's cross-checks hold for it as they did for the prior.
        with_rec = recipe.model_copy(update={"mixtures": {**recipe.mixtures, name: spec}})
        print(f"==> {MIXTURE} [{name}] (the lab's recommendation)", flush=True)
        with data_root_lock(recipe.data_root_path):
            # On the recipe's executor (MIX_PIPELINE_EXECUTOR applied), as the daemon's and UI's runs are.
            results["materialized"] = run_mixture(StageEnv(with_rec, runner=recipe_runner(recipe)), name).stats
    return results


def forget(recipe_path: str, ids: list[tuple[str | None, str]] = (), file_pattern: str | None = None,
           url_pattern: str | None = None, reason: str = "removal request", with_copies: bool = True,
           log: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict:
    """Record the documents a removal request names as removed, rebuild what holds them, and
    verify in the catalog (and by reading every output) that none is left. Returns the proof."""
    recipe = load_recipe(recipe_path)
    path = layout.catalog_path(recipe.data_root_path)
    if not os.path.exists(path):
        raise RecipeError(f"no catalog at {path}: run `mix-pipeline run --recipe {recipe_path}` first")
    with catalog.connect(path) as con:
        entries, unknown = resolve_request(con, recipe.data_root_path, list(ids), file_pattern, url_pattern, with_copies)
    for doc in unknown:
        print(f"warning: no document '{doc}' in the catalog; nothing to remove for it", file=sys.stderr)
    if not entries:
        raise RecipeError("the removal request names no document the catalog knows; check the ids, --source-file or --url")
    copies = sum(e["via"] == "copy" for e in entries)
    log(f"forget: {len(entries)} document(s) in {len({(e['source'], e['snapshot']) for e in entries})} partition(s)"
        + (f", {copies} of them exact or near copies of a named one" if copies else ""))
    added = add_removals(recipe.data_root_path, [e | {"reason": reason} for e in entries])
    log(f"forget: {added} new entr{'y' if added == 1 else 'ies'} in {os.path.join(recipe.data_root_path, REMOVALS_FILE)}")
    run_recipe(recipe_path)
    with catalog.connect(path) as con:
        proof = verify_removals(con, recipe.data_root_path, [e | {"reason": reason} for e in entries])
        proof["conservation"] = [r for r in con.execute("SELECT source, balanced FROM conservation ORDER BY source").fetchall()]
    return proof
