"""The mixture lab: rank candidate mixtures with a cheap proxy model and recommend one.

An experiment draws candidate weight vectors (Dirichlet around a named mixture's weights, plus
the recipe's own mixtures over the same sources and uniform), selects each candidate's
documents with the normal planner from the deduplicated corpus minus a held-out slice
(core/lab/data.py), trains a proxy on each (core/lab/proxies.py: a smoothed word-bigram model, or
the transformer of core/lab/neural.py), and scores it on per-domain held-out sets. A ridge
regression from log-weights to each domain's loss then scores many more weight vectors
(core/lab/weights.py); the best one that the full-size mixture can supply within its `max_epochs`
is recommended, and is itself trained and scored, so the report (core/lab/report.py) shows its
observed loss next to the prediction. core/lab/reuse.py lets a rerun build on an earlier run;
core/lab/transfer.py checks whether the ranking holds at other scales.

This module is the entry point, `run_lab`, and its phases after preparation: candidates, fit,
search, recommendation, results. Nothing here imports Dagster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mix_pipeline import layout
from mix_pipeline.core.lab.data import Candidate, LabSetup, evaluate_candidates, prepare_lab
from mix_pipeline.core.lab.proxies import make_proxy
from mix_pipeline.core.lab.report import recommended_block, write_results
from mix_pipeline.core.lab.reuse import (
    DesignSpace,
    config_key,
    design_space,
    previous_results,
    reuse_summary,
    reuse_unchanged,
    source_fingerprint,
)
from mix_pipeline.core.lab.transfer import spearman_rho, transfer_checks
from mix_pipeline.core.lab.weights import (
    dirichlet_alpha,
    draw_weights,
    features,
    fit_ridge,
    full_weights,
    kl_divergence,
    nearest_distance,
    reduce_weights,
    rounded,
    trust_radius,
)
from mix_pipeline.core.mixing.weights import InfeasibleMixture, requested_weights
from mix_pipeline.names import RECOMMENDED_SUFFIX


def run_lab(env, experiment: str, log=None) -> dict:
    """Run one experiment of `env.recipe`; write results.json, report.html and recommended.yaml
    under data_root/lab/<experiment>/ and return the results.

    The phases, in order: prepare (sources, held-out texts, objective, proxy, size), design space
    (fresh, reuse, or unchanged: the previous results as they are), candidates, evaluate, fit,
    search, recommend, results."""
    lab = prepare_lab(env, experiment, log or env.log)
    fingerprints = {s: source_fingerprint(lab.data[s].pool) for s in lab.sources}
    out = layout.lab_dir(env.root, experiment)
    previous = previous_results(out) if lab.exp.reuse else None
    space = design_space(lab.sources, fingerprints, previous, lab.exp, lab.prior_spec, lab.total, lab.proxy.key())
    if space.reused_results is not None:
        return reuse_unchanged(lab, space, out)
    rng_draw, rng_search = (np.random.default_rng(s) for s in np.random.SeedSequence(lab.exp.seed).spawn(2))
    prior, alpha = _prior_alpha(lab, space)
    candidates = draw_candidates(lab, space, previous, prior, alpha, rng_draw)
    evaluate_candidates(candidates, lab.data, lab.prior_spec, lab.total, lab.proxy, lab.objective, lab.log)
    fit = fit_candidates(lab, space, candidates)
    found = search_weights(lab, space, fit, alpha, rng_search)
    recommended = observe_recommendation(lab, space, fit, found)
    chosen, best_c = choose(recommended, candidates)
    results = lab_results(lab, space, candidates, recommended, chosen, fit, found, fingerprints, previous)
    write_results(out, results)
    _log_recommendation(lab, candidates, recommended, chosen, best_c, fit)
    return results


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


def _prior_alpha(lab: LabSetup, space: DesignSpace) -> tuple[dict[str, float], np.ndarray]:
    """(the prior's requested weights per source, the Dirichlet alpha around them in the design space)."""
    prior = requested_weights(lab.prior_spec, lab.available)
    prior_d = reduce_weights(np.array([prior[s] for s in lab.sources]), space.member)
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
    candidates.append(Candidate("uniform", "uniform", full_weights(np.ones(len(dims)) / len(dims), expand, sources)))
    n_features = features(np.ones(len(dims)) / len(dims), exp.log_floor).shape[1]
    draws = space.draws
    if space.mode == "fresh" and len(candidates) + draws < n_features + 1:
        raise InfeasibleMixture(
            f"lab[{lab.experiment}]: {len(candidates) + draws} candidates cannot fit {n_features} regression "
            f"coefficients per domain; set experiments.{lab.experiment}.candidates to at least "
            f"{n_features + 1 - len(candidates)}")
    draws = max(draws, n_features + 1 - len(candidates))
    for k, w in enumerate(draw_weights(rng_draw, alpha, draws, exp.explore)):
        candidates.append(Candidate(f"draw_{k:03d}", "dirichlet", full_weights(w, expand, sources)))
    return candidates


def fit_candidates(lab: LabSetup, space: DesignSpace, candidates: list[Candidate]) -> LabFit:
    """Phase 3: fit the ridge regression on the evaluated candidates; sets each candidate's
    leave-one-out prediction (a fit that never saw it) and returns the full fit."""
    x = reduce_weights(np.array([[c.achieved[s] for s in lab.sources] for c in candidates]), space.member)
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
    rec_weights = rounded(full_weights(found.best, space.expand, sources))
    recommended = Candidate(lab.experiment + RECOMMENDED_SUFFIX, "recommended", rec_weights)
    recommended.predicted = float((features(reduce_weights(np.array([rec_weights[s] for s in sources]), space.member),
                                            lab.exp.log_floor) @ fit.coef @ fit.objw)[0])
    evaluate_candidates([recommended], lab.data, lab.prior_spec, lab.total, lab.proxy, lab.objective, lab.log)
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
        chosen = {"from": "best_candidate", "name": best_c.name, "weights": rounded(best_c.achieved),
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
        "config_key": config_key(exp, prior_spec, lab.total, lab.proxy.key()),
        "proxies_trained": len(candidates) + 1,
        "design_space": {"dimensions": space.names, "mode": space.mode},
    }
    if space.mode == "reuse":
        results["reuse"] = reuse_summary(lab, space, results["proxies_trained"], chosen, previous)
    if exp.transfer is not None:
        results["transfer"] = transfer_checks(exp, candidates, lab.data, prior_spec, lab.total, lab.proxy, lab.texts,
                                              lab.objective, lab.log, evaluate=evaluate_candidates, make_proxy=make_proxy)
    return results


def _candidate_row(c: Candidate) -> dict:
    return {"name": c.name, "kind": c.kind, "weights": {s: round(w, 4) for s, w in c.weights.items()},
            "achieved": c.achieved, "losses": {d: round(v, 5) for d, v in c.losses.items()},
            "objective": round(c.objective, 5), "predicted": None if math.isnan(c.predicted) else round(c.predicted, 5),
            "units": c.units}


def _log_recommendation(lab: LabSetup, candidates: list[Candidate], recommended: Candidate, chosen: dict,
                        best_c: Candidate, fit: LabFit) -> None:
    """The experiment's last log line: what is recommended, against uniform, the prior and the best candidate."""
    uniform = next(c for c in candidates if c.kind == "uniform")
    lab.log(f"lab[{lab.experiment}]: recommended {chosen['weights']} ({chosen['from']}); observed objective "
            f"{recommended.objective:.4f} (uniform {uniform.objective:.4f}, prior {candidates[0].objective:.4f}, "
            f"best candidate {best_c.objective:.4f}); LOO Spearman {fit.spearman:.3f}")
