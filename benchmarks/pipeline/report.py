"""The benchmark's printout, its JSON report and its machine-readable last line."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from benchmarks.pipeline.datatrove_script import DT_NEARDUP_STAGES
from benchmarks.pipeline.ours import OUR_NEARDUP_STAGES, OUR_STAGE_FUNCTIONS
from benchmarks.pipeline.process_tree import GRACE_S, Measurement
from benchmarks.pipeline.settings import NOTES, SOURCES, TASKS, size_label


def variant_row(m: Measurement, text_mb: float, docs: int, dedup: dict) -> dict:
    return {
        "wall_s": m.wall_s,
        "cpu_s": m.cpu_s,
        "cpu_per_wall": m.cpu_s / m.wall_s,
        "peak_rss_mb": m.peak_rss_mb,
        "max_proc_rss_mb": m.max_proc_rss_mb,
        "mb_per_s": text_mb / m.wall_s,
        "docs_per_s": docs / m.wall_s,
        "dedup_recall": dedup["recall"],
        "dedup_precision": dedup["precision"],
        "dedup_f1": dedup["f1"],
    }


COLUMNS = [  # (key, header, format)
    ("wall_s", "wall_s", "{:.1f}"),
    ("cpu_s", "cpu_s", "{:.1f}"),
    ("cpu_per_wall", "cpu/wall", "{:.2f}"),
    ("peak_rss_mb", "tree_rss_mb", "{:.0f}"),
    ("max_proc_rss_mb", "proc_rss_mb", "{:.0f}"),
    ("mb_per_s", "MB/s", "{:.3f}"),
    ("docs_per_s", "docs/s", "{:.1f}"),
    ("dedup_recall", "dd_recall", "{:.3f}"),
    ("dedup_precision", "dd_prec", "{:.3f}"),
    ("dedup_f1", "dd_f1", "{:.3f}"),
]


def print_table(rows: dict[str, dict], ratio: dict) -> None:
    """One row per variant, then the ratio row (ours/datatrove, always two decimals)."""
    header = f"{'variant':<16}" + "".join(f"{h:>13}" for _, h, _ in COLUMNS)
    print(header)
    print("-" * len(header))

    def cell(value: float, fmt: str) -> str:
        return f"{'n/a' if math.isnan(value) else fmt.format(value):>13}"

    for name, row in rows.items():
        print(f"{name:<16}" + "".join(cell(row[k], fmt) for k, _, fmt in COLUMNS))
    print(f"{'ours/datatrove':<16}" + "".join(cell(ratio[k], "{:.2f}") for k, _, _ in COLUMNS))


def ratio_row(a: dict, b: dict) -> dict:
    return {k: (a[k] / b[k] if b[k] and not math.isnan(b[k]) else math.nan) for k in a}


def print_stages(name: str, wall_s: float, result: dict) -> None:
    """Seconds per stage, and what the stages do not cover (interpreter start, imports, and
    for ours Dagster's run bookkeeping between steps)."""
    stages = result["stages"]
    print(f"\n{name}: stage seconds (share of wall)")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<26}{seconds:>8.1f}  {seconds / wall_s:>6.1%}")
    rest = wall_s - sum(stages.values())
    print(f"  {'(not in any stage)':<26}{rest:>8.1f}  {rest / wall_s:>6.1%}")


def fmt_num(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def neardup_numbers(stage_cpu: dict, stage_wall: dict, stages: tuple[str, ...]) -> dict:
    return {
        "cpu_s": sum(stage_cpu.get(k, 0.0) for k in stages),
        "wall_s": sum(stage_wall.get(k, 0.0) for k in stages),
    }


def summary(rows: dict, results: dict, measurements: dict, near: dict, scale: dict | None) -> dict:
    """The headline numbers (the last line's fields, in order)."""
    ours_nd = neardup_numbers(results["ours"]["stage_cpu_s"], results["ours"]["stages"], OUR_NEARDUP_STAGES)
    dt_nd = neardup_numbers(results["datatrove"]["stage_cpu_s"], results["datatrove"]["stages"], DT_NEARDUP_STAGES)
    ours_wall = measurements["ours"].wall_s
    in_stages = sum(results["ours"]["stages"].values())
    in_stages_cpu = sum(results["ours"]["stage_cpu_s"].values())

    def ratio(a, b):
        return a / b if b else math.nan

    return {
        "neardup_speedup": ratio(dt_nd["cpu_s"], ours_nd["cpu_s"]),  # per core: CPU seconds
        "f1": near["ours"]["f1"],
        "precision": near["ours"]["precision"],
        "overall_ratio": ratio(ours_wall, measurements["datatrove"].wall_s),
        "rss_ratio": scale["rss_ratio"] if scale else math.nan,
        "peak_rss_mb": rows["ours"]["peak_rss_mb"],
        "neardup_wall_speedup": ratio(dt_nd["wall_s"], ours_nd["wall_s"]),
        "ours_neardup_cpu_s": ours_nd["cpu_s"],
        "datatrove_neardup_cpu_s": dt_nd["cpu_s"],
        "ours_neardup_wall_s": ours_nd["wall_s"],
        "datatrove_neardup_wall_s": dt_nd["wall_s"],
        "recall": near["ours"]["recall"],
        "datatrove_f1": near["datatrove"]["f1"],
        "cpu_ratio": ratio(measurements["ours"].cpu_s, measurements["datatrove"].cpu_s),
        # Time outside stage work: Dagster + CLI around the stage functions, and interpreter
        # start + imports + instance setup before/after run_recipe.
        "orchestration_s": results["ours"]["pipeline_s"] - in_stages,
        "orchestration_cpu_s": results["ours"]["pipeline_cpu_s"] - in_stages_cpu,
        "startup_s": ours_wall - results["ours"]["pipeline_s"],
        "ours_wall_s": ours_wall,
        "datatrove_wall_s": measurements["datatrove"].wall_s,
        "ours_cpu_s": measurements["ours"].cpu_s,
        "datatrove_cpu_s": measurements["datatrove"].cpu_s,
        "datatrove_peak_rss_mb": rows["datatrove"]["peak_rss_mb"],
        "small_peak_rss_mb": scale["small_peak_rss_mb"] if scale else math.nan,
    }


LAST_LINE_DIGITS = {"neardup_speedup": 1, "f1": 2, "precision": 2, "overall_ratio": 2, "rss_ratio": 2, "peak_rss_mb": 0}
TAIL_DIGITS = {"filter_agreement": 4, "cpu_s_per_mb": 3, "small_cpu_s_per_mb": 3}


def last_line(size_mb: float, numbers: dict) -> str:
    """`neardup_speedup=… f1=… precision=… overall_ratio=… rss_ratio=… peak_rss_mb=…` then
    more key=value fields (seconds with one decimal, ratios with two)."""
    head = [f"{k}={fmt_num(numbers[k], d)}" for k, d in LAST_LINE_DIGITS.items()]
    tail = [
        f"{k}={fmt_num(v, TAIL_DIGITS.get(k, 1 if k.endswith('_s') or k.endswith('_mb') else 2))}"
        for k, v in numbers.items()
        if k not in LAST_LINE_DIGITS
    ]
    return " ".join(head + tail + [f"size_mb={size_label(size_mb)}"])


def json_safe(value):
    """NaN is not JSON: write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def print_neardup(results: dict, numbers: dict) -> None:
    print("\nnear-dup work, CPU seconds of the whole process tree (wall seconds):")
    for variant, stages in (("ours", OUR_NEARDUP_STAGES), ("datatrove", DT_NEARDUP_STAGES)):
        cpu, wall = results[variant]["stage_cpu_s"], results[variant]["stages"]
        parts = ", ".join(f"{k} {cpu.get(k, 0):.1f} ({wall.get(k, 0):.1f})" for k in stages)
        print(f"  {variant:<10} {sum(cpu.get(k, 0) for k in stages):>6.1f} cpu_s: {parts}")
    print(
        f"  speedup (datatrove / ours): {fmt_num(numbers['neardup_speedup'], 1)}x per core (CPU), "
        f"{fmt_num(numbers['neardup_wall_speedup'], 1)}x wall"
    )
    print(
        f"ours outside stage work: {numbers['orchestration_s']:.1f}s wall / {numbers['orchestration_cpu_s']:.1f}s CPU "
        f"in Dagster + CLI around the stages, {numbers['startup_s']:.1f}s interpreter start, imports and instance"
    )


def print_stage_throughput(runs: list[tuple[str, float, dict, float]]) -> None:
    """Ours' MB of input text per CPU second (= MB/s per core) for each stage and the whole
    run, at each size: how cost grows with size."""
    stages = [label for _, _, label in OUR_STAGE_FUNCTIONS]
    print("\nours: MB/s per core (input text MB / whole-tree CPU s) per stage")
    print(f"  {'stage':<26}" + "".join(f"{name:>16}" for name, _, _, _ in runs))
    for stage in stages + ["(whole run)"]:
        cells = []
        for _, mb, result, cpu_s in runs:
            cpu = cpu_s if stage == "(whole run)" else result["stage_cpu_s"].get(stage, 0.0)
            cells.append(f"{mb / cpu:>10.2f} ({cpu:>5.1f}s)" if cpu > 0 else f"{'n/a':>16}")
        print(f"  {stage:<26}" + "".join(f"{c:>16}" for c in cells))


def print_ours_only(m: Measurement, result: dict, text_mb: float) -> int:
    """`--ours-only`: our variant's whole-tree CPU, peak memory and CPU per stage, to compare
    commits quickly (no datatrove run, no ratios)."""
    stages = " ".join(f"{name}={seconds:.1f}" for name, seconds in result["stage_cpu_s"].items())
    print(f"ours_cpu_s={m.cpu_s:.1f} mb_s_core={text_mb / m.cpu_s:.2f} peak_rss_mb={m.peak_rss_mb:.0f} "
          f"ours_wall_s={m.wall_s:.1f} stage_cpu_s: {stages}")
    return m.returncode


@dataclass
class Outcome:
    """What one full run of the benchmark measured and scored, for the printout and the JSON."""

    size_mb: float
    text_mb: float
    docs: int
    measurements: dict[str, Measurement]
    results: dict[str, dict]  # variant → the timings its child process wrote
    rows: dict[str, dict]
    ratio: dict
    numbers: dict  # the summary, in the last line's order
    dedup: dict
    near: dict
    filtered: dict[str, dict[str, int]]  # variant → documents per source after filtering
    agreement: dict
    scale: dict | None
    small_result: dict | None


def headline_numbers(rows: dict, results: dict, measurements: dict, near: dict, scale: dict | None,
                     agreement: dict, text_mb: float) -> dict:
    """summary(), with the throughput targets placed right after the fixed head of the last line."""
    numbers = summary(rows, results, measurements, near, scale)
    cpu_per_mb = measurements["ours"].cpu_s / text_mb
    small_cpu_per_mb = scale["small_cpu_s"] / scale["small_text_mb"] if scale else math.nan
    head = {k: numbers.pop(k) for k in list(numbers) if k in LAST_LINE_DIGITS}
    return head | {
        "cpu_ratio": numbers.pop("cpu_ratio"),
        "mb_s_core": text_mb / measurements["ours"].cpu_s,
        "filter_agreement": agreement["agreement"],
        "cpu_s_per_mb": cpu_per_mb,
        "small_cpu_s_per_mb": small_cpu_per_mb,
        "cpu_per_mb_growth": cpu_per_mb / small_cpu_per_mb if scale else math.nan,
    } | numbers


def print_report(o: Outcome, workers: int, load_before: str) -> None:
    label = size_label(o.size_mb)
    print(
        f"\nbench_pipeline: {label} MB corpus; sources {', '.join(SOURCES)}: {o.text_mb:.1f} MB text, {o.docs:,} docs; "
        f"tasks={TASKS} workers={workers}; {os.cpu_count()} CPUs; load average before/after "
        f"{load_before} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print_table(o.rows, o.ratio)
    for variant in ("ours", "datatrove"):
        print_stages(variant, o.measurements[variant].wall_s, o.results[variant])
    print_neardup(o.results, o.numbers)
    same = o.filtered["ours"] == o.filtered["datatrove"]
    print(
        f"\ndocuments after filtering (dedup input): ours {o.filtered['ours']}, datatrove {o.filtered['datatrove']}"
        f"{'' if same else '  <-- DIFFERENT: the variants did not filter identically'}"
    )
    print_dedup(o.dedup, o.near)
    runs = [(f"{label} MB", o.text_mb, o.results["ours"], o.measurements["ours"].cpu_s)]
    if o.scale:
        runs.append((f"{size_label(o.scale['small_size_mb'])} MB", o.scale["small_text_mb"], o.small_result,
                     o.scale["small_cpu_s"]))
    print_stage_throughput(runs)
    agreement = o.agreement
    print(
        f"filter decisions vs datatrove's filters: {agreement['same']} of {agreement['documents']} documents "
        f"the same ({fmt_num(agreement['agreement'] * 100, 2)}%); only in ours {agreement['only_ours']}, "
        f"only in datatrove {agreement['only_datatrove']}; differences (datatrove -> ours): {agreement['differences']}"
    )
    if o.scale:
        print(
            f"memory growth: ours peak tree PSS {o.scale['small_peak_rss_mb']:.0f} MiB at "
            f"{size_label(o.scale['small_size_mb'])} MB, "
            f"{o.rows['ours']['peak_rss_mb']:.0f} MiB at {label} MB: rss_ratio {o.scale['rss_ratio']:.2f}"
        )
    for m_name, m in o.measurements.items():
        if m.lingering:
            print(f"warning: {m_name} left {m.lingering} process(es) running {GRACE_S:g}s after exiting; killed")
    print("notes:\n" + "\n".join(f"  - {n}" for n in NOTES))


def print_dedup(dedup: dict, near: dict) -> None:
    for v in ("ours", "datatrove"):
        d, n = dedup[v], near[v]
        print(
            f"dedup {v}: removed {d['removed']} ({d['removed_planted']} planted); "
            f"found {d['pairs_found']} of {d['pairs_scored']} planted pairs that reached dedup; "
            f"near only: removed {n['removed']} ({n['removed_planted']} planted), found {n['pairs_found']} of "
            f"{n['pairs_scored']} planted near pairs: recall {fmt_num(n['recall'], 3)} precision "
            f"{fmt_num(n['precision'], 3)} f1 {fmt_num(n['f1'], 3)}"
        )


def json_report(o: Outcome, workers: int, load_before: str) -> dict:
    """What goes to <out>/bench-<size>mb.json (NaN still in it: pass it through json_safe)."""
    results = o.results
    return {
        "size_mb": o.size_mb,
        "workers": workers,
        "tasks": TASKS,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "sources": list(SOURCES),
        "input_text_mb": o.text_mb,
        "input_documents": o.docs,
        "summary": o.numbers,
        "variants": o.rows,
        "ratio_ours_over_datatrove": o.ratio,
        "measurements": {v: asdict(m) for v, m in o.measurements.items()},
        "stages": {v: results[v]["stages"] for v in results},
        "stage_cpu_s": {v: results[v]["stage_cpu_s"] for v in results},
        "dagster_steps": results["ours"].get("dagster_steps"),
        "pipeline_s": {v: results[v]["pipeline_s"] for v in results},
        "dedup": o.dedup,
        "near_dedup": o.near,
        "scale": o.scale,
        "filtered_documents": o.filtered,
        "filter_agreement": o.agreement,
        "small_stage_cpu_s": o.small_result["stage_cpu_s"] if o.small_result else None,
        "notes": NOTES,
    }
