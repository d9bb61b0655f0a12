"""`mix-pipeline`: validate a recipe, build sample data, run a recipe, report on a run, score its filters, run a mixture lab.

`run` executes the same Dagster jobs the UI shows, against the Dagster instance in
DAGSTER_HOME (default ./.dagster_home, the folder `make ui` uses), so CLI runs appear in the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from mix_pipeline.recipe import RecipeError, load_recipe

DEFAULT_DAGSTER_HOME = ".dagster_home"


def _cmd_validate(args) -> int:
    recipe = load_recipe(args.recipe)
    files = sum(len(recipe.source_files(s)) for s in recipe.sources)
    print(
        f"ok: recipe '{recipe.name}': {len(recipe.sources)} source(s) over {files} file(s), "
        f"{len(recipe.mixtures)} mixture(s); data_root {recipe.data_root_path}"
    )
    return 0


def _cmd_sample_data(args) -> int:
    from mix_pipeline.core.sample_data import build_sample_corpus

    truth = build_sample_corpus(args.out, size_mb=args.size_mb, seed=args.seed, log=print)
    print(f"sample corpus: {truth['counts']['total_documents']} documents in {os.path.abspath(args.out)}")
    return 0


def dagster_instance():
    """The persistent instance in DAGSTER_HOME, created on first use."""
    import dagster as dg

    home = os.environ.setdefault("DAGSTER_HOME", os.path.abspath(DEFAULT_DAGSTER_HOME))
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        # Offline by default: no usage statistics leave the machine.
        with open(config, "w") as f:
            f.write("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.get()


class RunFailed(RuntimeError):
    pass


# Tags on every run the CLI starts, so a later CLI can tell its own runs that were killed.
HOST_TAG, PID_TAG = "mix_pipeline/host", "mix_pipeline/pid"


def _run_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_runs(instance) -> list[str]:
    """Mark failed the runs a killed CLI on this host left as started: without it, a run killed
    mid-way (SIGKILL, OOM, a lost node) would show as running in the UI for ever."""
    import dagster as dg

    host = socket.gethostname()
    orphaned = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={HOST_TAG: host})):
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid and not _alive(pid):
            instance.report_run_failed(run, message=f"the mix-pipeline process (pid {pid}) ended without finishing this run")
            orphaned.append(run.run_id)
    if orphaned:
        print(f"marked {len(orphaned)} run(s) of a killed earlier process as failed: "
              f"{', '.join(r[:8] for r in orphaned)}", flush=True)
    return orphaned


def _execute(defs, job_name: str, instance, partition_key: str | None, label: str) -> None:
    started = time.monotonic()
    print(f"==> {label}", flush=True)
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        raise_on_error=False,
        tags=_run_tags(),
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
                reasons.append(event.step_failure_data.error.message.strip().splitlines()[-1])
        raise RunFailed(f"{label} failed (run {result.run_id}): " + "; ".join(reasons or ["see the run in the UI"]))
    passed = len(evaluations) - len(warned)
    print(f"    done in {time.monotonic() - started:.1f}s, checks: {passed} passed, {len(warned)} warned "
          f"(run {result.run_id[:8]})", flush=True)


def run_recipe(
    recipe_path: str,
    mixture: str | None = None,
    instance=None,
    full: bool = False,
    backfill_sources: list[str] | None = None,
) -> dict[str, dict]:
    """Materialize what a recipe declares; returns the manifest of each mixture built.

    Incremental by default: a source|snapshot partition is ingested only when it is new or its
    input files or recipe entry changed since its last materialization; `backfill_sources`
    forces every snapshot of those sources, `full` forces everything. The dedup index reuses
    unchanged snapshots itself, and a deduplicated partition is rebuilt only when its filtered
    input or its dedup verdicts changed. Mixtures are always rebuilt (cheap, and deterministic).
    """
    from mix_pipeline.core.stages import StageEnv, clusters_file
    from mix_pipeline.defs import build_definitions
    from mix_pipeline.defs.dedup.assets import deduplicated_input_fingerprint
    from mix_pipeline.defs.jobs import COMPARE_JOB, DEDUP_INDEX_JOB, DEDUPLICATE_JOB, INGEST_JOB, MIX_JOB
    from mix_pipeline.defs.partitions import discovered_keys, register
    from mix_pipeline.defs.raw.sensors import recorded_fingerprint, stale_keys
    from mix_pipeline.names import DEDUPLICATED, split_partition_key

    recipe = load_recipe(recipe_path)
    if mixture is not None and mixture not in recipe.mixtures:
        raise RecipeError(f"--mixture: recipe has no mixture '{mixture}' (mixtures: {', '.join(recipe.mixtures)})")
    for source in backfill_sources or []:
        if source not in recipe.sources:
            raise RecipeError(f"--source: recipe has no source '{source}' (sources: {', '.join(recipe.sources)})")
    defs = build_definitions(recipe)
    instance = instance or dagster_instance()
    fail_orphaned_runs(instance)
    new = register(instance, recipe)
    if new:
        print(f"registered {len(new)} new partition(s): {', '.join(new)}")
    keys = discovered_keys(recipe)
    forced = {k for k in keys if full or split_partition_key(k)[0] in (backfill_sources or [])}
    ingest = sorted(forced | set(stale_keys(instance, recipe, [k for k in keys if k not in forced])), key=keys.index)
    print(f"ingest: {len(ingest)} of {len(keys)} partition(s) to (re)build, the rest are unchanged", flush=True)
    for key in ingest:
        _execute(defs, INGEST_JOB, instance, key, f"ingest [{key}]: raw_documents → filtered_documents")
    _execute(defs, DEDUP_INDEX_JOB, instance, None, "dedup_index (all sources, snapshot by snapshot)")
    env = StageEnv(recipe)
    for key in keys:
        source, snapshot = split_partition_key(key)
        fingerprint = deduplicated_input_fingerprint(recipe, env.root, source, snapshot, clusters_file(env, source, snapshot))
        if full or recorded_fingerprint(instance, DEDUPLICATED, key) != fingerprint:
            _execute(defs, DEDUPLICATE_JOB, instance, key, f"deduplicate [{key}]")
    manifests = {}
    for name in sorted(recipe.mixtures):
        if mixture is None or name == mixture:
            _execute(defs, MIX_JOB, instance, name, f"mixture [{name}]")
            with open(os.path.join(recipe.data_root_path, "mixtures", name, "manifest.json")) as f:
                manifests[name] = json.load(f)
    if manifests:
        _execute(defs, COMPARE_JOB, instance, None, "mixture_comparison (all mixtures)")
    return manifests


def print_ledger(recipe_path: str, names: list[str] | None = None) -> None:
    recipe = load_recipe(recipe_path, check_paths=False)
    for name in names or sorted(recipe.mixtures):
        path = os.path.join(recipe.data_root_path, "mixtures", name, "manifest.json")
        if not os.path.exists(path):
            print(f"mixture '{name}': not built yet ({path} is missing)")
            continue
        with open(path) as f:
            manifest = json.load(f)
        unit = manifest["unit"]
        print(f"\nmixture '{name}' ({unit}, seed {manifest['seed']}, tokenizer {manifest['tokenizer']})")
        header = f"  {'source':<12}{'target':>9}{'achieved':>10}{unit:>14}{'documents':>11}{'epochs':>8}"
        print(header)
        print("  " + "-" * (len(header) - 2))
        for source, row in sorted(manifest["sources"].items()):
            print(
                f"  {source:<12}{row['target_weight']:>9.4f}{row['achieved_weight']:>10.4f}"
                f"{row['units']:>14,}{row['documents']:>11,}{row['epochs']:>8.2f}"
            )
        if manifest.get("rebalanced"):
            moved = ", ".join(f"{s} short by {n:,}" for s, n in sorted(manifest["rebalanced"].items()))
            print(f"  rebalanced: {moved} (moved to the other sources by weight)")
        splits = ", ".join(f"{s}: {v['documents']:,} rows" for s, v in manifest["splits"].items())
        print(f"  splits: {splits}")
        print(f"  output: {os.path.dirname(path)}")


def run_lab_experiment(recipe_path: str, experiment: str, materialize: bool = False, instance=None) -> dict:
    """Run one mixture-lab experiment as the `mixture_lab` asset (so it shows in the UI); with
    `materialize`, build its recommendation as mixture `<experiment>_recommended` through the
    normal mixture stage (plan, write, gate, publish). The pipeline must have run first: the lab
    reads the deduplicated shards."""
    import duckdb

    from mix_pipeline.core.catalog import conservation
    from mix_pipeline.core.lab import lab_dir, recommended_spec
    from mix_pipeline.core.stages import StageEnv, run_mixture
    from mix_pipeline.defs import build_definitions, catalog_path
    from mix_pipeline.defs.jobs import LAB_JOB

    recipe = load_recipe(recipe_path)
    if experiment not in recipe.experiments:
        raise RecipeError(f"--experiment: recipe has no experiment '{experiment}' "
                          f"(experiments: {', '.join(recipe.experiments) or 'none'})")
    defs = build_definitions(recipe)
    instance = instance or dagster_instance()
    fail_orphaned_runs(instance)
    _execute(defs, LAB_JOB, instance, experiment, f"mixture_lab [{experiment}]")
    out = lab_dir(recipe.data_root_path, experiment)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    print_lab(results, out)
    if materialize:
        name, spec = recommended_spec(results)
        if name in recipe.mixtures and recipe.mixtures[name] != spec:
            raise RecipeError(f"mixtures.{name}: the recipe already defines it with other settings; "
                              f"rename or remove it, or build it with `mix-pipeline run --mixture {name}`")
        # The block was validated as a MixtureSpec; it is the prior's settings (sources, caps)
        # with new weights, so the recipe's cross-checks hold for it as they did for the prior.
        with_rec = recipe.model_copy(update={"mixtures": {**recipe.mixtures, name: spec}})
        rows = None
        if os.path.exists(catalog_path(recipe)):
            con = duckdb.connect(catalog_path(recipe), read_only=True)
            rows = conservation(con)
            con.close()
        print(f"==> mixture [{name}] (the lab's recommendation)", flush=True)
        run_mixture(StageEnv(with_rec), name, conservation_rows=rows)
        print_ledger(recipe_path, [name])
    return results


def print_lab(results: dict, folder: str) -> None:
    sources = results["sources"]
    unit = "byte" if (results["proxy"].get("tokenizer") == "bytes") else "word"
    print(f"\nlab '{results['experiment']}' (prior {results['prior']}): loss in nats/{unit} on held-out sets, "
          f"objective weights {results['objective_weights']}")
    width = {s: max(10, len(s) + 4) for s in sources}
    print("  " + f"{'candidate':<20}" + "".join(f"{'w_' + s:>{width[s]}}" for s in sources)
          + f"{'objective':>11}{'predicted':>11}")
    for c in results["candidates"] + [results["recommended"]]:
        pred = "" if c["predicted"] is None else f"{c['predicted']:.4f}"
        print("  " + f"{c['name']:<20}" + "".join(f"{c['achieved'].get(s, 0):>{width[s]}.4f}" for s in sources)
              + f"{c['objective']:>11.4f}{pred:>11}")
    rho = results["spearman_loo"]
    print(f"  leave-one-out Spearman (predicted vs observed objective): {'n/a' if rho is None else f'{rho:.3f}'}")
    print(f"  recommended vs uniform: {results['improvement_vs_uniform']:+.4f}, vs prior: "
          f"{results['improvement_vs_prior']:+.4f} (observed; positive = lower loss)")
    from mix_pipeline.core.lab import proxy_line, reuse_line, transfer_rows

    print(f"  proxy: {proxy_line(results)}; proxies trained: {results.get('proxies_trained', '?')}")
    prior = results["candidates"][0]
    rec = results["recommended"]
    print("  per-domain loss: " + "; ".join(
        f"{d} {prior['losses'][d]:.4f} ({prior['name']}) -> {rec['losses'][d]:.4f} (recommended)" for d in results["domains"]))
    if "chosen" in results:
        print(f"  {results['chosen']['verdict']}")
        print(f"  recommended weights: {results['recommended_weights']}")
    if results.get("reuse"):
        print(f"  {reuse_line(results)}")
    for row in transfer_rows(results):
        print(f"  transfer: {row['verdict']} [{row['a']} vs {row['b']}, {row['candidates']} candidates]")
    if results.get("transfer"):
        print(f"  transfer verdict: {results['transfer']['verdict']}")
    print(f"  report: {os.path.join(folder, 'report.html')}\n  mixture block: {os.path.join(folder, 'recommended.yaml')}")


def _cmd_lab(args) -> int:
    run_lab_experiment(args.recipe, args.experiment, materialize=args.materialize)
    return 0


def _cmd_run(args) -> int:
    run_recipe(args.recipe, args.mixture, full=args.full)
    print_ledger(args.recipe, [args.mixture] if args.mixture else None)
    return 0


def _cmd_backfill(args) -> int:
    run_recipe(args.recipe, full=False, backfill_sources=args.source)
    print_ledger(args.recipe)
    return 0


def _open_catalog(recipe_path: str):
    """(recipe, read-only catalog connection), or (recipe, None) after saying what to run first."""
    import duckdb

    from mix_pipeline.defs import catalog_path

    recipe = load_recipe(recipe_path, check_paths=False)
    path = catalog_path(recipe)
    if not os.path.exists(path):
        print(f"no catalog at {path}: run `mix-pipeline run --recipe {recipe_path}` first", file=sys.stderr)
        return recipe, None
    return recipe, duckdb.connect(path, read_only=True)


def _cmd_report(args) -> int:
    from mix_pipeline.core.catalog import conservation

    _, con = _open_catalog(args.recipe)
    if con is None:
        return 1
    print("document fates per source (records = kept + dropped + duplicate + quarantined):")
    for row in conservation(con):
        print(
            f"  {row['source']:<12} records {row['records']:>8,}  kept {row['kept']:>8,}  dropped {row['dropped']:>7,}"
            f"  duplicate {row['duplicate']:>7,}  quarantined {row['quarantined']:>5,}  "
            f"{'balanced' if row['balanced'] else 'NOT BALANCED'}"
        )
    con.close()
    print_ledger(args.recipe)
    return 0


def _cmd_score(args) -> int:
    from mix_pipeline.core.scoring import score_filtering

    recipe, con = _open_catalog(args.recipe)
    if con is None:
        return 1
    with open(args.truth) as f:
        truth = json.load(f)
    print(json.dumps(score_filtering(con, recipe, truth), indent=2, sort_keys=True))
    con.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mix-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a recipe; exit 0 or print the bad key")
    p.add_argument("--recipe", required=True)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("sample-data", help="build the deterministic sample corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--size-mb", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample_data)

    p = sub.add_parser("run", help="materialize every asset of a recipe")
    p.add_argument("--recipe", required=True)
    p.add_argument("--mixture", help="build only this mixture (upstream stages still run)")
    p.add_argument("--full", action="store_true", help="rebuild every partition, changed or not")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("backfill", help="rebuild every snapshot of the given sources, then everything downstream")
    p.add_argument("--recipe", required=True)
    p.add_argument("--source", action="append", required=True, help="a source to backfill (repeatable)")
    p.set_defaults(func=_cmd_backfill)

    p = sub.add_parser("score", help="score the filters of a run of the sample corpus against its ground truth")
    p.add_argument("--recipe", required=True)
    p.add_argument("--truth", required=True, help="the sample corpus's ground_truth.json")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("lab", help="run a mixture-lab experiment and recommend a mixture (after `run`)")
    p.add_argument("--recipe", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--materialize", action="store_true",
                   help="also build the recommendation as mixture <experiment>_recommended")
    p.set_defaults(func=_cmd_lab)

    p = sub.add_parser("report", help="print conservation and mixture ledgers from the catalog")
    p.add_argument("--recipe", required=True)
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
