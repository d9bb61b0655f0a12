"""The `mixture` stage: one named mixture planned from the deduplicated documents (core/mixing/:
pools, allocation under caps, deterministic sampling), written as train/validation/test shards with
trainer exports, checked, given its manifest, published whole, and recorded (ledger in the catalog,
dataset card beside the manifest)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline import layout
from mix_pipeline.core.filters.pii import pii_kinds
from mix_pipeline.core.filters.quality_recipe import base_source
from mix_pipeline.core.filters.registry import PII
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.gates.checks import GateFailed
from mix_pipeline.core.io.documents import list_parts, publish_dir, staging_dir
from mix_pipeline.core.io.faults import crash_point
from mix_pipeline.core.io.integrity import require_intact, seal
from mix_pipeline.core.mixing.dataset_card import write_dataset_card
from mix_pipeline.core.mixing.exports import TOKENIZED_DIR, read_idx, tokenized_prefix, write_exports
from mix_pipeline.core.mixing.licenses import license_shares, restrict_licenses
from mix_pipeline.core.mixing.manifest import build_manifest, manifest_text, output_digest
from mix_pipeline.core.mixing.pools import load_pool, read_survivors
from mix_pipeline.core.mixing.quality_buckets import bucket_pool, manifest_buckets, mixture_files
from mix_pipeline.core.mixing.selection import Plan, plan_mixture
from mix_pipeline.core.mixing.splits import SPLITS
from mix_pipeline.core.mixing.tokens import TokenCounter
from mix_pipeline.core.mixing.weights import InfeasibleMixture
from mix_pipeline.core.mixing.writer import write_mixture
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.provenance.lineage import published_partitions
from mix_pipeline.core.provenance.trace import sample_rows_markdown
from mix_pipeline.core.stages.base import StageEnv, StageResult, gate, scratch_in_data_root
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


def mixture_inputs(env: StageEnv, name: str) -> MixtureInputs:
    recipe = env.recipe
    spec = recipe.mixtures[name]
    sources = recipe.mixture_sources(name)
    # A quality bucket (`web@high`) draws from its source's documents in the bucket's score range.
    files = mixture_files(recipe, name, sources, lambda s: deduplicated_files(env, s), env.work_dir())
    base = {s: base_source(s) for s in sources}
    # License settings by the `source` column of the rows (a bucket's rows carry its base source).
    license_specs = {base[s]: recipe.sources[base[s]] for s in sources}
    license_filter = None
    if spec.allowed_licenses is not None:
        files, license_filter = restrict_licenses(files, license_specs, spec.allowed_licenses,
                                                  env.work_dir("licenses", name))
        env.log(f"mixture[{name}]: allowed_licenses left out {license_filter['excluded_documents']} document(s), "
                f"{license_filter['excluded_tokens']} token(s)")
    return MixtureInputs(sources, files, base, license_specs, license_filter)


def plan_from(env: StageEnv, name: str, inputs: MixtureInputs) -> Plan:
    """The mixture's plan over its sources' pools; an infeasible one fails the stage's gate."""
    spec, files, base = env.recipe.mixtures[name], inputs.files, inputs.base
    pools = {
        s: bucket_pool(load_pool(base[s], fs, spec.unit, read_survivors(
            layout.cluster_files(env.root, base[s]), base[s])), s)
        for s, fs in files.items()
    }
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
    return plan


def write_staged(env: StageEnv, name: str, plan: Plan, inputs: MixtureInputs, tmp: str, final: str) -> tuple[dict, dict]:
    """Write the mixture's shards, tokenized files and exports into `tmp` (its staging folder, to
    be published as `final`); returns (its manifest, not written yet, and its splits)."""
    recipe, spec, sources, base = env.recipe, env.recipe.mixtures[name], inputs.sources, inputs.base
    chat = sorted({base[s] for s in sources if recipe.sources[base[s]].format == "chat"})
    splits = write_mixture(plan.selection, inputs.files, tmp, spec.shard_rows, env.work_dir("duckdb"),
                           chat_sources=chat, jsonl=spec.outputs.jsonl, log=env.log)
    if spec.outputs.tokenized:
        tokenize_splits(env, name, tmp, splits, sources)
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
    manifest["licenses"] = license_shares([os.path.join(tmp, f) for split in SPLITS for f in splits[split]["files"]],
                                          inputs.license_specs, spec.unit)
    if inputs.license_filter is not None:
        manifest["license_filter"] = inputs.license_filter
    return manifest, splits


def staged_checks(env: StageEnv, name: str, inputs: MixtureInputs, manifest: dict, tmp: str, splits: dict,
                  conservation_rows: list[dict] | None) -> list:
    """The mixture's checks over what was written into `tmp`."""
    recipe, spec, sources, base = env.recipe, env.recipe.mixtures[name], inputs.sources, inputs.base
    return quality.mixture_checks(
        [{"source": s, **row} for s, row in sorted(manifest["sources"].items())],
        {s: spec.max_epochs_of(s) for s in sources},
        spec.tolerance,
        tmp,
        splits,
        {base[s]: pii_kinds(f.params) for s in sources for f in recipe.sources[base[s]].filters if f.name == PII},
        None if conservation_rows is None else [r for r in conservation_rows if r["source"] in base.values()],
        spec.checks,
    )


@scratch_in_data_root
def run_mixture(env: StageEnv, name: str) -> StageResult:
    """Plan, write to staging, check, publish, record."""
    with env.connect() as con:
        # Every source's records must add up to kept + dropped + duplicate + quarantined + removed.
        # A catalog that has recorded nothing (deduplicated shards made elsewhere) has nothing to
        # check against: the check says so instead of failing.
        conservation_rows = catalog.conservation(con) or None
    inputs = mixture_inputs(env, name)
    plan = plan_from(env, name, inputs)
    final = layout.mixture_dir(env.root, name)
    tmp = staging_dir(final)
    manifest, splits = write_staged(env, name, plan, inputs, tmp, final)
    checks = staged_checks(env, name, inputs, manifest, tmp, splits, conservation_rows)
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
