"""The stages as plain functions: read → filter → dedup index → deduplicate → mix.

Each function runs its datatrove pipeline through the `runner` it is given (local processes by
default; the Dagster layer passes the configured executor), writes into a hidden staging folder
and publishes the whole partition at the end, then returns the numbers the catalog and the UI
show. Nothing here imports Dagster.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline.core import logs as _datatrove_logs  # noqa: F401  (quiet datatrove's terminal echo)
from mix_pipeline.core import quality
from mix_pipeline.core.comparison import read_manifests, write_comparison
from mix_pipeline.core.dedup import DropDuplicates, SignatureWriter, cluster_signatures
from mix_pipeline.core.documents import (
    DEDUPLICATED_SCHEMA,
    list_parts,
    normalise_shard_names,
    parquet_writer,
    partition_dir,
    publish_dir,
    staging_dir,
)
from mix_pipeline.core.exports import TOKENIZED_DIR, read_idx, tokenized_prefix, write_exports
from mix_pipeline.core.filters import build_filter, is_dropping
from mix_pipeline.core.mixing import (
    SPLITS,
    InfeasibleMixture,
    build_manifest,
    load_pool,
    manifest_text,
    output_digest,
    plan_mixture,
    read_survivors,
    write_mixture,
)
from mix_pipeline.core.quality import CheckOutcome, GateFailed
from mix_pipeline.core.readers import SourceReader
from mix_pipeline.core.tokens import CountTokens, TokenCounter
from mix_pipeline.names import DEFAULT_SNAPSHOT
from mix_pipeline.recipe import Recipe, RecipeError

# (pipeline, logging_dir, tasks) → None
PipelineRunner = Callable[[list, str, int], None]


def local_runner(workers: int | None = None) -> PipelineRunner:
    """datatrove's LocalPipelineExecutor; `workers` processes (default: all cores)."""

    def run(pipeline: list, logging_dir: str, tasks: int) -> None:
        from datatrove.executor import LocalPipelineExecutor

        n_workers = max(1, min(workers or os.cpu_count() or 1, tasks))
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=n_workers,
            logging_dir=logging_dir,
            # Reruns must redo the work: outputs are replaced whole, never appended to.
            skip_completed=False,
        ).run()

    return run


@dataclass
class StageResult:
    """What a stage reports: its numbers and the outcome of each of its quality checks."""

    stats: dict
    checks: list[CheckOutcome] = field(default_factory=list)


def _gate(stage: str, checks: list[CheckOutcome], staged: list[str]) -> None:
    """Discard the staged output and raise if an error-severity check failed."""
    if any(c.blocks for c in checks):
        for path in staged:
            shutil.rmtree(path, ignore_errors=True)
        raise GateFailed(stage, checks)


@dataclass
class StageEnv:
    recipe: Recipe
    runner: PipelineRunner = field(default_factory=local_runner)
    log: Callable[[str], None] = print

    @property
    def root(self) -> str:
        return self.recipe.data_root_path

    def dir(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def logging_dir(self, *parts: str) -> str:
        path = self.dir("_work", "logs", *parts)
        shutil.rmtree(path, ignore_errors=True)
        return path

    def tasks_for(self, n_inputs: int) -> int:
        return max(1, min(self.recipe.executor.tasks, n_inputs))


class ShardReader(PipelineStep):
    """Reads our own Parquet shards back into Documents (rank r reads files[r::N])."""

    type = "📖 - READER"
    name = "📒 Stage shards"

    def __init__(self, files: list[str], batch_size: int = 1000):
        super().__init__()
        self.files = files
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import json

        for path in self.files[rank::world_size]:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_size):
                for row in batch.to_pylist():
                    meta = json.loads(row.pop("metadata") or "{}")
                    doc = Document(text=row.pop("text"), id=row.pop("id"), metadata=meta | row)
                    self.update_doc_stats(doc)
                    yield doc


def _rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ---- raw ---------------------------------------------------------------------------------
def run_raw(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    recipe, spec = env.recipe, env.recipe.sources[source]
    files = recipe.source_files(source)
    if not files:
        raise RecipeError(
            f"source '{source}': path '{spec.path}' matches no file (resolved to {recipe.resolve(spec.path)})"
        )
    raw_final = partition_dir(env.root, "raw", source, snapshot)
    quarantine_final = partition_dir(env.root, "quarantine", source, snapshot)
    raw_tmp, quarantine_tmp = staging_dir(raw_final), staging_dir(quarantine_final)
    env.log(f"raw[{source}]: reading {len(files)} file(s) as {spec.format}")
    reader = SourceReader(
        files=files,
        root=recipe.source_root(source),
        source=source,
        domain=recipe.domain_of(source),
        fmt=spec.format,
        text_field=spec.text_field,
        id_field=spec.id_field,
        quarantine_writer=parquet_writer(quarantine_tmp),
    )
    env.runner([reader, parquet_writer(raw_tmp)], env.logging_dir("raw", source, snapshot), env.tasks_for(len(files)))
    raw_parts = normalise_shard_names(raw_tmp)
    quarantine_parts = normalise_shard_names(quarantine_tmp)
    stats = {"input_files": len(files), "documents": _rows(raw_parts), "quarantined": _rows(quarantine_parts)}
    stats["records"] = stats["documents"] + stats["quarantined"]
    env.log(f"raw[{source}]: {stats['documents']} documents, {stats['quarantined']} quarantined")
    checks = quality.raw_checks(raw_parts, quarantine_parts, spec.checks)
    _gate(f"raw_documents[{source}]", checks, [raw_tmp, quarantine_tmp])
    publish_dir(raw_tmp, raw_final)
    publish_dir(quarantine_tmp, quarantine_final)
    return StageResult(stats, checks)


# ---- filtered ----------------------------------------------------------------------------
def run_filtered(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    spec = env.recipe.sources[source]
    inputs = list_parts(partition_dir(env.root, "raw", source, snapshot))
    out_final = partition_dir(env.root, "filtered", source, snapshot)
    dropped_final = partition_dir(env.root, "dropped", source, snapshot)
    out_tmp, dropped_tmp = staging_dir(out_final), staging_dir(dropped_final)
    steps: list = [ShardReader(inputs)]
    for f in spec.filters:
        writer = parquet_writer(os.path.join(dropped_tmp, f.name)) if is_dropping(f.name) else None
        steps.append(build_filter(f.name, f.params, exclusion_writer=writer))
    steps.append(parquet_writer(out_tmp))
    env.log(f"filtered[{source}]: {len(inputs)} shard(s) through {[f.name for f in spec.filters] or 'no filters'}")
    if inputs:
        env.runner(steps, env.logging_dir("filtered", source, snapshot), env.tasks_for(len(inputs)))
    kept = normalise_shard_names(out_tmp)
    dropped, dropped_parts = {}, {}
    for f in spec.filters:
        if is_dropping(f.name):
            folder = os.path.join(dropped_tmp, f.name)
            dropped_parts[f.name] = normalise_shard_names(folder) if os.path.isdir(folder) else []
            dropped[f.name] = _rows(dropped_parts[f.name])
    stats = {"input_documents": _rows(inputs), "documents": _rows(kept), "dropped": sum(dropped.values())}
    stats.update({f"dropped_by_{name}": n for name, n in dropped.items()})
    env.log(f"filtered[{source}]: kept {stats['documents']} of {stats['input_documents']}, dropped {dropped}")
    language = next((f for f in spec.filters if f.name == "language"), None)
    checks = quality.filtered_checks(
        stats["input_documents"],
        kept,
        list(dropped.items()),
        dropped_parts,
        language.params.get("languages", ["en"]) if language else None,
        spec.checks,
    )
    _gate(f"filtered_documents[{source}]", checks, [out_tmp, dropped_tmp])
    publish_dir(out_tmp, out_final)
    publish_dir(dropped_tmp, dropped_final)
    return StageResult(stats, checks)


def dropped_files(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> dict[str, list[str]]:
    base = partition_dir(env.root, "dropped", source, snapshot)
    return {
        f.name: list_parts(os.path.join(base, f.name))
        for f in env.recipe.sources[source].filters
        if is_dropping(f.name)
    }


# ---- dedup index -------------------------------------------------------------------------
def clusters_path(env: StageEnv) -> str:
    return env.dir("dedup_index", "clusters.parquet")


def run_dedup_index(env: StageEnv, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    recipe = env.recipe
    dd = recipe.dedup
    mh = dd.minhash
    final = env.dir("dedup_index")
    tmp = staging_dir(final)
    sig_files: list[str] = []
    for source in sorted(recipe.sources):
        inputs = list_parts(partition_dir(env.root, "filtered", source, snapshot))
        if not inputs:
            env.log(f"dedup_index: source '{source}' has no filtered documents")
            continue
        out = os.path.join(tmp, "signatures", source, snapshot)
        writer = SignatureWriter(
            out,
            source=source,
            num_perm=mh.num_perm if mh else 16,
            bands=mh.bands if mh else 1,
            ngram=mh.ngram if mh else 5,
            seed=mh.seed if mh else 1,
        )
        env.log(f"dedup_index: signatures of {source} ({len(inputs)} shard(s))")
        env.runner([ShardReader(inputs), writer], env.logging_dir("dedup_index", source), env.tasks_for(len(inputs)))
        sig_files += sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".parquet"))
    ranks = {source: recipe.priority_rank(source) for source in recipe.sources}
    stats = cluster_signatures(
        sig_files,
        ranks,
        os.path.join(tmp, "clusters.parquet"),
        threshold=mh.threshold if mh else None,
        exact=dd.exact,
        duckdb_temp_dir=env.dir("_work", "duckdb"),
        log=env.log,
        remove=dd.remove,
    )
    checks = quality.dedup_index_checks(os.path.join(tmp, "clusters.parquet"), dd.checks)
    _gate("dedup_index", checks, [tmp])
    publish_dir(tmp, final)
    return StageResult(asdict(stats), checks)


# ---- deduplicated ------------------------------------------------------------------------
class StaleDedupIndex(RuntimeError):
    pass


def run_deduplicated(env: StageEnv, source: str, snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    recipe = env.recipe
    inputs = list_parts(partition_dir(env.root, "filtered", source, snapshot))
    clusters = clusters_path(env)
    if not os.path.exists(clusters):
        raise StaleDedupIndex("dedup_index has not been materialized yet")
    indexed = pq.read_table(clusters, columns=["source"], filters=[("source", "=", source)]).num_rows
    if indexed != _rows(inputs):
        raise StaleDedupIndex(
            f"dedup_index lists {indexed} documents of '{source}' but filtered_documents[{source}] has "
            f"{_rows(inputs)}: materialize dedup_index again before deduplicated_documents"
        )
    final = partition_dir(env.root, "deduplicated", source, snapshot)
    tmp = staging_dir(final)
    tok = recipe.tokenizer
    steps = [
        ShardReader(inputs),
        DropDuplicates(clusters, source),
        CountTokens(tok.kind, recipe.resolve(tok.path) if tok.path else None),
        parquet_writer(tmp, schema=DEDUPLICATED_SCHEMA),
    ]
    if inputs:
        env.runner(steps, env.logging_dir("deduplicated", source, snapshot), env.tasks_for(len(inputs)))
    parts = normalise_shard_names(tmp)
    tokens = sum(int(pc.sum(pq.read_table(p, columns=["n_tokens"])["n_tokens"]).as_py() or 0) for p in parts)
    stats = {"input_documents": _rows(inputs), "documents": _rows(parts), "tokens": tokens}
    stats["duplicates"] = stats["input_documents"] - stats["documents"]
    env.log(f"deduplicated[{source}]: kept {stats['documents']} of {stats['input_documents']} ({tokens} tokens)")
    checks = quality.deduplicated_checks(stats["input_documents"], stats["documents"], recipe.sources[source].checks)
    _gate(f"deduplicated_documents[{source}]", checks, [tmp])
    publish_dir(tmp, final)
    return StageResult(stats, checks)


# ---- mixture -----------------------------------------------------------------------------
def mixture_dir(env: StageEnv, name: str) -> str:
    return env.dir("mixtures", name)


class SourceRowsReader(PipelineStep):
    """Reads the rows of one source from mixture shards: rank r reads `sources[r]`, in shard order."""

    type = "📖 - READER"
    name = "📒 Mixture rows of one source"

    def __init__(self, files: list[str], sources: list[str]):
        super().__init__()
        self.files = files
        self.sources = sources

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        source = self.sources[rank]
        for path in self.files:
            table = pq.read_table(path, columns=["id", "text", "source"], filters=[("source", "=", source)])
            for batch in table.to_batches(1000):
                for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                    doc = Document(text=text, id=doc_id, metadata={"source": source})
                    self.update_doc_stats(doc)
                    yield doc


def tokenize_splits(env: StageEnv, name: str, out_dir: str, splits: dict[str, dict], sources: list[str]) -> None:
    """Per split, one Megatron indexed dataset per source (datatrove's MegatronDocumentTokenizer with
    the recipe's local tokenizer.json), recorded in `splits[split]["tokenized"]`."""
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer

    tok = env.recipe.tokenizer
    for split in SPLITS:
        info = splits[split]
        present = [s for s in sources if info["sources"][s]["rows"]]
        if not present:
            info["tokenized"] = {}
            continue
        folder = os.path.join(out_dir, TOKENIZED_DIR, split)
        steps = [
            SourceRowsReader([os.path.join(out_dir, f) for f in info["files"]], present),
            MegatronDocumentTokenizer(folder, tokenizer_name_or_path=env.recipe.resolve(tok.path),
                                      eos_token=tok.eos_token),
        ]
        env.runner(steps, env.logging_dir("mixture", name, "tokenize", split), len(present))
        info["tokenized"] = {}
        for rank, source in enumerate(present):
            prefix = tokenized_prefix(split, source)
            for ext in (".bin", ".idx"):
                os.replace(os.path.join(folder, f"{rank:05d}_tokens{ext}"), os.path.join(out_dir, prefix + ext))
            info["tokenized"][source] = {"prefix": prefix, **read_idx(os.path.join(out_dir, prefix + ".idx"))}
        env.log(f"mixture[{name}]: {split}: tokenized {sum(e['tokens'] for e in info['tokenized'].values()):,} tokens")


def run_mixture(env: StageEnv, name: str, conservation_rows: list[dict] | None = None,
                snapshot: str = DEFAULT_SNAPSHOT) -> StageResult:
    """Plan, write to staging, check, publish. `conservation_rows` come from the catalog."""
    recipe = env.recipe
    spec = recipe.mixtures[name]
    sources = recipe.mixture_sources(name)
    files = {s: list_parts(partition_dir(env.root, "deduplicated", s, snapshot)) for s in sources}
    clusters = clusters_path(env)
    pools = {s: load_pool(s, fs, spec.unit, read_survivors(clusters, s)) for s, fs in files.items()}
    try:
        plan = plan_mixture(name, spec, pools)
    except InfeasibleMixture as exc:
        # Nothing can be written, whatever the check's configured severity.
        raise GateFailed(
            f"mixture[{name}]",
            [quality.outcome("weights_within_tolerance", "error", False, None, "a feasible plan", str(exc))],
        ) from None
    if plan.rebalanced:
        env.log(f"mixture[{name}]: rebalanced shortfalls {plan.rebalanced} onto the other sources")
    env.log(f"mixture[{name}]: selected {plan.selection.num_rows} rows from {len(files)} source(s)")
    final = mixture_dir(env, name)
    tmp = staging_dir(final)
    chat = [s for s in sources if recipe.sources[s].format == "chat"]
    splits = write_mixture(plan.selection, files, tmp, spec.shard_rows, env.dir("_work", "duckdb"),
                           chat_sources=chat, jsonl=spec.outputs.jsonl, log=env.log)
    if spec.outputs.tokenized:
        tokenize_splits(env, name, tmp, splits, sources)
    tok = recipe.tokenizer
    counter = TokenCounter(tok.kind, recipe.resolve(tok.path) if tok.path else None)
    exports = write_exports(tmp, name, spec.seed, splits, counter.token_dtype)
    manifest = build_manifest(name, spec, recipe.sha256, counter.description, plan, splits,
                              output_digest(tmp, splits), exports)
    checks = quality.mixture_checks(
        [{"source": s, **row} for s, row in sorted(manifest["sources"].items())],
        {s: spec.max_epochs_of(s) for s in sources},
        spec.tolerance,
        tmp,
        splits,
        [s for s in sources if any(f.name == "pii" for f in recipe.sources[s].filters)],
        [r for r in conservation_rows or [] if r["source"] in sources] if conservation_rows is not None else None,
        spec.checks,
    )
    _gate(f"mixture[{name}]", checks, [tmp])
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        f.write(manifest_text(manifest))
    publish_dir(tmp, final)
    return StageResult(manifest, checks)


def run_comparison(env: StageEnv) -> dict:
    """comparison.{json,md} over every mixture of the recipe that has been built."""
    folder = env.dir("mixtures")
    manifests, missing = read_manifests(folder, sorted(env.recipe.mixtures))
    doc = write_comparison(folder, manifests, missing)
    env.log(f"comparison: {len(manifests)} mixture(s) in {os.path.join(folder, 'comparison.md')}"
            + (f"; not built: {missing}" if missing else ""))
    return doc
