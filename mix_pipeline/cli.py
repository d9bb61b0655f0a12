"""`mix-pipeline`: validate a recipe, build sample data, run a recipe, report on a run, score its filters, run a mixture lab.

This module parses arguments, calls and prints. `run`, `backfill`, `lab` and `forget` call
defs/runner.py, which follows the planner the daemon follows (defs/plan.py) and executes the same
Dagster jobs against the instance in DAGSTER_HOME (default ./.dagster_home, the folder `make ui`
uses), so CLI runs appear in the UI; the other commands read the catalog and the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mix_pipeline import layout
from mix_pipeline.recipe import RecipeError, inputs, load_recipe


def _cmd_validate(args) -> int:
    recipe = load_recipe(args.recipe)
    files = sum(len(inputs.source_files(recipe, s, snap)) for s in recipe.sources
                for snap in inputs.snapshots(recipe, s))
    print(
        f"ok: recipe '{recipe.name}': {len(recipe.sources)} source(s) over {files} file(s), "
        f"{len(recipe.mixtures)} mixture(s); data_root {recipe.data_root_path}"
    )
    return 0


def _cmd_sample_data(args) -> int:
    from mix_pipeline.sample.corpus import build_sample_corpus

    truth = build_sample_corpus(args.out, size_mb=args.size_mb, seed=args.seed, log=print)
    print(f"sample corpus: {truth['counts']['total_documents']} documents in {os.path.abspath(args.out)}")
    return 0


def print_ledger(recipe_path: str, names: list[str] | None = None) -> None:
    recipe = load_recipe(recipe_path, check_paths=False)
    for name in names or sorted(recipe.mixtures):
        path = layout.manifest_path(recipe.data_root_path, name)
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
    from mix_pipeline.core.lab.report import proxy_line, reuse_line, transfer_rows

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
    from mix_pipeline.core.lab.report import recommended_spec
    from mix_pipeline.defs.runner import run_lab_experiment

    recipe = load_recipe(args.recipe)
    results = run_lab_experiment(args.recipe, args.experiment, materialize=args.materialize)
    print_lab(results, layout.lab_dir(recipe.data_root_path, args.experiment))
    if args.materialize:
        print_ledger(args.recipe, [recommended_spec(results)[0]])
    return 0


def _cmd_run(args) -> int:
    from mix_pipeline.defs.runner import RunFailed, run_recipe

    try:
        run_recipe(args.recipe, args.mixture, full=args.full)
    except RunFailed:
        print_ledger(args.recipe, [args.mixture] if args.mixture else None)  # what was built all the same
        raise
    print_ledger(args.recipe, [args.mixture] if args.mixture else None)
    return 0


def _cmd_backfill(args) -> int:
    from mix_pipeline.defs.runner import RunFailed, run_recipe

    try:
        run_recipe(args.recipe, full=False, backfill_sources=args.source)
    except RunFailed:
        print_ledger(args.recipe)
        raise
    print_ledger(args.recipe)
    return 0


def _open_catalog(recipe_path: str):
    """(recipe, read-only catalog connection), or (recipe, None) after saying what to run first."""
    import duckdb

    recipe = load_recipe(recipe_path, check_paths=False)
    path = layout.catalog_path(recipe.data_root_path)
    if not os.path.exists(path):
        print(f"no catalog at {path}: run `mix-pipeline run --recipe {recipe_path}` first", file=sys.stderr)
        return recipe, None
    return recipe, duckdb.connect(path, read_only=True)


def _cmd_report(args) -> int:
    from mix_pipeline.core.provenance.catalog import conservation
    from mix_pipeline.core.provenance.fates import missing_note

    _, con = _open_catalog(args.recipe)
    if con is None:
        return 1
    print("document fates per source (records = kept + dropped + duplicate + quarantined + removed):")
    for row in conservation(con):
        print(
            f"  {row['source']:<12} records {row['records']:>8,}  kept {row['kept']:>8,}  dropped {row['dropped']:>7,}"
            f"  duplicate {row['duplicate']:>7,}  quarantined {row['quarantined']:>5,}  "
            + (f"removed {row['removed']:>5,}  " if row.get("removed") else "")
            + f"{'balanced' if row['balanced'] else 'NOT BALANCED'}"
        )
    if note := missing_note(con):  # a fate file deleted by hand: its documents are not counted
        print(f"warning: {note}", file=sys.stderr)
    con.close()
    print_ledger(args.recipe)
    return 0


def _cmd_score(args) -> int:
    from mix_pipeline.sample.scoring import score_filtering

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
    add_provenance_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from mix_pipeline.defs.runner import RunFailed  # Dagster is loaded by then

        if not isinstance(exc, RunFailed):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


# Provenance: trace and forget (core/provenance/trace.py, core/provenance/forget.py).
def _cmd_trace(args) -> int:
    from mix_pipeline.core.provenance.outputs import ProvenanceError
    from mix_pipeline.core.provenance.trace import format_trace, trace

    recipe, con = _open_catalog(args.recipe)
    if con is None:
        return 1
    try:
        histories = trace(con, recipe, args.id, source=args.source)
    except ProvenanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        con.close()
    print(json.dumps(histories, indent=2, sort_keys=True, default=str) if args.json else format_trace(histories))
    return 0


def read_id_list(path: str) -> list[tuple[str | None, str]]:
    """(source or None, id) per line of an ids file: `ID` or `SOURCE<TAB>ID`; `#` starts a comment line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"--ids: cannot read {path} ({exc}); give a UTF-8 text file with one id a line") from None
    out = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        source, tab, doc_id = line.partition("\t")
        out.append((source, doc_id) if tab else (None, line.strip()))
    return out


def _cmd_forget(args) -> int:
    from mix_pipeline.defs.runner import forget

    ids = read_id_list(args.ids) if args.ids else []
    if not (ids or args.source_file or args.url):
        raise RecipeError("forget: give --ids FILE, --source-file PATTERN or --url PATTERN")
    proof = forget(args.recipe, ids, args.source_file, args.url, args.reason, with_copies=not args.only_listed)
    balanced = all(b for _, b in proof["conservation"])
    print(f"forget: {proof['verified']} of {proof['documents']} document(s) have the fate 'removed' and sit in no output "
          f"(catalog table removal_log); conservation {'holds' if balanced else 'does NOT hold'}")
    for r in proof["rows_left"][:10]:
        print(f"  still in {r['output']}: {r['source']}/{r['id']} at {r['file']} row {r['row']}")
    for r in proof["not_removed"][:10]:
        print(f"  not removed: {r['source']}/{r['id']} ({r['snapshot']}): fate {r['fate']}")
    return 0 if proof["verified"] == proof["documents"] and balanced else 1


def add_provenance_commands(sub) -> None:
    p = sub.add_parser("trace", help="the whole history of a document or mixture row (after `run`)")
    p.add_argument("--recipe", required=True)
    p.add_argument("id", help="a document id, or a mixture row MIXTURE/SPLIT/part-NNNNN.parquet:ROW (ROW from 0)")
    p.add_argument("--source", help="only the document of this source (ids may repeat across sources)")
    p.add_argument("--json", action="store_true", help="print the history as JSON")
    p.set_defaults(func=_cmd_trace)

    p = sub.add_parser("forget", help="remove documents on request: record, rebuild what holds them, verify")
    p.add_argument("--recipe", required=True)
    p.add_argument("--ids", help="a file with one document id a line (or SOURCE<TAB>ID)")
    p.add_argument("--source-file", help="every document read from input files matching this glob "
                   "(relative to the source's folder, e.g. 'dump-03/*.jsonl.gz')")
    p.add_argument("--url", help="every document whose `url` matches this glob (e.g. 'https://example.com/*')")
    p.add_argument("--reason", default="removal request", help="recorded with each document's fate")
    p.add_argument("--only-listed", action="store_true",
                   help="do not also remove the exact and near copies dedup dropped in favour of a named document")
    p.set_defaults(func=_cmd_forget)


if __name__ == "__main__":
    sys.exit(main())
