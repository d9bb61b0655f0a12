"""Benchmark: our Dagster-orchestrated pipeline against the equivalent plain datatrove script.

    python benchmarks/bench_pipeline.py --size-mb 20 [--workers 2] [--out benchmarks/out]

Both variants read the same sample corpus and run in their own child process, so each one's
wall time, CPU time and memory are measured alone:

- ours: a recipe shaped like recipes/demo.yaml, run through `run_recipe` (real Dagster jobs:
  ingest → dedup_index → deduplicate → mixture) against a throw-away Dagster instance.
- datatrove: the script a datatrove user would write for the same work: per source read →
  the same filters in the same order → Parquet, then datatrove's four MinHash stages over the
  three filtered outputs and a final Parquet writer.

The `code` source is left out of both: datatrove 0.10 has no reader for a directory of text
files, and the inputs must be identical for the comparison to mean anything.

The last printed line is machine-readable; the same numbers go to <out>/bench-<size>mb.json.
See benchmarks/README.md for what each column means and the caveats.

This script is the entry point and the flow; the parts live in benchmarks/pipeline/: settings
(what both variants run), corpus, ours and datatrove_script (the variants), variants (running
one in a child process), process_tree (measuring it), scoring and report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing it
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.pipeline.corpus import corpus_text_mb, ensure_corpus  # noqa: E402
from benchmarks.pipeline.process_tree import Measurement, become_subreaper  # noqa: E402
from benchmarks.pipeline.report import (  # noqa: E402
    Outcome,
    headline_numbers,
    json_report,
    json_safe,
    last_line,
    print_ours_only,
    print_report,
    ratio_row,
    variant_row,
)
from benchmarks.pipeline.scoring import dedup_scores, filter_agreement, per_source  # noqa: E402
from benchmarks.pipeline.settings import SOURCES, size_label  # noqa: E402
from benchmarks.pipeline.variants import child_main, run_variant  # noqa: E402


def main(args) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    label = size_label(args.size_mb)
    corpus, truth = ensure_corpus(out, args.size_mb)
    if not become_subreaper():
        print("warning: cannot become a child subreaper; CPU of orphaned worker processes is not counted")
    run_dir, log_dir = out / f"run-{label}mb", out / "logs"
    log_dir.mkdir(exist_ok=True)
    if args.ours_only:
        return print_ours_only(*run_variant("ours", args, corpus, run_dir, log_dir), corpus_text_mb(truth))
    outcome = run_and_score(args, out, corpus, truth, run_dir, log_dir)
    print_report(outcome, args.workers, args.load_before)
    report_path = out / f"bench-{label}mb.json"
    report = json_report(outcome, args.workers, args.load_before)
    report_path.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    print(f"json: {report_path}")
    print(last_line(args.size_mb, outcome.numbers))
    return 0


def run_and_score(args, out: Path, corpus: Path, truth: dict, run_dir: Path, log_dir: Path) -> Outcome:
    """Both variants at the full size, ours again at size / scale, then every score."""
    text_mb = corpus_text_mb(truth)
    docs = sum(truth["counts"][s]["documents"] for s in SOURCES)
    measurements, results = {}, {}
    for variant in ("ours", "datatrove"):
        measurements[variant], results[variant] = run_variant(variant, args, corpus, run_dir, log_dir)
    scale, small_result = None, None
    if args.scale > 1:
        small_m, small_mb, small_result, small_text_mb = run_scale(args, out, log_dir)
        scale = {
            "small_size_mb": small_mb,
            "small_text_mb": small_text_mb,
            "small_peak_rss_mb": small_m.peak_rss_mb,
            "small_wall_s": small_m.wall_s,
            "small_cpu_s": small_m.cpu_s,
            "rss_ratio": measurements["ours"].peak_rss_mb / small_m.peak_rss_mb,
        }
    agreement = filter_agreement(run_dir)
    dedup_sets, dedup, near = dedup_scores(truth, run_dir)
    rows = {v: variant_row(measurements[v], text_mb, docs, dedup[v]) for v in measurements}
    return Outcome(
        size_mb=args.size_mb, text_mb=text_mb, docs=docs, measurements=measurements, results=results, rows=rows,
        ratio=ratio_row(rows["ours"], rows["datatrove"]),
        numbers=headline_numbers(rows, results, measurements, near, scale, agreement, text_mb),
        dedup=dedup, near=near, filtered={v: per_source(sets[0]) for v, sets in dedup_sets.items()},
        agreement=agreement, scale=scale, small_result=small_result,
    )


def run_scale(args, out: Path, log_dir: Path) -> tuple[Measurement, float, dict, float]:
    """Ours alone at size_mb / scale, for the memory-growth ratio."""
    small = argparse.Namespace(**vars(args))
    small.size_mb = args.size_mb / args.scale
    corpus, truth = ensure_corpus(out, small.size_mb)
    m, result = run_variant("ours", small, corpus, out / f"run-{size_label(small.size_mb)}mb", log_dir)
    return m, small.size_mb, result, corpus_text_mb(truth)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0, help="sample corpus size (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="datatrove worker processes (default 2)")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "out"), help="corpus, runs, logs and JSON")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per variant (default 1800)")
    parser.add_argument(
        "--stall-timeout", type=float, default=300.0, help="kill a variant that uses no CPU for this long (default 300)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=5.0,
        help="also run ours at size-mb / scale and report rss_ratio = peak(size) / peak(size/scale); "
        "1 skips it (default 5)",
    )
    parser.add_argument("--ours-only", action="store_true",
                        help="run only our variant and print its CPU, peak memory and CPU per stage")
    # Internal: how the parent starts a variant's child process.
    parser.add_argument("--variant", choices=["ours", "datatrove"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.size_mb <= 0 or args.workers < 1:
        parser.error("--size-mb must be > 0 and --workers ≥ 1")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(child_main(arguments) if arguments.variant else main(arguments))
