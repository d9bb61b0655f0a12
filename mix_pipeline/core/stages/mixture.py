"""The `mixture` stage: one named mixture planned from the deduplicated documents (core/mixing/:
pools, allocation under caps, deterministic sampling), written as train/validation/test shards with
trainer exports, checked, given its manifest, published whole, and recorded (ledger in the catalog,
dataset card beside the manifest).

Everything that holds per-document data runs as executor tasks (`env.runner`): planning
(`PlanMixture`: pools, plan, selection table) and writing with the read-back of what was written
(`WriteMixtureSplits`: shards, license counts, the PII search), then tokenizing (`SourceRowsReader`).
They hand the driver small JSON results under data_root's _work; the driver builds the exports and
manifest from them, runs the remaining checks on a bounded DuckDB, gates, publishes and records.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass

import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline import layout
from mix_pipeline.core.filters.pii import pii_kinds
from mix_pipeline.core.filters.quality_recipe import base_source
from mix_pipeline.core.filters.registry import PII
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.gates.checks import GateFailed
from mix_pipeline.core.io.documents import duckdb_scratch, list_parts, publish_dir, staging_dir
from mix_pipeline.core.io.faults import crash_point
from mix_pipeline.core.io.integrity import require_intact, seal
from mix_pipeline.core.mixing.dataset_card import write_dataset_card
from mix_pipeline.core.mixing.exports import TOKENIZED_DIR, read_idx, tokenized_prefix, write_exports
from mix_pipeline.core.mixing.licenses import add_counts, license_counts, restrict_licenses, shares_of
from mix_pipeline.core.mixing.manifest import build_manifest, manifest_text, output_digest
from mix_pipeline.core.mixing.pools import load_pool, read_survivors
from mix_pipeline.core.mixing.quality_buckets import bucket_pool, manifest_buckets, mixture_files
from mix_pipeline.core.mixing.selection import Plan, SourceLedger, plan_mixture
from mix_pipeline.core.mixing.splits import SPLITS
from mix_pipeline.core.mixing.tokens import TokenCounter
from mix_pipeline.core.mixing.weights import InfeasibleMixture
from mix_pipeline.core.mixing.writer import write_split
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.provenance.lineage import published_partitions
from mix_pipeline.core.provenance.trace import sample_rows_markdown
from mix_pipeline.core.stages.base import StageEnv, StageResult, gate, read_result, scratch_in_data_root, write_result
from mix_pipeline.names import DEDUPLICATED, MIXTURE


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
        env.runner(steps, env.logging_dir(MIXTURE, name, "tokenize", split), len(present))
        info["tokenized"] = {}
        for rank, source in enumerate(present):
            prefix = tokenized_prefix(split, source)
            for ext in (".bin", ".idx"):
                os.replace(os.path.join(folder, f"{rank:05d}_tokens{ext}"), os.path.join(out_dir, prefix + ext))
            info["tokenized"][source] = {"prefix": prefix, **read_idx(os.path.join(out_dir, prefix + ".idx"))}
        env.log(f"mixture[{name}]: {split}: tokenized {sum(e['tokens'] for e in info['tokenized'].values()):,} tokens")


def deduplicated_files(env: StageEnv, source: str) -> list[str]:
    """Every discovered snapshot's deduplicated shards of a source, in generation order."""
    snapshots = [snap for _, snap in published_partitions(env.recipe, layout.DEDUPLICATED_DIR, [source])]
    for snap in snapshots:
        require_intact(env.root, DEDUPLICATED, source, snap)
    return [p for snap in snapshots for p in list_parts(layout.partition_dir(env.root, layout.DEDUPLICATED_DIR, source, snap))]


def export_weights(ledger) -> dict[str, float]:
    """Trainers weigh sources by tokens: each source's target weight (in the mixture's unit) times
    the tokens per unit of what it supplied (1 when the unit is tokens)."""
    return {row.source: row.target_weight * (row.tokens / row.units if row.units else 0.0) for row in ledger}


@dataclass
class MixtureInputs:
    """What a mixture draws from: each of its sources' deduplicated shards (what allowed_licenses
    leaves of them), each source's base source (a quality bucket `web@high` has `web`), the
    license settings by base source, and what allowed_licenses left out (None without it)."""

    sources: list[str]
    files: dict[str, list[str]]
    base: dict[str, str]
    license_specs: dict
    license_filter: dict | None


def license_specs_of(recipe, sources: list[str]) -> dict:
    """License settings by the `source` column of the rows (a bucket's rows carry its base source)."""
    return {base_source(s): recipe.sources[base_source(s)] for s in sources}


def pii_sources_of(recipe, sources: list[str]) -> dict[str, tuple[str, ...]]:
    """Each base source of `sources` whose filters redact PII, with the kinds they redact."""
    return {base_source(s): pii_kinds(f.params) for s in sources for f in recipe.sources[base_source(s)].filters
            if f.name == PII}


def mixture_inputs(recipe, name: str, root: str, dedup_files: dict[str, list[str]], log) -> MixtureInputs:
    """The mixture's inputs from its base sources' deduplicated shards (`dedup_files`): quality
    buckets cut into their own shards and allowed_licenses applied, under data_root's _work."""
    spec = recipe.mixtures[name]
    sources = recipe.mixture_sources(name)
    # A quality bucket (`web@high`) draws from its source's documents in the bucket's score range.
    files = mixture_files(recipe, name, sources, dedup_files.__getitem__, layout.work_dir(root))
    license_specs = license_specs_of(recipe, sources)
    license_filter = None
    if spec.allowed_licenses is not None:
        files, license_filter = restrict_licenses(files, license_specs, spec.allowed_licenses,
                                                  layout.work_dir(root, "licenses", name))
        log(f"mixture[{name}]: allowed_licenses left out {license_filter['excluded_documents']} document(s), "
            f"{license_filter['excluded_tokens']} token(s)")
    return MixtureInputs(sources, files, {s: base_source(s) for s in sources}, license_specs, license_filter)


# What `PlanMixture` leaves for the driver in the mixture's work folder.
PLAN_RESULT = "plan.json"


def selection_file(work: str, split: str) -> str:
    return os.path.join(work, f"selection-{split}.parquet")


def split_result_file(work: str, split: str) -> str:
    return os.path.join(work, f"split-{split}.json")


def plan_selection(recipe, name: str, root: str, dedup_files: dict[str, list[str]], work: str) -> dict:
    """Plan the mixture over its sources' pools and write its selection into `work`, one file per
    split; returns what the driver needs (the ledger, the files drawn from, log lines), or the
    infeasible plan's one-line reason."""
    spec, lines = recipe.mixtures[name], []
    inputs = mixture_inputs(recipe, name, root, dedup_files, lines.append)
    pools = {
        s: bucket_pool(load_pool(inputs.base[s], fs, spec.unit, read_survivors(
            layout.cluster_files(root, inputs.base[s]), inputs.base[s])), s)
        for s, fs in inputs.files.items()
    }
    try:
        plan = plan_mixture(name, spec, pools)
    except InfeasibleMixture as exc:
        return {"infeasible": str(exc), "log": lines}
    del pools
    for split in SPLITS:
        pq.write_table(plan.selection.filter(pc.equal(plan.selection["split"], split)), selection_file(work, split))
    if plan.rebalanced:
        lines.append(f"mixture[{name}]: rebalanced shortfalls {plan.rebalanced} onto the other sources")
    lines.append(f"mixture[{name}]: selected {plan.selection.num_rows} rows from {len(inputs.files)} source(s)")
    return {"files": inputs.files, "license_filter": inputs.license_filter, "ledger": [asdict(r) for r in plan.ledger],
            "weighting": plan.weighting, "rebalanced": plan.rebalanced, "log": lines}


class PlanMixture(PipelineStep):
    """A mixture's planning as an executor task (run as one task): its pools (per-document arrays),
    the plan and its selection table live in the task, which writes the selection into `work`
    (one file per split, for `WriteMixtureSplits`) and `work/plan.json` (`plan_selection`'s
    result). So the driver (the CLI or Dagster step) holds none of them, however large the corpus."""

    type = "🍹 - MIXTURE"
    name = "🧮 Plan a mixture"

    def __init__(self, recipe, mixture: str, root: str, dedup_files: dict[str, list[str]], work: str):
        super().__init__()
        self.recipe, self.mixture, self.root, self.dedup_files, self.work = recipe, mixture, root, dedup_files, work

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with duckdb_scratch(layout.work_dir(self.root, "duckdb")):
            result = plan_selection(self.recipe, self.mixture, self.root, self.dedup_files, self.work)
        write_result(os.path.join(self.work, PLAN_RESULT), result)
        return
        yield  # a generator that yields nothing: this step is the whole pipeline


def write_one_split(recipe, name: str, root: str, files: dict[str, list[str]], out_dir: str, work: str,
                    split: str) -> dict:
    """Write one split of a planned mixture into `out_dir` (its staging folder), then read its
    shards back for what the driver reports and checks: each license's rows and units, and the
    documents with PII left. Returns those, the split's summary and log lines."""
    spec, sources, lines = recipe.mixtures[name], recipe.mixture_sources(name), []
    chat = sorted({base_source(s) for s in sources if recipe.sources[base_source(s)].format == "chat"})
    summary = write_split(split, pq.read_table(selection_file(work, split)), files, out_dir, spec.shard_rows,
                          layout.work_dir(root, "duckdb"), chat_sources=chat, jsonl=spec.outputs.jsonl, log=lines.append)
    written = [os.path.join(out_dir, f) for f in summary["files"]]
    licenses = license_counts(written, license_specs_of(recipe, sources), spec.unit)
    con = quality.bounded_connection()
    try:
        pii = quality.pii_hits(con, written, pii_sources_of(recipe, sources))
    finally:
        con.close()
    return {"summary": summary, "licenses": licenses, "pii_hits": pii, "log": lines}


class WriteMixtureSplits(PipelineStep):
    """A planned mixture's shards as executor tasks: rank r of N writes splits SPLITS[r::N]
    (`write_one_split`) from the selection `PlanMixture` left in `work`, and each split's result
    to `work/split-<split>.json`. A split's bytes do not depend on which task wrote it."""

    type = "🍹 - MIXTURE"
    name = "✍️ Write a mixture's splits"

    def __init__(self, recipe, mixture: str, root: str, files: dict[str, list[str]], out_dir: str, work: str):
        super().__init__()
        self.recipe, self.mixture, self.root, self.files, self.out_dir, self.work = recipe, mixture, root, files, out_dir, work

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with duckdb_scratch(layout.work_dir(self.root, "duckdb")):
            for split in SPLITS[rank::world_size]:
                result = write_one_split(self.recipe, self.mixture, self.root, self.files, self.out_dir, self.work, split)
                write_result(split_result_file(self.work, split), result)
        return
        yield  # a generator that yields nothing: this step is the whole pipeline


def plan_in_task(env: StageEnv, name: str, work: str) -> dict:
    """Run `PlanMixture` through the executor and return its result; an infeasible plan fails the
    stage's gate with its one-line reason."""
    sources = env.recipe.mixture_sources(name)
    dedup_files = {b: deduplicated_files(env, b) for b in sorted({base_source(s) for s in sources})}
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env.runner([PlanMixture(env.recipe, name, env.root, dedup_files, work)], env.logging_dir(MIXTURE, name, "plan"), 1)
    result = read_result(os.path.join(work, PLAN_RESULT))
    for line in result["log"]:
        env.log(line)
    if "infeasible" in result:
        # Nothing can be written, whatever the check's configured severity.
        raise GateFailed(
            f"mixture[{name}]",
            [quality.outcome("weights_within_tolerance", "error", False, None, "a feasible plan", result["infeasible"])],
        )
    return result


def write_staged(env: StageEnv, name: str, planned: dict, work: str, tmp: str, final: str) -> tuple[dict, dict, list]:
    """Write the mixture's shards (`WriteMixtureSplits`: one task per split on a cluster; in
    the driver's process locally, as one task, which costs no worker start-up), tokenized files
    and exports into `tmp` (its staging folder, to be published as `final`); returns its
    manifest (not written yet), its splits and the documents found with PII left."""
    recipe, spec, sources = env.recipe, env.recipe.mixtures[name], env.recipe.mixture_sources(name)
    tasks = len(SPLITS) if getattr(env.runner, "distributed", False) else 1
    env.runner([WriteMixtureSplits(recipe, name, env.root, planned["files"], tmp, work)],
               env.logging_dir(MIXTURE, name, "write"), tasks)
    results = [read_result(split_result_file(work, split)) for split in SPLITS]
    for line in (line for r in results for line in r["log"]):
        env.log(line)
    splits = {split: r["summary"] for split, r in zip(SPLITS, results)}
    if spec.outputs.tokenized:
        tokenize_splits(env, name, tmp, splits, sources)
    plan = Plan(None, [SourceLedger(**row) for row in planned["ledger"]], planned["weighting"], planned["rebalanced"])
    tok = recipe.tokenizer
    counter = TokenCounter(tok.kind, recipe.resolve(tok.path) if tok.path else None)
    exports = write_exports(tmp, name, spec.seed, splits, counter.token_dtype,
                            weights=export_weights(plan.ledger), root=final)
    manifest = build_manifest(name, spec, recipe.sha256, counter.description, plan, splits,
                              output_digest(tmp, splits), exports)
    if buckets := manifest_buckets(recipe, sources):
        manifest["quality_buckets"] = buckets
    # Additive keys (core/mixing/licenses.py): each license's share of the rows written, and what
    # allowed_licenses left out.
    manifest["licenses"] = shares_of(add_counts([r["licenses"] for r in results]))
    if planned["license_filter"] is not None:
        manifest["license_filter"] = planned["license_filter"]
    return manifest, splits, [hit for r in results for hit in r["pii_hits"]]


def staged_checks(env: StageEnv, name: str, manifest: dict, tmp: str, splits: dict,
                  conservation_rows: list[dict] | None, pii_found: list[dict]) -> list:
    """The mixture's checks over what was written into `tmp` (the PII search was done by the
    tasks that wrote it: `pii_found`)."""
    recipe, spec, sources = env.recipe, env.recipe.mixtures[name], env.recipe.mixture_sources(name)
    bases = {base_source(s) for s in sources}
    return quality.mixture_checks(
        [{"source": s, **row} for s, row in sorted(manifest["sources"].items())],
        {s: spec.max_epochs_of(s) for s in sources},
        spec.tolerance,
        tmp,
        splits,
        pii_sources_of(recipe, sources),
        None if conservation_rows is None else [r for r in conservation_rows if r["source"] in bases],
        spec.checks,
        pii_found=pii_found,
    )


@scratch_in_data_root
def run_mixture(env: StageEnv, name: str) -> StageResult:
    """Plan and write to staging (executor tasks: the driver holds no per-document data), check,
    publish, record."""
    with env.connect() as con:
        # Every source's records must add up to kept + dropped + duplicate + quarantined + removed.
        # A catalog that has recorded nothing (deduplicated shards made elsewhere) has nothing to
        # check against: the check says so instead of failing.
        conservation_rows = catalog.conservation(con) or None
    work = env.work_dir(MIXTURE, name)
    planned = plan_in_task(env, name, work)
    final = layout.mixture_dir(env.root, name)
    tmp = staging_dir(final)
    manifest, splits, pii_found = write_staged(env, name, planned, work, tmp, final)
    checks = staged_checks(env, name, manifest, tmp, splits, conservation_rows, pii_found)
    gate(f"{MIXTURE}[{name}]", checks, [tmp])
    crash_point("mixture.manifest")
    with open(os.path.join(tmp, layout.MANIFEST_FILE), "w") as f:
        f.write(manifest_text(manifest))
    report = record(env, name, manifest, tmp)
    # Sealed like the document stages (core/io/integrity.py): a shard, export or manifest deleted or
    # changed after publication is found by the next run, which rebuilds the mixture to the same bytes.
    seal(tmp)
    publish_dir(tmp, final)
    shutil.rmtree(env.work_dir("licenses", name), ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    report["dataset_card"] = os.path.join(final, os.path.relpath(report["dataset_card"], tmp))
    with env.connect() as con:  # a few published rows traced to their origin, for the UI
        report["provenance"] = sample_rows_markdown(con, env.recipe, name)
    return StageResult(manifest, checks, report=report)


def record(env: StageEnv, name: str, manifest: dict, folder: str) -> dict:
    """The mixture's ledger in the catalog and its dataset card into `folder` (the staged mixture,
    beside the manifest); returns the ledger and the card's path for the report."""
    ledger = [{"source": s, **row} for s, row in sorted(manifest["sources"].items())]
    with env.connect() as con:
        catalog.record_mixture(con, name, ledger)
        card = write_dataset_card(con, env.recipe, name, folder)
    return {"ledger": ledger, "dataset_card": card}
