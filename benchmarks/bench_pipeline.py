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
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without installing it
    sys.path.insert(0, str(REPO_ROOT))

# Sources both variants read (code is dropped: see the module docstring), with their input
# glob inside the corpus folder and their format.
SOURCES = {
    "web": ("web/*.jsonl.gz", "jsonl"),
    "books": ("books/*.parquet", "parquet"),
    "papers": ("papers/*.jsonl.zst", "jsonl"),
}
# Filters per source, in order, as recipes/demo.yaml lists them except web's `safety` (left out
# of both variants, see README): (name, params).
FILTERS = {
    "web": [
        ("language", {"languages": ["en"]}),
        ("gopher_repetition", {}),
        ("gopher_quality", {}),
        ("c4", {}),
        ("fineweb", {}),
        ("pii", {}),
    ],
    "books": [("language", {"languages": ["en"]}), ("gopher_repetition", {})],
    "papers": [("language", {"languages": ["en"]}), ("gopher_repetition", {}), ("pii", {})],
}
DEDUP_PRIORITY = ["books", "papers", "web"]  # demo.yaml's order, without code
# Our MinHash settings (the recipe defaults, written out so both variants visibly share them).
NUM_PERM, BANDS, NGRAM, THRESHOLD, MINHASH_SEED = 128, 32, 5, 0.8, 1
# datatrove: the same 128 hashes in the same 32 bands of 4. datatrove keeps every band match
# (no check against the full signature), so its effective threshold is about (1/32)^(1/4) ≈ 0.42,
# where ours verifies candidates at THRESHOLD.
DT_NUM_BUCKETS, DT_HASHES_PER_BUCKET = BANDS, NUM_PERM // BANDS
TASKS = 2
# The demo mixes 2M tokens out of a 20 MB corpus; keep that ratio so the mixture stays feasible
# at any size. Weights are demo.yaml's with code's share spread over the rest.
MIX_TOKENS_PER_MB = 100_000
MIX_WEIGHTS = {"web": 0.625, "books": 0.25, "papers": 0.125}

NOTES = [
    "code source dropped from both variants: datatrove 0.10 has no text-directory reader",
    "language filter: py3langid in both (datatrove's LanguageFilter downloads a fastText model at run time); "
    "the script classifies 10,000 characters with py3langid's classify, ours 3,000 with core.fastlang",
    "prose filters: datatrove's classes in the script, core.prose's subclasses in ours (filter_agreement compares them)",
    "pii in both: mix_pipeline.core.filters.registry.PIIRedactor (datatrove's PIIFormatter has no phone numbers)",
    f"datatrove MinHash: {DT_NUM_BUCKETS} buckets x {DT_HASHES_PER_BUCKET} hashes, {NGRAM}-grams, "
    f"no signature verification; ours: {NUM_PERM} perms / {BANDS} bands, verified at {THRESHOLD}, plus exact hashes",
    "datatrove MinHash shingles hashed with sha1: its default xxhash fails under xxhash 4.1 (str input)",
    "ours also runs a mixture stage and writes raw/dropped/quarantine copies and a DuckDB catalog",
]

KIB_PER_MB = 1024  # memory is reported in MiB (2^20 bytes), like ps and top
PR_SET_CHILD_SUBREAPER = 36


# ---------------------------------------------------------------------------------- corpus
def size_label(size_mb: float) -> str:
    return f"{size_mb:g}"


def ensure_corpus(out: Path, size_mb: float) -> tuple[Path, dict]:
    """Build the sample corpus once per size; building takes a while and it is deterministic."""
    from mix_pipeline.sample.corpus import build_sample_corpus

    corpus = out / f"corpus-{size_label(size_mb)}mb"
    truth_path = corpus / "ground_truth.json"
    if not truth_path.exists():
        print(f"building a {size_label(size_mb)} MB sample corpus in {corpus}", flush=True)
        build_sample_corpus(str(corpus), size_mb=size_mb, log=lambda msg: print(f"  {msg}", flush=True))
    return corpus, json.loads(truth_path.read_text())


# ---------------------------------------------------------------------------- variant: ours
def write_recipe(path: Path, corpus: Path, data_root: Path, workers: int, size_mb: float) -> Path:
    """A recipe with demo.yaml's structure over the benchmark corpus (absolute paths)."""
    import yaml

    recipe = {
        "name": "bench",
        "data_root": str(data_root),
        "allowed_roots": [str(corpus)],
        "tokenizer": {"kind": "estimate"},
        "executor": {"kind": "local", "tasks": TASKS, "workers": workers},
        "sources": {
            source: {
                "path": str(corpus / pattern),
                "format": fmt,
                "domain": source,
                "filters": [name if not params else {name: params} for name, params in FILTERS[source]],
            }
            for source, (pattern, fmt) in SOURCES.items()
        },
        "dedup": {
            "exact": True,
            "minhash": {
                "threshold": THRESHOLD,
                "ngram": NGRAM,
                "num_perm": NUM_PERM,
                "bands": BANDS,
                "seed": MINHASH_SEED,
            },
            "priority": DEDUP_PRIORITY,
        },
        "mixtures": {
            "general": {
                "unit": "tokens",
                "total": max(1, int(MIX_TOKENS_PER_MB * size_mb)),
                "weights": MIX_WEIGHTS,
                "max_epochs": 4,
                "splits": {"validation": 0.01, "test": 0.01},
                "seed": 1234,
            }
        },
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def dagster_step_seconds(instance) -> dict[str, float]:
    """Seconds per asset step summed over runs (and so over partitions), from Dagster's own
    step records: it shows which stage dominates without parsing log lines."""
    totals: dict[str, float] = {}
    for record in instance.get_run_records():
        for step in instance.get_run_step_stats(record.dagster_run.run_id):
            if step.start_time is not None and step.end_time is not None:
                totals[step.step_key] = totals.get(step.step_key, 0.0) + step.end_time - step.start_time
    return totals


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


class StageClock:
    """Wall and whole-tree CPU seconds per stage, summed over calls (partitions)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            wall0, cpu0 = time.monotonic(), session_cpu_s()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[name] = self.wall.get(name, 0.0) + time.monotonic() - wall0
                self.cpu[name] = self.cpu.get(name, 0.0) + session_cpu_s() - cpu0

        return timed


# Our stage functions as the Dagster assets call them: (asset module, function name, stage label).
OUR_STAGE_FUNCTIONS = [
    ("mix_pipeline.defs.raw", "run_raw", "raw"),
    ("mix_pipeline.defs.filtered", "run_filtered", "filtered"),
    ("mix_pipeline.defs.dedup_index", "run_dedup_index", "dedup_index"),
    ("mix_pipeline.defs.deduplicated", "run_deduplicated", "deduplicated"),
    ("mix_pipeline.defs.mixture", "run_mixture", "mixture"),
    ("mix_pipeline.defs.mixture_comparison", "run_comparison", "mixture_comparison"),
]
# Our near-dup work: signatures + clustering (dedup_index) and applying the verdicts (deduplicated).
OUR_NEARDUP_STAGES = ("dedup_index", "deduplicated")
# datatrove's four MinHash stages.
DT_NEARDUP_STAGES = ("minhash_signature", "minhash_buckets", "minhash_cluster", "minhash_filter")


def run_ours(work: Path, corpus: Path, workers: int, size_mb: float) -> dict:
    """Runs the recipe through Dagster; each stage function the assets call is timed (wall and
    whole-tree CPU), so what is left of the run's wall time is orchestration: Dagster's run
    and event bookkeeping, the catalog writes and checks around the stages, the CLI."""
    import importlib

    import dagster as dg

    from mix_pipeline.defs.runner import run_recipe

    clock = StageClock()
    for module_name, fn_name, label in OUR_STAGE_FUNCTIONS:
        module = importlib.import_module(module_name)
        setattr(module, fn_name, clock.wrap(label, getattr(module, fn_name)))
    recipe = write_recipe(work / "recipe.yaml", corpus, work / "data", workers, size_mb)
    with dg.instance_for_test() as instance:
        started, cpu0 = time.monotonic(), session_cpu_s()
        run_recipe(str(recipe), instance=instance)
        pipeline_s, pipeline_cpu_s = time.monotonic() - started, session_cpu_s() - cpu0
        steps = dagster_step_seconds(instance)
    return {
        "pipeline_s": pipeline_s,
        "pipeline_cpu_s": pipeline_cpu_s,
        "stages": clock.wall,
        "stage_cpu_s": clock.cpu,
        "dagster_steps": steps,
    }


# ----------------------------------------------------------------------- variant: datatrove
def document_row(self, doc) -> dict:
    """ParquetWriter adapter. datatrove infers a Parquet schema from the first batch, and our
    metadata keys vary per document (`pii_redacted` only where something was redacted), so
    metadata is stored as JSON text, which datatrove's readers decode back into a dict."""
    return {"id": doc.id, "text": doc.text, "metadata": json.dumps(doc.metadata)}


def datatrove_filter(name: str, params: dict, exclusion_writer=None):
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from mix_pipeline.core.filters.registry import LanguageIdFilter, PIIRedactor

    class Py3langidFilter(LanguageIdFilter):
        """The language filter as a datatrove user writes it with py3langid: its own `classify`
        (ours computes the same answer with array operations, see core.fastlang)."""

        def identify(self, texts: list[str]) -> list[tuple[str, float]]:
            from mix_pipeline.core.filters.registry import language_identifier

            return [(lang, float(prob)) for lang, prob in (language_identifier().classify(t[:10_000]) for t in texts)]

    classes = {
        "language": Py3langidFilter,
        "gopher_repetition": GopherRepetitionFilter,
        "gopher_quality": GopherQualityFilter,
        "c4": C4QualityFilter,
        "fineweb": FineWebQualityFilter,
        "pii": PIIRedactor,
    }
    if exclusion_writer is not None:
        params = params | {"exclusion_writer": exclusion_writer}
    return classes[name](**params)


def datatrove_reader(corpus: Path, source: str):
    from datatrove.pipeline.readers import JsonlReader, ParquetReader

    pattern, fmt = SOURCES[source]
    folder, _, glob_pattern = pattern.partition("/")
    tag = {"source": source}  # carried through to score the dedup by (source, id)
    if fmt == "parquet":
        return ParquetReader(str(corpus / folder), glob_pattern=glob_pattern, default_metadata=tag)
    compression = "zstd" if glob_pattern.endswith(".zst") else "gzip"
    return JsonlReader(str(corpus / folder), glob_pattern=glob_pattern, compression=compression, default_metadata=tag)


def run_datatrove(work: Path, corpus: Path, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig

    stages: dict[str, float] = {}
    stage_cpu: dict[str, float] = {}

    def execute(name: str, pipeline: list, tasks: int) -> None:
        started, cpu0 = time.monotonic(), session_cpu_s()
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(workers, tasks),
            logging_dir=str(work / "logs" / name),
            skip_completed=False,
        ).run()
        stages[name] = time.monotonic() - started
        stage_cpu[name] = session_cpu_s() - cpu0

    def writer(folder: str) -> ParquetWriter:
        return ParquetWriter(str(work / folder), adapter=document_row, compression="zstd")

    started, cpu0 = time.monotonic(), session_cpu_s()
    for source in SOURCES:
        # Dropped documents are written with datatrove's `filter_reason`, so the benchmark can
        # compare each document's fate with ours (filter_agreement).
        steps = [datatrove_reader(corpus, source)] + [
            datatrove_filter(n, p, writer(f"dropped/{source}/{n}") if n != "pii" else None) for n, p in FILTERS[source]
        ]
        execute(f"filter[{source}]", steps + [writer(f"filtered/{source}")], TASKS)

    config = MinhashConfig(
        n_grams=NGRAM,
        num_buckets=DT_NUM_BUCKETS,
        hashes_per_bucket=DT_HASHES_PER_BUCKET,
        seed=MINHASH_SEED,
        # The default xxhash shingle hash passes str to xxhash, which xxhash 4 (our pin) rejects.
        hash_config=HashConfig(precision=64, hash_fc="sha1"),
    )

    # Stages 1 and 4 must read the same documents in the same order per rank: datatrove
    # identifies a document by (rank, position).
    def filtered_reader() -> ParquetReader:
        return ParquetReader(str(work / "filtered"), glob_pattern="*/*.parquet")

    minhash = work / "minhash"
    execute(
        "minhash_signature",
        [filtered_reader(), MinhashDedupSignature(str(minhash / "signatures"), config=config)],
        TASKS,
    )
    execute(
        "minhash_buckets",
        [MinhashDedupBuckets(str(minhash / "signatures"), str(minhash / "buckets"), config=config)],
        DT_NUM_BUCKETS,  # datatrove needs a multiple of num_buckets here
    )
    execute(
        "minhash_cluster",
        [MinhashDedupCluster(str(minhash / "buckets"), str(minhash / "remove_ids"), config=config)],
        1,
    )
    execute(
        "minhash_filter",
        [
            filtered_reader(),
            MinhashDedupFilter(str(minhash / "remove_ids"), exclusion_writer=writer("dedup_removed")),
            writer("deduplicated"),
        ],
        TASKS,
    )
    return {
        "pipeline_s": time.monotonic() - started,
        "pipeline_cpu_s": session_cpu_s() - cpu0,
        "stages": stages,
        "stage_cpu_s": stage_cpu,
    }


def child_main(args) -> int:
    """Entry point of a variant's child process: run it and write its own timings as JSON."""
    work, corpus = Path(args.work), Path(args.corpus)
    if args.variant == "ours":
        result = run_ours(work, corpus, args.workers, args.size_mb)
    else:
        result = run_datatrove(work, corpus, args.workers)
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0


# ----------------------------------------------------------------------------- measurement
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
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:  # nothing left to reap: the whole tree is done
                pid = None
                break
            if pid == 0:
                break
            cpu_s += usage.ru_utime + usage.ru_stime
            maxrss_kib = max(maxrss_kib, usage.ru_maxrss)
            if pid == proc.pid:
                wall_s = time.monotonic() - started
                returncode = proc.returncode = os.waitstatus_to_exitcode(status)
        if pid is None:
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


def run_variant(variant: str, args, corpus: Path, run_dir: Path, log_dir: Path) -> tuple[Measurement, dict]:
    """Run one variant in a fresh work folder (reruns must redo all the work) and measure it."""
    work = run_dir / variant
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result_path = work / "result.json"
    log_path = log_dir / f"{variant}-{size_label(args.size_mb)}mb.log"
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--size-mb",
        str(args.size_mb),
        "--workers",
        str(args.workers),
        "--variant",
        variant,
        "--work",
        str(work),
        "--corpus",
        str(corpus),
        "--result",
        str(result_path),
    ]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
    }
    print(f"running {variant} (log: {log_path})", flush=True)
    m = measure(cmd, env, log_path, args.timeout, args.stall_timeout)
    if m.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        status = {
            "timeout": f"was killed at the {args.timeout:g}s timeout",
            "stall": f"was killed: no CPU used for {args.stall_timeout:g}s (a lost datatrove task?)",
        }.get(m.killed_for, f"exited with {m.returncode}")
        raise SystemExit(f"{variant} {status} after {m.wall_s:.1f}s; last lines of {log_path}:\n{tail}")
    print(f"  {variant}: {m.wall_s:.1f}s wall", flush=True)
    return m, json.loads(result_path.read_text())


# ------------------------------------------------------------------------------ dedup score
Key = tuple[str, str]  # (source, id)


def planted_pairs(truth: dict, sources) -> list[tuple[Key, Key]]:
    """Planted exact, near and cross-source duplicate pairs among the benchmarked sources."""
    pairs = []
    for kind in ("exact_duplicates", "near_duplicates", "cross_source_duplicates"):
        for p in truth.get(kind, []):
            if p["source"] in sources and p["of_source"] in sources:
                pairs.append(((p["source"], p["id"]), (p["of_source"], p["of_id"])))
    return pairs


def planted_near_pairs(truth: dict, sources) -> list[tuple[Key, Key]]:
    """Planted near-duplicate pairs only: `near_duplicates` and the cross-source ones of kind near."""
    pairs = []
    for kind in ("near_duplicates", "cross_source_duplicates"):
        for p in truth.get(kind, []):
            if kind == "cross_source_duplicates" and p.get("kind") != "near":
                continue
            if p["source"] in sources and p["of_source"] in sources:
                pairs.append(((p["source"], p["id"]), (p["of_source"], p["of_id"])))
    return pairs


def score_dedup(
    pairs: list[tuple[Key, Key]],
    indexed: set[Key],
    survivors: set[Key],
    removed: set[Key],
    planted: set[Key] | None = None,
) -> dict:
    """Recall over planted pairs whose both documents reached dedup (a pair a filter already
    broke up says nothing about dedup); a pair counts as found unless both survive.
    Precision: the share of removed documents that belong to some planted pair."""
    scored = [(a, b) for a, b in pairs if a in indexed and b in indexed]
    found = sum(1 for a, b in scored if not (a in survivors and b in survivors))
    if planted is None:
        planted = {doc for pair in pairs for doc in pair}
    recall = found / len(scored) if scored else math.nan
    precision = len(removed & planted) / len(removed) if removed else math.nan
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "pairs_scored": len(scored),
        "pairs_found": found,
        "removed": len(removed),
        "removed_planted": len(removed & planted),
    }


def _keys(files, source=None) -> set[Key]:
    """(source, id) of every row; `source` given, or read from the JSON metadata column."""
    import pyarrow.parquet as pq

    keys = set()
    for f in files:
        if source is not None:
            keys.update((source, i) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist())
        else:
            table = pq.read_table(f, columns=["id", "metadata"])
            for i, meta in zip(table.column("id").to_pylist(), table.column("metadata").to_pylist()):
                keys.add((json.loads(meta)["source"], i))
    return keys


def ours_cluster_files(data_root: Path) -> list[Path]:
    """Our dedup fate tables: one file per source and snapshot under `dedup_index/clusters/`."""
    files = sorted((data_root / "dedup_index" / "clusters").glob("*/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no dedup cluster table under {data_root / 'dedup_index'}")
    return files


def ours_dedup_sets(data_root: Path) -> tuple[set[Key], set[Key], set[Key], set[Key]]:
    """(documents indexed for dedup, survivors, documents marked duplicate, of those the ones
    matched as near duplicates) of our run."""
    import pyarrow.parquet as pq

    rows = [
        r
        for f in ours_cluster_files(data_root)
        for r in pq.read_table(f, columns=["source", "id", "fate", "match"]).to_pylist()
    ]
    indexed = {(r["source"], r["id"]) for r in rows}
    removed = {(r["source"], r["id"]) for r in rows if r["fate"] == "duplicate"}
    removed_near = {(r["source"], r["id"]) for r in rows if r["fate"] == "duplicate" and r["match"] == "near"}
    survivors = set()
    for source in SOURCES:
        survivors |= _keys(sorted((data_root / "deduplicated" / source / "default").glob("part-*.parquet")), source)
    return indexed, survivors, removed, removed_near


def datatrove_dedup_sets(work: Path) -> tuple[set[Key], set[Key], set[Key], set[Key]]:
    """As ours_dedup_sets; datatrove only does MinHash, so everything it removes is "near"."""

    def parquet(folder: Path) -> list[Path]:
        return sorted(folder.rglob("*.parquet"))

    removed = _keys(parquet(work / "dedup_removed"))
    return _keys(parquet(work / "filtered")), _keys(parquet(work / "deduplicated")), removed, removed


def _fates(kept: list[Path], dropped: dict[str, list[Path]], source_of) -> dict[Key, tuple]:
    """(source, id) → ("kept",) or (filter, reason) from filtered and dropped shards."""
    import pyarrow.parquet as pq

    fates: dict[Key, tuple] = {}
    for f in kept:
        table = pq.read_table(f, columns=["id", "metadata"])
        for i, meta in zip(table.column("id").to_pylist(), table.column("metadata").to_pylist()):
            fates[(source_of(f, meta), i)] = ("kept",)
    for name, files in dropped.items():
        for f in files:
            table = pq.read_table(f, columns=["id", "metadata"])
            for i, meta in zip(table.column("id").to_pylist(), table.column("metadata").to_pylist()):
                fates[(source_of(f, meta), i)] = (name, json.loads(meta or "{}").get("filter_reason"))
    return fates


def filter_agreement(run_dir: Path) -> dict:
    """Document by document, ours' filter fates against datatrove's own filters on the same
    input: the share with the same decision (kept, or dropped by the same filter for the same
    reason), over the documents both variants filtered."""
    ours_root, dt_root = run_dir / "ours" / "data", run_dir / "datatrove"
    ours_kept = sorted((ours_root / "filtered").glob("*/default/part-*.parquet"))
    ours_dropped: dict[str, list[Path]] = {}
    for f in sorted((ours_root / "dropped").glob("*/default/*/part-*.parquet")):
        ours_dropped.setdefault(f.parent.name, []).append(f)
    dt_dropped: dict[str, list[Path]] = {}
    for f in sorted((dt_root / "dropped").glob("*/*/*.parquet")):
        dt_dropped.setdefault(f.parent.name, []).append(f)

    def ours_source(f: Path, meta) -> str:  # .../<stage>/<source>/default[/<filter>]/part-*.parquet
        parts = f.relative_to(ours_root).parts
        return parts[1]

    def dt_source(f: Path, meta) -> str:
        return json.loads(meta)["source"]

    ours = _fates(ours_kept, ours_dropped, ours_source)
    theirs = _fates(sorted((dt_root / "filtered").rglob("*.parquet")), dt_dropped, dt_source)
    both = ours.keys() & theirs.keys()
    same = sum(1 for k in both if ours[k] == theirs[k])
    differ: dict[str, int] = {}
    for k in both:
        if ours[k] != theirs[k]:
            label = f"{'/'.join(map(str, theirs[k]))} -> {'/'.join(map(str, ours[k]))}"
            differ[label] = differ.get(label, 0) + 1
    return {
        "documents": len(both),
        "same": same,
        "agreement": same / len(both) if both else math.nan,
        "only_ours": len(ours.keys() - theirs.keys()),
        "only_datatrove": len(theirs.keys() - ours.keys()),
        "differences": dict(sorted(differ.items(), key=lambda kv: -kv[1])[:10]),
    }


def per_source(keys: set[Key]) -> dict[str, int]:
    return {s: sum(1 for k in keys if k[0] == s) for s in SOURCES}


# ----------------------------------------------------------------------------------- report
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


def run_scale(args, out: Path, log_dir: Path) -> tuple[Measurement, float]:
    """Ours alone at size_mb / scale, for the memory-growth ratio."""
    small = argparse.Namespace(**vars(args))
    small.size_mb = args.size_mb / args.scale
    corpus, truth = ensure_corpus(out, small.size_mb)
    m, result = run_variant("ours", small, corpus, out / f"run-{size_label(small.size_mb)}mb", log_dir)
    return m, small.size_mb, result, corpus_text_mb(truth)


def corpus_text_mb(truth: dict) -> float:
    return sum(truth["counts"][s]["bytes"] for s in SOURCES) / 1e6


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


def main(args) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    label = size_label(args.size_mb)
    corpus, truth = ensure_corpus(out, args.size_mb)
    text_mb = corpus_text_mb(truth)
    docs = sum(truth["counts"][s]["documents"] for s in SOURCES)
    if not become_subreaper():
        print("warning: cannot become a child subreaper; CPU of orphaned worker processes is not counted")
    run_dir, log_dir = out / f"run-{label}mb", out / "logs"
    log_dir.mkdir(exist_ok=True)

    measurements, results = {}, {}
    if args.ours_only:
        return print_ours_only(*run_variant("ours", args, corpus, run_dir, log_dir), text_mb)
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

    pairs = planted_pairs(truth, SOURCES)
    near_pairs = planted_near_pairs(truth, SOURCES)
    dedup_sets = {
        "ours": ours_dedup_sets(run_dir / "ours" / "data"),
        "datatrove": datatrove_dedup_sets(run_dir / "datatrove"),
    }
    dedup = {v: score_dedup(pairs, *sets[:3]) for v, sets in dedup_sets.items()}
    # Near duplicates only: recall over planted near pairs; precision over what was removed as
    # near, where removing a document of any planted pair is right (an exact copy whose cluster
    # survivor is a near match is reported as `near`).
    planted_docs = {doc for pair in pairs for doc in pair}
    near = {v: score_dedup(near_pairs, sets[0], sets[1], sets[3], planted_docs) for v, sets in dedup_sets.items()}
    rows = {v: variant_row(measurements[v], text_mb, docs, dedup[v]) for v in measurements}
    ratio = ratio_row(rows["ours"], rows["datatrove"])
    numbers = summary(rows, results, measurements, near, scale)
    # The throughput targets (issue 15), next to the fixed head of the last line.
    cpu_per_mb = measurements["ours"].cpu_s / text_mb
    small_cpu_per_mb = scale["small_cpu_s"] / scale["small_text_mb"] if scale else math.nan
    head = {k: numbers.pop(k) for k in list(numbers) if k in LAST_LINE_DIGITS}
    numbers = head | {
        "cpu_ratio": numbers.pop("cpu_ratio"),
        "mb_s_core": text_mb / measurements["ours"].cpu_s,
        "filter_agreement": agreement["agreement"],
        "cpu_s_per_mb": cpu_per_mb,
        "small_cpu_s_per_mb": small_cpu_per_mb,
        "cpu_per_mb_growth": cpu_per_mb / small_cpu_per_mb if scale else math.nan,
    } | numbers

    print(
        f"\nbench_pipeline: {label} MB corpus; sources {', '.join(SOURCES)}: {text_mb:.1f} MB text, {docs:,} docs; "
        f"tasks={TASKS} workers={args.workers}; {os.cpu_count()} CPUs; load average before/after "
        f"{args.load_before} / {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print_table(rows, ratio)
    for variant in ("ours", "datatrove"):
        print_stages(variant, measurements[variant].wall_s, results[variant])
    print_neardup(results, numbers)
    filtered = {v: per_source(sets[0]) for v, sets in dedup_sets.items()}
    same = filtered["ours"] == filtered["datatrove"]
    print(
        f"\ndocuments after filtering (dedup input): ours {filtered['ours']}, datatrove {filtered['datatrove']}"
        f"{'' if same else '  <-- DIFFERENT: the variants did not filter identically'}"
    )
    for v in ("ours", "datatrove"):
        d, n = dedup[v], near[v]
        print(
            f"dedup {v}: removed {d['removed']} ({d['removed_planted']} planted); "
            f"found {d['pairs_found']} of {d['pairs_scored']} planted pairs that reached dedup; "
            f"near only: removed {n['removed']} ({n['removed_planted']} planted), found {n['pairs_found']} of "
            f"{n['pairs_scored']} planted near pairs: recall {fmt_num(n['recall'], 3)} precision "
            f"{fmt_num(n['precision'], 3)} f1 {fmt_num(n['f1'], 3)}"
        )
    runs = [(f"{label} MB", text_mb, results["ours"], measurements["ours"].cpu_s)]
    if scale:
        runs.append((f"{size_label(scale['small_size_mb'])} MB", scale["small_text_mb"], small_result, scale["small_cpu_s"]))
    print_stage_throughput(runs)
    print(
        f"filter decisions vs datatrove's filters: {agreement['same']} of {agreement['documents']} documents "
        f"the same ({fmt_num(agreement['agreement'] * 100, 2)}%); only in ours {agreement['only_ours']}, "
        f"only in datatrove {agreement['only_datatrove']}; differences (datatrove -> ours): {agreement['differences']}"
    )
    if scale:
        print(
            f"memory growth: ours peak tree PSS {scale['small_peak_rss_mb']:.0f} MiB at {size_label(scale['small_size_mb'])} MB, "
            f"{rows['ours']['peak_rss_mb']:.0f} MiB at {label} MB: rss_ratio {scale['rss_ratio']:.2f}"
        )
    for m_name, m in measurements.items():
        if m.lingering:
            print(f"warning: {m_name} left {m.lingering} process(es) running {GRACE_S:g}s after exiting; killed")
    print("notes:\n" + "\n".join(f"  - {n}" for n in NOTES))

    report = {
        "size_mb": args.size_mb,
        "workers": args.workers,
        "tasks": TASKS,
        "cpus": os.cpu_count(),
        "load_average_before": args.load_before,
        "sources": list(SOURCES),
        "input_text_mb": text_mb,
        "input_documents": docs,
        "summary": numbers,
        "variants": rows,
        "ratio_ours_over_datatrove": ratio,
        "measurements": {v: asdict(m) for v, m in measurements.items()},
        "stages": {v: results[v]["stages"] for v in results},
        "stage_cpu_s": {v: results[v]["stage_cpu_s"] for v in results},
        "dagster_steps": results["ours"].get("dagster_steps"),
        "pipeline_s": {v: results[v]["pipeline_s"] for v in results},
        "dedup": dedup,
        "near_dedup": near,
        "scale": scale,
        "filtered_documents": filtered,
        "filter_agreement": agreement,
        "small_stage_cpu_s": small_result["stage_cpu_s"] if small_result else None,
        "notes": NOTES,
    }
    report_path = out / f"bench-{label}mb.json"
    report_path.write_text(json.dumps(json_safe(report), indent=2) + "\n")
    print(f"json: {report_path}")
    print(last_line(args.size_mb, numbers))
    return 0


def print_ours_only(m: Measurement, result: dict, text_mb: float) -> int:
    """`--ours-only`: our variant's whole-tree CPU, peak memory and CPU per stage, to compare
    commits quickly (no datatrove run, no ratios)."""
    stages = " ".join(f"{name}={seconds:.1f}" for name, seconds in result["stage_cpu_s"].items())
    print(f"ours_cpu_s={m.cpu_s:.1f} mb_s_core={text_mb / m.cpu_s:.2f} peak_rss_mb={m.peak_rss_mb:.0f} "
          f"ours_wall_s={m.wall_s:.1f} stage_cpu_s: {stages}")
    return m.returncode


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
