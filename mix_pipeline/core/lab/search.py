"""The mixture lab: rank candidate mixtures with a cheap proxy model and recommend one.

An experiment draws candidate weight vectors (Dirichlet around a named mixture's weights, plus
the recipe's own mixtures over the same sources and uniform), selects each candidate's
documents with the normal planner (`plan_mixture` over `load_pool` pools) from the
deduplicated corpus minus a held-out slice, trains a smoothed word-bigram model on each, and
scores it on per-domain held-out sets. A ridge regression from log-weights to each domain's
loss then scores many more weight vectors; the best one that the full-size mixture can supply
within its `max_epochs` is recommended, and is itself trained and scored, so the report shows
its observed loss next to the prediction.

Texts stream from the shards a record batch at a time; only hashed-bigram counts and the
held-out word ids (capped per domain) are kept. Nothing here imports Dagster.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
import xxhash
import yaml

from mix_pipeline import layout
from mix_pipeline.core.io.documents import write_text_atomic
from mix_pipeline.core.lab.transfer import spearman_rho, transfer_checks
from mix_pipeline.core.mixing.selection import (
    InfeasibleMixture,
    Pool,
    _mix64,
    load_pool,
    plan_mixture,
    read_survivors,
    requested_weights,
)
from mix_pipeline.names import RECOMMENDED_SUFFIX

if TYPE_CHECKING:
    from mix_pipeline.recipe import ExperimentSpec, MixtureSpec, Recipe

_HOLDOUT_SALT = xxhash.xxh3_64_intdigest(b"mix_pipeline/lab-holdout")
_WORD = re.compile(r"\w+|[^\w\s]")
# Counts are merged (np.unique) once this many bigram entries are buffered: bounds memory.
_FLUSH_ENTRIES = 2_000_000
# Word → id cache entries kept before the cache is cleared (ids are a pure function of the word).
_CACHE_WORDS = 1_000_000
_READ_BATCH_ROWS = 1_024
_RIDGE = 1e-3


# ---- the proxy model -------------------------------------------------------------------------
class WordHasher:
    """Lower-cased words and punctuation → ids in [1, buckets]; 0 is the document boundary."""

    def __init__(self, buckets: int):
        self.buckets = buckets
        self._cache: dict[str, int] = {}

    def ids(self, text: str) -> np.ndarray:
        cache, out = self._cache, []
        for word in _WORD.findall(text.lower()):
            i = cache.get(word)
            if i is None:
                if len(cache) >= _CACHE_WORDS:
                    cache.clear()
                i = cache[word] = xxhash.xxh3_64_intdigest(word.encode("utf-8")) % self.buckets + 1
            out.append(i)
        return np.array([0] + out, dtype=np.int64)


class BigramCounts:
    """Bigram counts (hashed keys a·V+b) accumulated from documents, each with a multiplicity."""

    def __init__(self, size: int):
        self.size = size  # vocabulary size including the boundary id
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0

    def add(self, ids: np.ndarray, times: int) -> None:
        if len(ids) < 2 or times <= 0:
            return
        keys = ids[:-1] * self.size + ids[1:]
        self._buffer.append((keys, np.full(len(keys), times, np.int64)))
        self._buffered += len(keys)
        if self._buffered >= _FLUSH_ENTRIES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._buffer])
        counts = np.concatenate([self.counts] + [c for _, c in self._buffer])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts).astype(np.int64)
        self._buffer, self._buffered = [], 0

    def model(self, discount: float, unigram_k: float) -> BigramModel:
        self._flush()
        return BigramModel(self.keys, self.counts, self.size, discount, unigram_k)


@dataclass
class BigramModel:
    """Interpolated absolute discounting: p(b|a) = max(c(a,b) − d, 0)/c(a) + d·N1+(a)/c(a)·p1(b),
    with p1 the add-k unigram distribution over the whole (hashed) vocabulary; p1 alone when a
    was never seen."""

    keys: np.ndarray
    counts: np.ndarray
    size: int
    discount: float
    unigram_k: float

    def __post_init__(self):
        a, b = self.keys // self.size, self.keys % self.size
        self.context = np.bincount(a, weights=self.counts, minlength=self.size)
        self.types = np.bincount(a, minlength=self.size).astype(np.float64)
        unigram = np.bincount(b, weights=self.counts, minlength=self.size)
        self.unigram = (unigram + self.unigram_k) / (unigram.sum() + self.unigram_k * self.size)

    def loss(self, a: np.ndarray, b: np.ndarray) -> float:
        """Mean negative log-likelihood (nats per word) of the bigrams (a[i], b[i])."""
        if len(a) == 0:
            return float("nan")
        key = a * self.size + b
        c_ab = np.zeros(len(key), np.int64)
        if len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
            hit = self.keys[pos] == key
            c_ab[hit] = self.counts[pos[hit]]
        c_a, p1 = self.context[a], self.unigram[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(c_a > 0, (np.maximum(c_ab - self.discount, 0) + self.discount * self.types[a] * p1) / c_a, p1)
        return float(-np.log(p).mean())


# ---- pools, held-out slices and streaming -----------------------------------------------------
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
    h = _mix64(key, _HOLDOUT_SALT)
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


# ---- candidates ------------------------------------------------------------------------------
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


def dirichlet_alpha(prior: dict[str, float], sources: list[str], concentration: float) -> np.ndarray:
    n = len(sources)
    # A floor keeps sources the prior leaves out (weight 0) explorable.
    p = np.array([max(prior[s], 0.01 / n) for s in sources])
    return concentration * n * p / p.sum()


def draw_weights(rng, alpha: np.ndarray, n: int, explore: float) -> np.ndarray:
    """n weight vectors: round(n·explore) flat Dirichlet(1) draws over the simplex, interleaved
    with Dirichlet(alpha) draws around the prior."""
    flat = np.zeros(n, dtype=bool)
    flat[np.round(np.arange(1, n + 1) * explore) != np.round(np.arange(n) * explore)] = True
    out = rng.dirichlet(alpha, size=n)
    out[flat] = rng.dirichlet(np.ones(len(alpha)), size=int(flat.sum()))
    return out


def nearest_distance(points: np.ndarray, candidates: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """L1 distance from each point to its nearest candidate (in chunks: bounded memory)."""
    out = np.empty(len(points))
    for start in range(0, len(points), 4096):
        d = np.abs(points[start:start + 4096, None, :] - candidates[None, :, :]).sum(axis=2)
        if exclude_self:
            d[d == 0] = np.inf
        out[start:start + 4096] = d.min(axis=1)
    return out


def trust_radius(candidates: np.ndarray) -> float:
    """The median distance from a candidate to its nearest other candidate."""
    return float(np.median(nearest_distance(candidates, candidates, exclude_self=True)))


def features(w: np.ndarray, floor: float) -> np.ndarray:
    """[1, log(w_s + floor) …, w_s … (all but the last, which the others determine)]: diminishing
    returns in each source's share, plus a linear term that lets sources stand in for each other."""
    w = np.atleast_2d(w)
    return np.hstack([np.ones((len(w), 1)), np.log(w + floor), w[:, :-1]])


def fit_ridge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    penalty = _RIDGE * np.eye(x.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


# ---- the experiment --------------------------------------------------------------------------
def run_lab(env, experiment: str, log=None) -> dict:
    """Run one experiment of `env.recipe`; write results.json, report.html and recommended.yaml
    under data_root/lab/<experiment>/ and return the results.

    The phases, in order: prepare (sources, held-out texts, objective, proxy, size), design space
    (fresh, reuse, or unchanged: the previous results as they are), candidates, evaluate, fit,
    search, recommend, results."""
    lab = prepare_lab(env, experiment, log or env.log)
    fingerprints = {s: source_fingerprint(lab.data[s].pool) for s in lab.sources}
    out = layout.lab_dir(env.root, experiment)
    previous = _previous_results(out) if lab.exp.reuse else None
    space = design_space(lab.sources, fingerprints, previous, lab.exp, lab.prior_spec, lab.total, lab.proxy.key())
    if space.reused_results is not None:
        return _reuse_unchanged(lab, space, out)
    rng_draw, rng_search = (np.random.default_rng(s) for s in np.random.SeedSequence(lab.exp.seed).spawn(2))
    prior, alpha = _prior_alpha(lab, space)
    candidates = draw_candidates(lab, space, previous, prior, alpha, rng_draw)
    _evaluate(candidates, lab.data, lab.prior_spec, lab.total, lab.proxy, lab.objective, lab.log)
    fit = fit_candidates(lab, space, candidates)
    found = search_weights(lab, space, fit, alpha, rng_search)
    recommended = observe_recommendation(lab, space, fit, found)
    chosen, best_c = choose(recommended, candidates)
    results = lab_results(lab, space, candidates, recommended, chosen, fit, found, fingerprints, previous)
    _write(out, results)
    _log_recommendation(lab, candidates, recommended, chosen, best_c, fit)
    return results


# ---- the experiment's phases -----------------------------------------------------------------
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


@dataclass
class LabFit:
    """The regression from (design-space) weights to per-domain loss, and how well it ranks."""

    x: np.ndarray  # candidates' achieved weights, design space
    coef: np.ndarray  # features x domains
    objw: np.ndarray  # objective weight per domain (in `domains` order)
    spearman: float
    spearman_domain: dict[str, float]


@dataclass
class LabSearch:
    """The searched weight vectors and the mean of the best few (design space)."""

    samples: np.ndarray
    feasible: np.ndarray
    usable: int
    radius: float
    natural: np.ndarray  # the sources' natural mix (full pools)
    best: np.ndarray


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


def _reuse_unchanged(lab: LabSetup, space: DesignSpace, out: str) -> dict:
    """Nothing changed since the last run: its results, marked as reused (0 proxies trained), written again."""
    lab.log(f"lab[{lab.experiment}]: nothing changed since the last run; reusing its results (0 proxies trained)")
    results = space.reused_results
    results["reuse"] = {"mode": "unchanged", "proxies_trained": 0,
                        "fresh_proxies": results["proxies_trained"], "changed_sources": []}
    _write(out, results)
    return results


def _prior_alpha(lab: LabSetup, space: DesignSpace) -> tuple[dict[str, float], np.ndarray]:
    """(the prior's requested weights per source, the Dirichlet alpha around them in the design space)."""
    prior = requested_weights(lab.prior_spec, lab.available)
    prior_d = _reduce(np.array([prior[s] for s in lab.sources]), space.member)
    return prior, dirichlet_alpha(dict(zip(space.names, prior_d.tolist())), space.names, lab.exp.concentration)


def draw_candidates(lab: LabSetup, space: DesignSpace, previous, prior, alpha, rng_draw) -> list[Candidate]:
    """Phase 2: the candidates: the prior, the recipe's other mixtures over these sources (or, on
    reuse, the previous recommendation), uniform, then Dirichlet draws; at least enough to fit
    the regression."""
    exp, recipe, prior_spec, sources = lab.exp, lab.recipe, lab.prior_spec, lab.sources
    dims, expand = space.names, space.expand
    candidates = [Candidate(exp.prior, "prior", dict(prior))]
    if space.mode == "fresh":
        for name in sorted(recipe.mixtures):
            other = recipe.mixtures[name]
            if name != exp.prior and other.unit == prior_spec.unit and set(recipe.mixture_sources(name)) <= set(sources):
                own = requested_weights(other, {s: lab.available[s] for s in recipe.mixture_sources(name)})
                candidates.append(Candidate(name, "mixture", {s: own.get(s, 0.0) for s in sources}))
    else:
        candidates.append(Candidate("previous", "mixture", dict(previous["recommended_weights"])))
    candidates.append(Candidate("uniform", "uniform", _full(np.ones(len(dims)) / len(dims), expand, sources)))
    n_features = features(np.ones(len(dims)) / len(dims), exp.log_floor).shape[1]
    draws = space.draws
    if space.mode == "fresh" and len(candidates) + draws < n_features + 1:
        raise InfeasibleMixture(
            f"lab[{lab.experiment}]: {len(candidates) + draws} candidates cannot fit {n_features} regression "
            f"coefficients per domain; set experiments.{lab.experiment}.candidates to at least "
            f"{n_features + 1 - len(candidates)}")
    draws = max(draws, n_features + 1 - len(candidates))
    for k, w in enumerate(draw_weights(rng_draw, alpha, draws, exp.explore)):
        candidates.append(Candidate(f"draw_{k:03d}", "dirichlet", _full(w, expand, sources)))
    return candidates


def fit_candidates(lab: LabSetup, space: DesignSpace, candidates: list[Candidate]) -> LabFit:
    """Phase 3: fit the ridge regression on the evaluated candidates; sets each candidate's
    leave-one-out prediction (a fit that never saw it) and returns the full fit."""
    x = _reduce(np.array([[c.achieved[s] for s in lab.sources] for c in candidates]), space.member)
    y = np.array([[c.losses[d] for d in lab.domains] for c in candidates])
    objw = np.array([lab.objective[d] for d in lab.domains])
    feats = features(x, lab.exp.log_floor)
    loo = np.full(len(candidates), np.nan)
    loo_domain = np.full(y.shape, np.nan)
    if len(candidates) >= 3:
        for i in range(len(candidates)):
            rest = np.arange(len(candidates)) != i
            coef = fit_ridge(feats[rest], y[rest])
            loo_domain[i] = feats[i] @ coef
            loo[i] = loo_domain[i] @ objw
    for c, p in zip(candidates, loo):
        c.predicted = float(p)
    return LabFit(x, fit_ridge(feats, y), objw, spearman_rho(loo, y @ objw),
                  {d: spearman_rho(loo_domain[:, j], y[:, j]) for j, d in enumerate(lab.domains)})


def search_weights(lab: LabSetup, space: DesignSpace, fit: LabFit, alpha, rng_search) -> LabSearch:
    """Phase 4: score many weight vectors (drawn like the candidates, plus the candidates) with the
    fit; keep those the full-size mixture can supply and that lie within the trust radius of a
    candidate; return the mean of the best few (feasible: the feasible set is convex)."""
    exp, prior_spec, sources, available = lab.exp, lab.prior_spec, lab.sources, lab.available
    samples = np.vstack([draw_weights(rng_search, alpha, exp.search_samples, exp.explore), fit.x])
    samples_full = samples @ space.expand
    cap = exp.max_repetition or math.inf
    epochs = np.array([min(prior_spec.max_epochs_of(s), cap) for s in sources])
    caps_full = np.floor(np.array([available[s] for s in sources]) * epochs)
    caps_lab = np.floor(np.array([lab.data[s].train.available for s in sources]) * epochs)
    feasible = (np.all(samples_full * prior_spec.total <= caps_full, axis=1)
                & np.all(samples_full * lab.total <= caps_lab, axis=1))
    if not feasible.any():
        supply = int(caps_full.sum())
        hint = (f"the corpus supplies {supply:,} {prior_spec.unit} at max_epochs; lower mixtures.{exp.prior}.total"
                if supply < prior_spec.total else "raise candidates or max_epochs")
        raise InfeasibleMixture(f"lab[{lab.experiment}]: no sampled weight vector lets mixture '{exp.prior}' reach its "
                                f"total {prior_spec.total:,} within max_epochs"
                                f"{'/max_repetition' if exp.max_repetition else ''} ({hint})")
    predicted = features(samples, exp.log_floor) @ fit.coef @ fit.objw
    natural = np.array([available[s] for s in sources], dtype=np.float64)
    natural /= natural.sum()
    if exp.natural_pull > 0:
        predicted = predicted + exp.natural_pull * kl_divergence(samples_full, natural)
    predicted[~feasible] = np.inf
    # Trust region: only vectors about as close to some candidate as candidates are to each
    # other; further out the fit extrapolates, and log features extrapolate wildly near 0.
    radius = trust_radius(fit.x)
    near = nearest_distance(samples, fit.x) <= radius
    predicted[~near] = np.inf
    usable = int(np.isfinite(predicted).sum())
    if not usable:
        raise InfeasibleMixture(f"lab[{lab.experiment}]: no feasible weight vector lies near the candidates; "
                                "raise candidates or max_epochs")
    # The mean of the best few, not the single argmin: the argmin sits wherever the fit errs lowest.
    top = np.argsort(predicted, kind="stable")[: min(exp.recommend_top, usable)]
    return LabSearch(samples, feasible, usable, radius, natural, samples[top].mean(axis=0))


def observe_recommendation(lab: LabSetup, space: DesignSpace, fit: LabFit, found: LabSearch) -> Candidate:
    """Phase 5: the searched weights as a candidate, with the fit's prediction; trained and scored
    like the others (so the report shows its observed loss next to the prediction)."""
    sources = lab.sources
    rec_weights = _rounded(_full(found.best, space.expand, sources))
    recommended = Candidate(lab.experiment + RECOMMENDED_SUFFIX, "recommended", rec_weights)
    recommended.predicted = float((features(_reduce(np.array([rec_weights[s] for s in sources]), space.member),
                                            lab.exp.log_floor) @ fit.coef @ fit.objw)[0])
    _evaluate([recommended], lab.data, lab.prior_spec, lab.total, lab.proxy, lab.objective, lab.log)
    return recommended


def choose(recommended: Candidate, candidates: list[Candidate]) -> tuple[dict, Candidate]:
    """(what is recommended and why, the best candidate): the fitted recommendation, unless a
    candidate was observed to do better, in which case that one."""
    best_c = min(candidates, key=lambda c: (c.objective, c.name))
    if recommended.objective <= best_c.objective:
        chosen = {"from": "fit", "name": recommended.name, "weights": recommended.weights,
                  "verdict": f"the fitted recommendation beats every candidate ({recommended.objective:.4f} vs best "
                             f"candidate {best_c.name} {best_c.objective:.4f})"}
    else:
        chosen = {"from": "best_candidate", "name": best_c.name, "weights": _rounded(best_c.achieved),
                  "verdict": f"the fitted recommendation ({recommended.objective:.4f}) does NOT beat the best candidate "
                             f"{best_c.name} ({best_c.objective:.4f}); the best observed candidate is recommended"}
    return chosen, best_c


def lab_results(lab: LabSetup, space: DesignSpace, candidates: list[Candidate], recommended: Candidate,
                chosen: dict, fit: LabFit, found: LabSearch, fingerprints: dict[str, str], previous) -> dict:
    """Phase 6: results.json's content, plus the reuse accounting and the transfer checks when
    asked for."""
    exp, experiment, prior_spec, sources, domains = lab.exp, lab.experiment, lab.prior_spec, lab.sources, lab.domains
    uniform = next(c for c in candidates if c.kind == "uniform")
    prior_c = candidates[0]
    results = {
        "experiment": experiment,
        "prior": exp.prior,
        "unit": prior_spec.unit,
        "lab_total": lab.total,
        "lab_total_requested": exp.total,
        "sources": sources,
        "domains": domains,
        "objective_weights": lab.objective,
        "heldout_documents": {d: len(lab.texts[d]) for d in domains},
        "proxy": lab.proxy.describe(),
        "candidates": [_candidate_row(c) for c in candidates],
        "recommended": _candidate_row(recommended),
        "chosen": chosen,
        "recommended_weights": chosen["weights"],
        "spearman_loo": fit.spearman,
        "spearman_loo_per_domain": fit.spearman_domain,
        "feasible_samples": int(found.feasible.sum()),
        "trusted_samples": found.usable,
        "trust_radius_l1": round(found.radius, 4),
        "searched_samples": int(len(found.samples)),
        "natural_mix": dict(zip(sources, found.natural.round(4).tolist())),
        "natural_pull": exp.natural_pull,
        "max_repetition": exp.max_repetition,
        "coefficients": {d: dict(zip(["intercept"] + [f"log_w_{s}" for s in space.names], fit.coef[:, j].round(6).tolist()))
                         for j, d in enumerate(domains)},
        "improvement_vs_uniform": uniform.objective - recommended.objective,
        "improvement_vs_prior": prior_c.objective - recommended.objective,
        "recommended_mixture": recommended_block(experiment, prior_spec, chosen["weights"]),
        "source_fingerprints": fingerprints,
        "config_key": _config_key(exp, prior_spec, lab.total, lab.proxy.key()),
        "proxies_trained": len(candidates) + 1,
        "design_space": {"dimensions": space.names, "mode": space.mode},
    }
    if space.mode == "reuse":
        results["reuse"] = _reuse_summary(lab, space, results["proxies_trained"], chosen, previous)
    if exp.transfer is not None:
        results["transfer"] = transfer_checks(exp, candidates, lab.data, prior_spec, lab.total, lab.proxy, lab.texts,
                                              lab.objective, lab.log, evaluate=_evaluate, make_proxy=make_proxy)
    return results


def _log_recommendation(lab: LabSetup, candidates: list[Candidate], recommended: Candidate, chosen: dict,
                        best_c: Candidate, fit: LabFit) -> None:
    """The experiment's last log line: what is recommended, against uniform, the prior and the best candidate."""
    uniform = next(c for c in candidates if c.kind == "uniform")
    lab.log(f"lab[{lab.experiment}]: recommended {chosen['weights']} ({chosen['from']}); observed objective "
            f"{recommended.objective:.4f} (uniform {uniform.objective:.4f}, prior {candidates[0].objective:.4f}, "
            f"best candidate {best_c.objective:.4f}); LOO Spearman {fit.spearman:.3f}")


def _reuse_summary(lab: LabSetup, space: DesignSpace, trained: int, chosen: dict, previous: dict) -> dict:
    """A reuse run's accounting: what changed, the proxies trained against a fresh run's, and how
    far the recommendation moved. Logs it."""
    fresh = space.fresh_candidates + 1
    lab.log(f"lab[{lab.experiment}]: reuse: changed {', '.join(space.changed)}; trained {trained} proxies "
            f"(a fresh experiment trains {fresh}; {100 * (1 - trained / fresh):.0f}% of the compute saved)")
    return {
        "mode": "reuse", "changed_sources": space.changed, "unchanged_ratios": space.ratios,
        "proxies_trained": trained, "fresh_proxies": fresh,
        "compute_saved": round(1 - trained / fresh, 4),
        "previous_recommendation": previous["recommended_weights"],
        "l1_to_previous_recommendation": round(sum(abs(chosen["weights"][s] - previous["recommended_weights"].get(s, 0))
                                                   for s in lab.sources), 4),
    }


def _write(out: str, results: dict) -> None:
    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "results.json"), json.dumps(_finite(results), indent=2, sort_keys=True, allow_nan=False) + "\n")
    write_text_atomic(os.path.join(out, "recommended.yaml"), recommended_yaml(results))
    write_text_atomic(os.path.join(out, "report.html"), report_html(results))


def kl_divergence(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(w || q) per row (0·log 0 = 0)."""
    w = np.atleast_2d(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(w > 0, w * np.log(w / np.maximum(q, 1e-12)), 0.0)
    return terms.sum(axis=1)


def _reduce(w: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Source weights → design-space weights (each source counted in the dimension that holds it)."""
    return np.asarray(w) @ member.T


def _full(w: np.ndarray, expand: np.ndarray, sources: list[str]) -> dict[str, float]:
    return {s: float(v) for s, v in zip(sources, np.asarray(w) @ expand)}


# ---- proxies ---------------------------------------------------------------------------------
class BigramProxy:
    """The word-bigram proxy behind the common interface: `score(streams_by_candidate)`."""

    def __init__(self, spec, texts: dict[str, list[str]]):
        self.spec = spec
        self.hasher = WordHasher(spec.vocab_buckets)
        self.size = spec.vocab_buckets + 1
        self.heldout = {d: _bigram_arrays(self.hasher.ids(t) for t in ts) for d, ts in texts.items()}

    def key(self) -> dict:
        return {"kind": "bigram", "vocab_buckets": self.spec.vocab_buckets, "discount": self.spec.discount,
                "unigram_k": self.spec.unigram_k}

    def describe(self) -> dict:
        return {**self.key(), "kind": "word bigram, interpolated absolute discounting", "parameters": None}

    def encode(self, text: str):
        return self.hasher.ids(text)

    def new(self):
        return BigramCounts(self.size)

    def add(self, acc, item, times: int) -> None:
        acc.add(item, times)

    def losses(self, acc) -> dict[str, float]:
        model = acc.model(self.spec.discount, self.spec.unigram_k)
        return {dom: model.loss(*self.heldout[dom]) for dom in sorted(self.heldout)}


class NeuralLabProxy:
    """The transformer proxy (core/lab/neural.py): documents accumulate into one byte stream per
    candidate; a model is trained on it and scored on each domain's held-out windows."""

    def __init__(self, spec, seed: int, texts: dict[str, list[str]], steps_scale: float = 1.0):
        from mix_pipeline.core.lab import neural as lab_neural

        self.nn = lab_neural
        self.model = lab_neural.NeuralProxy(spec, seed, steps_scale)
        self.spec, self.seed = spec, seed
        self.heldout = {d: lab_neural.eval_windows(np.concatenate([lab_neural.encode(t) for t in ts] or
                                                                  [np.zeros(0, np.int16)]),
                                                   spec.seq_len, spec.eval_windows)
                        for d, ts in texts.items()}
        self.trained = 0

    def key(self) -> dict:
        return {**self.spec.model_dump(exclude={"vocab_buckets", "discount", "unigram_k", "device"}),
                "steps": self.model.steps, "seed": self.seed}

    def describe(self) -> dict:
        return self.model.describe()

    def encode(self, text: str):
        return self.nn.encode(text)

    def new(self):
        return []

    def add(self, acc, item, times: int) -> None:
        acc.extend([item] * times)

    def losses(self, acc) -> dict[str, float]:
        stream = np.concatenate(acc) if acc else np.full(self.spec.seq_len + 2, self.nn.BOUNDARY, np.int16)
        model = self.model.train(stream)
        self.trained += 1
        return {dom: self.model.loss(model, self.heldout[dom]) for dom in sorted(self.heldout)}


def make_proxy(spec, seed: int, texts: dict[str, list[str]], log=None, steps_scale: float = 1.0):
    if spec.kind == "neural":
        proxy = NeuralLabProxy(spec, seed, texts, steps_scale)
        if log:
            d = proxy.describe()
            log(f"lab: neural proxy, {d['parameters']:,} parameters, {d['steps']} steps of {d['batch']}x{d['seq_len']} "
                f"bytes on {d['device']}")
        return proxy
    return BigramProxy(spec, texts)


def _evaluate(candidates, data, prior_spec, total, proxy, objective, log) -> None:
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


# ---- reuse -----------------------------------------------------------------------------------
def source_fingerprint(pool: Pool) -> str:
    """Which documents (ids) of which sizes a source holds: changes when a snapshot drifts."""
    h = xxhash.xxh3_64()
    h.update(np.ascontiguousarray(pool.doc_hash).tobytes())
    h.update(np.ascontiguousarray(pool.units).astype(np.int64).tobytes())
    return h.hexdigest()


def _config_key(exp, prior_spec, total: int, proxy_key: dict) -> str:
    keep = exp.model_dump(mode="json", exclude={"reuse", "transfer", "proxy"})
    blob = json.dumps({"exp": keep, "prior": prior_spec.model_dump(mode="json"), "total": total, "proxy": proxy_key},
                      sort_keys=True)
    return xxhash.xxh3_64_hexdigest(blob.encode())


def _previous_results(out: str) -> dict | None:
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            prev = json.load(f)
    except (OSError, ValueError):
        return None
    return prev if "source_fingerprints" in prev and "recommended_weights" in prev else None


@dataclass
class DesignSpace:
    mode: str  # fresh | reuse | unchanged
    names: list[str]
    expand: np.ndarray  # dims x sources: design weights → source weights
    draws: int
    fresh_candidates: int = 0
    changed: list[str] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    reused_results: dict | None = None

    @property
    def member(self) -> np.ndarray:
        """dims x sources: 1 where a source belongs to a dimension."""
        m = (self.expand > 0).astype(np.float64)
        if self.mode == "reuse":
            m[-1] = 0
            m[-1, [j for j in range(m.shape[1]) if not m[:-1, j].any()]] = 1
        return m


def design_space(sources, fingerprints, previous, exp, prior_spec, total, proxy_key) -> DesignSpace:
    """Fresh: one dimension per source. Reuse (Olmix-style): the sources unchanged since the
    previous run keep the previous recommendation's proportions among themselves and move as one
    dimension; only the changed sources vary on their own, so fewer candidates cover the space."""
    n = len(sources)
    fresh = DesignSpace("fresh", list(sources), np.eye(n), exp.candidates)
    fixed_extra = 2  # prior and uniform (plus the recipe's other mixtures in a fresh run)
    fresh.fresh_candidates = exp.candidates + fixed_extra
    if previous is None or previous.get("sources") != list(sources):
        return fresh
    same_config = previous.get("config_key") == _config_key(exp, prior_spec, total, proxy_key)
    changed = [s for s in sources if previous["source_fingerprints"].get(s) != fingerprints[s]]
    if not changed and same_config:
        return DesignSpace("unchanged", list(sources), np.eye(n), 0, reused_results=previous)
    unchanged = [s for s in sources if s not in changed]
    prev_w = previous["recommended_weights"]
    if not same_config or len(unchanged) < 2 or sum(prev_w.get(s, 0.0) for s in unchanged) <= 0:
        return fresh
    mass = sum(prev_w.get(s, 0.0) for s in unchanged)
    ratios = {s: prev_w.get(s, 0.0) / mass for s in unchanged}
    names = list(changed) + ["rest"]
    expand = np.zeros((len(names), n))
    for i, s in enumerate(changed):
        expand[i, sources.index(s)] = 1.0
    for s in unchanged:
        expand[-1, sources.index(s)] = ratios[s]
    # Draws in proportion to the free dimensions of the simplex searched (m weights summing to
    # one have m - 1); draw_candidates keeps at least enough to fit the regression.
    draws = math.ceil(exp.candidates * (len(names) - 1) / (n - 1))
    space = DesignSpace("reuse", names, expand, draws, changed=changed,
                        ratios={s: round(r, 4) for s, r in ratios.items()})
    fresh_proxies = (previous.get("reuse") or {}).get("fresh_proxies") or previous.get("proxies_trained")
    space.fresh_candidates = (fresh_proxies or exp.candidates + fixed_extra + 1) - 1
    return space


def _bigram_arrays(id_arrays) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for ids in id_arrays:
        a.append(ids[:-1])
        b.append(ids[1:])
    if not a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a), np.concatenate(b)


def _eval_texts(path: str, limit: int):
    with open(path, encoding="utf-8") as f:
        n = 0
        for line in f:
            if line.strip() and n < limit:
                n += 1
                yield str(json.loads(line).get("text") or "")


def _rounded(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {s: round(w / total, 4) for s, w in weights.items()}


def _candidate_row(c: Candidate) -> dict:
    return {"name": c.name, "kind": c.kind, "weights": {s: round(w, 4) for s, w in c.weights.items()},
            "achieved": c.achieved, "losses": {d: round(v, 5) for d, v in c.losses.items()},
            "objective": round(c.objective, 5), "predicted": None if math.isnan(c.predicted) else round(c.predicted, 5),
            "units": c.units}


def _finite(value):
    """NaN (a Spearman over too few candidates) as null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# ---- the recommendation as a mixture ---------------------------------------------------------
def recommended_block(experiment: str, prior_spec, weights: dict[str, float]) -> dict:
    """The prior mixture with the recommended weights, as recipe YAML data (only non-default keys)."""
    spec = prior_spec.model_copy(update={"weights": dict(weights), "temperature": None})
    return {experiment + RECOMMENDED_SUFFIX: spec.model_dump(mode="json", exclude_defaults=True)}


def recommended_yaml(results: dict) -> str:
    head = (f"# Recommended by the mixture lab, experiment '{results['experiment']}' (prior: {results['prior']}).\n"
            "# Paste under `mixtures:` in the recipe, or build it with "
            "`mix-pipeline lab --recipe R --experiment E --materialize`.\n")
    return head + yaml.safe_dump(results["recommended_mixture"], sort_keys=True)


def recommended_spec(results: dict):
    from mix_pipeline.recipe import MixtureSpec

    (name, block), = results["recommended_mixture"].items()
    return name, MixtureSpec.model_validate(block)


# ---- the report --------------------------------------------------------------------------------
def candidate_rows(results: dict) -> list[dict]:
    """One flat row per candidate (and the recommendation): weights, per-domain loss, objective."""
    rows = []
    for c in results["candidates"] + [results["recommended"]]:
        row = {"candidate": c["name"], "kind": c["kind"]}
        row |= {f"w_{s}": c["achieved"].get(s) for s in results["sources"]}
        row |= {f"loss_{d}": c["losses"].get(d) for d in results["domains"]}
        row |= {"objective": c["objective"], "predicted": c["predicted"]}
        rows.append(row)
    return rows


def weight_rows(results: dict) -> list[dict]:
    """Recommended weights next to the hand-written ones (the recipe's mixtures among the candidates)."""
    named = [c for c in results["candidates"] if c["kind"] in ("prior", "mixture", "uniform")] + [results["recommended"]]
    return [{"source": s, **{c["name"]: c["weights"].get(s) for c in named}} for s in results["sources"]]


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return "" if v is None else str(v)


def _svg_scatter(results: dict) -> str:
    pts = [(c["predicted"], c["objective"], c["name"]) for c in results["candidates"] + [results["recommended"]]
           if c["predicted"] is not None]
    if len(pts) < 2:
        return "<p>(too few candidates to plot)</p>"
    lo = min(min(p, o) for p, o, _ in pts)
    hi = max(max(p, o) for p, o, _ in pts)
    pad = (hi - lo) * 0.05 or 0.01
    lo, hi = lo - pad, hi + pad
    size, margin = 360, 40

    def xy(p, o):
        return (margin + (p - lo) / (hi - lo) * (size - 2 * margin), size - margin - (o - lo) / (hi - lo) * (size - 2 * margin))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" font-size="10">',
             f'<line x1="{margin}" y1="{size - margin}" x2="{size - margin}" y2="{margin}" stroke="#bbb"/>',
             f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">predicted objective (leave-one-out)</text>',
             f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" text-anchor="middle">observed objective</text>',
             f'<text x="{margin}" y="{size - margin + 12}">{lo:.3f}</text>',
             f'<text x="{size - margin}" y="{size - margin + 12}" text-anchor="end">{hi:.3f}</text>']
    for p, o, name in pts:
        x, y = xy(p, o)
        colour = "#d62728" if name == results["recommended"]["name"] else "#1f77b4"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"><title>{html.escape(name)}: '
                     f'predicted {p:.4f}, observed {o:.4f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def proxy_line(results: dict) -> str:
    p = results["proxy"]
    if p.get("parameters"):
        return (f"neural (byte-level transformer, {p['parameters']:,} parameters, {p['layers']} layers x {p['d_model']}, "
                f"{p['steps']} steps of {p['batch']}x{p['seq_len']} bytes, {p['device']})")
    return str(p["kind"])


def transfer_rows(results: dict) -> list[dict]:
    return [{"check": c["check"], "a": c["a"], "b": c["b"], "candidates": c["candidates"], "spearman": c["spearman"],
             "proxies trained": c["proxies_trained"], "verdict": c["verdict"]}
            for c in (results.get("transfer") or {}).get("checks", [])]


def reuse_line(results: dict) -> str:
    r = results.get("reuse")
    if not r:
        return ""
    if r["mode"] == "unchanged":
        return f"Reuse: no source changed since the last run; its results were reused (0 proxies trained, a fresh experiment trains {r['fresh_proxies']})."
    return (f"Reuse: changed source(s) {', '.join(r['changed_sources'])}; the others moved together in the previous "
            f"recommendation's proportions {r['unchanged_ratios']}. Proxies trained: {r['proxies_trained']} (a fresh "
            f"experiment trains {r['fresh_proxies']}; {100 * r['compute_saved']:.0f}% of the proxy compute saved). "
            f"L1 distance to the previous recommendation: {r['l1_to_previous_recommendation']}.")


def report_html(results: dict) -> str:
    rec = results["recommended"]
    spearman = results["spearman_loo"]
    transfer = results.get("transfer")
    transfer_html = "" if not transfer else (
        f"<h2>Does the ranking transfer?</h2><p><b>{html.escape(transfer['verdict'])}</b></p>"
        f"<p>Spearman rank correlation of the candidates' objectives between proxy kinds, proxy sizes and data "
        f"quantities (1 = same order).</p>{_html_table(transfer_rows(results))}")
    chosen = results.get("chosen", {"verdict": "", "weights": rec["weights"]})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Mixture lab: {html.escape(results['experiment'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}</style></head><body>
<h1>Mixture lab: {html.escape(results['experiment'])}</h1>
<p>Prior mixture <b>{html.escape(results['prior'])}</b>; {len(results['candidates'])} candidates of
{results['lab_total']:,} {html.escape(results['unit'])} each, proxy: {html.escape(proxy_line(results))}.
Losses are nats per {'byte' if results['proxy'].get('tokenizer') == 'bytes' else 'word'} on each domain's held-out set (lower is better); the objective weighs them by
{html.escape(json.dumps(results['objective_weights']))}.</p>
<p><b>Recommended</b> ({html.escape(rec['name'])}): observed objective {rec['objective']:.4f}, predicted
{_cell(rec['predicted'])}; {results['improvement_vs_uniform']:+.4f} better than uniform,
{results['improvement_vs_prior']:+.4f} better than the prior (positive = better).
Leave-one-out Spearman (predicted vs observed objective): {_cell(spearman)}.</p>
<p><b>Against the candidates:</b> {html.escape(chosen['verdict'])}. Recommended weights:
{html.escape(json.dumps(chosen['weights']))}.</p>
<p>{html.escape(reuse_line(results))}</p>{transfer_html}
<h2>Recommended weights next to the hand-written ones</h2>{_html_table(weight_rows(results))}
<h2>Loss per candidate</h2>
<p>w_* are the achieved weights of each small mixture; <i>predicted</i> comes from a fit that left that
candidate out (for the recommendation: the fit on every candidate).</p>{_html_table(candidate_rows(results))}
<h2>Predicted vs observed</h2>{_svg_scatter(results)}
<h2>Per-domain leave-one-out Spearman</h2>{_html_table([{'domain': d, 'spearman': v} for d, v in results['spearman_loo_per_domain'].items()])}
<h2>Recommended mixture block</h2><pre>{html.escape(recommended_yaml(results))}</pre>
</body></html>
"""
