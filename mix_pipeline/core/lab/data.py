"""The lab's data: each source's deduplicated pool split into a training sub-pool and a held-out
slice (keyed on near-duplicate clusters), the held-out texts per domain (plus eval sets), the
candidates' size, and evaluating candidates: each is planned with the normal planner
(`plan_mixture` over `load_pool` pools), its documents are fed to its proxy, and it is scored.

Texts stream from the shards a record batch at a time, in one pass per source for all the
candidates at once. Nothing here imports Dagster.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
import xxhash

from mix_pipeline import layout
from mix_pipeline.core.lab.proxies import BigramProxy, NeuralLabProxy, make_proxy
from mix_pipeline.core.mixing.pools import Pool, mix64, load_pool, read_survivors
from mix_pipeline.core.mixing.selection import plan_mixture
from mix_pipeline.core.mixing.weights import InfeasibleMixture

if TYPE_CHECKING:
    from mix_pipeline.recipe import ExperimentSpec, MixtureSpec, Recipe

_HOLDOUT_SALT = xxhash.xxh3_64_intdigest(b"mix_pipeline/lab-holdout")
_READ_BATCH_ROWS = 1_024


@dataclass
class SourceData:
    """A source's full pool, the training sub-pool (held-out slice removed) and the held-out picks."""

    source: str
    files: list[str]
    pool: Pool
    train: Pool
    train_index: np.ndarray  # train-pool position → full-pool position
    holdout_index: np.ndarray  # full-pool positions of the scored held-out documents


def holdout_mask(pool: Pool, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(held-out mask, hash) keyed on each document's cluster survivor, so a held-out
    document's near copies (kept when dedup does not remove them) are held out with it."""
    key, _, _ = pool.survivors(np.arange(len(pool)))
    h = mix64(key, _HOLDOUT_SALT)
    return h.astype(np.float64) / 2.0**64 < fraction, h


def prepare_source(source: str, files: list[str], unit: str, survivors, fraction: float, max_docs: int) -> SourceData:
    pool = load_pool(source, files, unit, survivors)
    held, h = holdout_mask(pool, fraction)
    if not held.any() and len(pool):
        # A small source whose hash slice came out empty: hold out its lowest-hash cluster instead.
        held = h == h.min()
    if held.all():
        raise InfeasibleMixture(f"lab: source '{source}' has {len(pool):,} document(s) in one near-duplicate cluster or "
                                "fewer; too few to both hold out and train (add documents or drop it from the prior)")
    keep = np.flatnonzero(~held)
    held_idx = np.flatnonzero(held)
    held_idx = np.sort(held_idx[np.argsort(h[held_idx], kind="stable")][:max_docs])
    train = Pool(source=source, units=pool.units[keep], tokens=pool.tokens[keep], doc_hash=pool.doc_hash[keep],
                 file_starts=np.array([0, len(keep)], dtype=np.int64))
    return SourceData(source, files, pool, train, keep, held_idx)


def stream_texts(files: list[str], wanted: np.ndarray):
    """(full-pool position, text) of the sorted positions `wanted`, reading a record batch at a time."""
    at, offset = 0, 0
    for path in files:
        parquet = pq.ParquetFile(path)
        n = parquet.metadata.num_rows
        if at >= len(wanted):
            return
        if wanted[at] >= offset + n:
            offset += n
            continue
        for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, columns=["text"]):
            end = offset + batch.num_rows
            stop = int(np.searchsorted(wanted, end))
            if stop > at:
                column = batch.column(0)
                for pos in wanted[at:stop].tolist():
                    yield pos, column[pos - offset].as_py() or ""
                at = stop
            offset = end


def _eval_texts(path: str, limit: int):
    with open(path, encoding="utf-8") as f:
        n = 0
        for line in f:
            if line.strip() and n < limit:
                n += 1
                yield str(json.loads(line).get("text") or "")


@dataclass
class LabSetup:
    """One experiment's settings and inputs, as every phase after `prepare_lab` reads them."""

    experiment: str
    exp: ExperimentSpec
    recipe: Recipe
    prior_spec: MixtureSpec  # the prior mixture's
    sources: list[str]
    data: dict[str, SourceData]
    log: Callable[[str], None]
    texts: dict[str, list[str]] = field(default_factory=dict)  # held-out texts per domain
    domains: list[str] = field(default_factory=list)
    objective: dict[str, float] = field(default_factory=dict)  # domain → normalised weight
    proxy: BigramProxy | NeuralLabProxy | None = None
    available: dict[str, int] = field(default_factory=dict)  # units of each source's full pool
    total: int = 0  # the candidates' size


def prepare_lab(env, experiment: str, log) -> LabSetup:
    """Phase 1: load every source's pool and held-out slice, the held-out texts (plus eval sets),
    the normalised objective, the proxy and the candidates' size. Returns the LabSetup."""
    recipe = env.recipe
    exp = recipe.experiments[experiment]
    lab = LabSetup(experiment, exp, recipe, recipe.mixtures[exp.prior], recipe.mixture_sources(exp.prior), {}, log)
    lab.data = load_sources(env, lab)
    lab.texts, lab.domains = heldout_texts(lab)
    objective = {d: float(exp.objective.get(d, 0.0)) if exp.objective else 1.0 for d in lab.domains}
    norm = sum(objective.values())
    lab.objective = {d: w / norm for d, w in objective.items()}
    lab.proxy = make_proxy(exp.proxy, exp.seed, lab.texts, log)
    lab.available = {s: lab.data[s].pool.available for s in lab.sources}
    lab.total = lab_total(lab)
    return lab


def load_sources(env, lab: LabSetup) -> dict[str, SourceData]:
    """Each source's deduplicated pool split into a training sub-pool and a held-out slice."""
    from mix_pipeline.core.stages.mixture import deduplicated_files

    experiment, exp, prior_spec = lab.experiment, lab.exp, lab.prior_spec
    data: dict[str, SourceData] = {}
    for s in lab.sources:
        files = deduplicated_files(env, s)
        if not files:
            raise InfeasibleMixture(f"lab[{experiment}]: source '{s}' has no deduplicated shards; run the pipeline first")
        survivors = read_survivors(layout.cluster_files(env.root, s), s)
        try:
            data[s] = prepare_source(s, files, prior_spec.unit, survivors, exp.holdout, exp.holdout_max_documents)
        except InfeasibleMixture as e:
            raise InfeasibleMixture(f"lab[{experiment}]: {str(e).removeprefix('lab: ')}")
    return data


def heldout_texts(lab: LabSetup) -> tuple[dict[str, list[str]], list[str]]:
    """(texts per domain, sorted domains): each source's held-out documents and each eval set,
    capped per domain; each proxy makes its own form of them. Refuses a domain with no text."""
    exp = lab.exp
    texts: dict[str, list[str]] = {}
    for s, d in lab.data.items():
        texts[s] = [t for _, t in stream_texts(d.files, d.holdout_index)]
    for name, path in sorted(exp.eval_sets.items()):
        texts[name] = list(_eval_texts(lab.recipe.resolve(path), exp.holdout_max_documents))
    domains = sorted(texts)
    empty = [d for d in domains if not any(t.strip() for t in texts[d])]
    if empty:
        raise InfeasibleMixture(f"lab[{lab.experiment}]: no held-out text for {', '.join(empty)} "
                                f"(raise experiments.{lab.experiment}.holdout or add documents)")
    return texts, domains


def lab_total(lab: LabSetup) -> int:
    """The candidates' size: the experiment's total, or half of what the training slices supply
    at max_epochs when that is less (small corpora)."""
    exp, prior_spec, data = lab.exp, lab.prior_spec, lab.data
    capacity = sum(math.floor(data[s].train.available * prior_spec.max_epochs_of(s)) for s in lab.sources)
    total = exp.total
    if total > capacity // 2:
        total = capacity // 2
        if total < 1:
            raise InfeasibleMixture(f"lab[{lab.experiment}]: the training slices hold too little to build candidates "
                                    f"({capacity:,} {prior_spec.unit} at max_epochs); add documents")
        lab.log(f"lab[{lab.experiment}]: total {exp.total:,} is more than half of what the training slices supply "
                f"({capacity:,} {prior_spec.unit}); candidates use {total:,}")
    return total


@dataclass
class Candidate:
    name: str
    kind: str  # prior | mixture | uniform | dirichlet | recommended
    weights: dict[str, float]  # requested
    achieved: dict[str, float] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    objective: float = float("nan")
    predicted: float = float("nan")  # leave-one-out prediction (fit without this candidate)
    units: int = 0


def candidate_spec(prior_spec, weights: dict[str, float], total: int):
    """The prior mixture's spec at the lab's size with these weights: same unit, seed and
    max_epochs; no splits (the held-out slice is taken before planning) and rebalancing instead
    of failing, so every candidate gets built and is described by its achieved weights."""
    from mix_pipeline.recipe import MixtureSourceSpec, SplitsSpec

    sources = {s: MixtureSourceSpec(max_epochs=prior_spec.max_epochs_of(s)) for s in weights}
    return prior_spec.model_copy(update={
        "weights": dict(weights), "temperature": None, "total": total, "sources": sources,
        "splits": SplitsSpec(), "on_infeasible": "rebalance", "max_fraction": 1.0,
    })


def evaluate_candidates(candidates, data, prior_spec, total, proxy, objective, log) -> None:
    """Plan every candidate, accumulate its training data in one streaming pass per source,
    train its proxy, score it."""
    mult: dict[str, list[np.ndarray]] = {s: [] for s in data}
    for c in candidates:
        spec = candidate_spec(prior_spec, c.weights, total)
        plan = plan_mixture(c.name, spec, {s: d.train for s, d in data.items()})
        for row in plan.ledger:
            c.achieved[row.source] = row.achieved_weight
        c.units = sum(row.units for row in plan.ledger)
        if c.units == 0:
            raise InfeasibleMixture(f"lab: candidate {c.name} {c.weights} selects no document at total {total:,}; "
                                    "raise the experiment's total")
        src = plan.selection.column("source").to_pylist()
        rows = plan.selection.column("row").to_numpy()
        src = np.array(src, dtype=object)
        for s, d in data.items():
            times = np.bincount(rows[src == s], minlength=len(d.train)) if len(rows) else np.zeros(len(d.train), np.int64)
            mult[s].append(times)
    accs = [proxy.new() for _ in candidates]
    for s, d in data.items():
        times = np.vstack(mult[s])  # candidates × train documents
        used = np.flatnonzero(times.any(axis=0))
        for pos, text in stream_texts(d.files, d.train_index[used]):
            item = proxy.encode(text)
            k = int(np.searchsorted(d.train_index, pos))
            for j in np.flatnonzero(times[:, k]).tolist():
                proxy.add(accs[j], item, int(times[j, k]))
        log(f"lab: read {len(used):,} document(s) of {s} for {len(candidates)} candidate(s)")
    for i, (c, acc) in enumerate(zip(candidates, accs)):
        c.losses = proxy.losses(acc)
        accs[i] = None  # free the candidate's data once trained
        c.objective = sum(objective[dom] * c.losses[dom] for dom in c.losses)
        if isinstance(proxy, NeuralLabProxy):
            log(f"lab: trained {c.name} ({i + 1}/{len(candidates)}): objective {c.objective:.4f}")
