"""Do the lab's rankings transfer? Rank correlations of candidate objectives across proxy kinds
(word bigram vs neural), proxy sizes (small vs larger neural) and data quantities (the lab's
`total` vs scale x `total`), each with a plain-words verdict.

Olmix (2026) found proxy rankings transfer to 1B-parameter targets with rho > 0.89 from proxies of
>= 15M parameters and rho = 0.73 at 1M: a ranking that changes between two small scales here
will not hold at a large one. Nothing here imports Dagster.
"""

from __future__ import annotations

import math

import numpy as np

TRUST = 0.8
PARTIAL = 0.5


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (ties share their mean rank); NaN with under three finite pairs."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx, ry = ranks(x[ok]), ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def verdict(rho: float | None, what: str) -> str:
    if rho is None or not math.isfinite(rho):
        return f"{what}: too few candidates to tell"
    if rho >= TRUST:
        return f"{what}: the ranking holds (rho {rho:.2f}); it can be trusted at larger scale"
    if rho >= PARTIAL:
        return f"{what}: the ranking partly holds (rho {rho:.2f}); trust only large differences between candidates"
    return f"{what}: the ranking does not hold (rho {rho:.2f}); do not trust it at larger scale"


def transfer_checks(exp, candidates, data, prior_spec, total, proxy, texts, objective, log, evaluate, make_proxy) -> dict:
    """Re-run candidates with another proxy kind, a larger proxy and more data; compare rankings."""
    spec = exp.transfer
    subset = candidates[: min(spec.candidates, len(candidates))]
    base = np.array([c.objective for c in candidates])
    checks = []

    def rerun(cands, proxy_, total_):
        copies = [type(c)(c.name, c.kind, dict(c.weights)) for c in cands]
        evaluate(copies, data, prior_spec, total_, proxy_, objective, log)
        return np.array([c.objective for c in copies])

    def add(name, a_label, b_label, a, b, names, trained):
        rho = spearman_rho(a, b)
        checks.append({"check": name, "a": a_label, "b": b_label, "candidates": len(a),
                       "spearman": None if not math.isfinite(rho) else round(rho, 4),
                       "verdict": verdict(rho, name), "proxies_trained": trained,
                       "objectives": {n: [round(float(x), 5), round(float(y), 5)] for n, x, y in zip(names, a, b)}})
        log(f"lab: transfer, {checks[-1]['verdict']}")

    main_kind = exp.proxy.kind
    other = exp.proxy.model_copy(update={"kind": "bigram" if main_kind == "neural" else "neural"})
    if main_kind == "neural":
        # Bigram training is cheap: every candidate.
        b = rerun(candidates, make_proxy(other, exp.seed, texts), total)
        add("proxy kind", "neural", "word bigram", base, b, [c.name for c in candidates], 0)
    if spec.larger is not None:
        larger = make_proxy(spec.larger, exp.seed, texts, log)
        b = rerun(subset, larger, total)
        label = f"{spec.larger.kind} {_size(larger)}"
        name = "proxy size" if spec.larger.kind == main_kind else "proxy kind and size"
        add(name, f"{main_kind} {_size(proxy)}", label, base[: len(subset)], b, [c.name for c in subset], len(subset))
    if spec.scale > 1:
        capacity = sum(math.floor(data[s].train.available * prior_spec.max_epochs_of(s)) for s in data)
        big = min(total * spec.scale, capacity)
        factor = big / total
        bigger = make_proxy(exp.proxy, exp.seed, texts, log, steps_scale=factor) if main_kind == "neural" else proxy
        b = rerun(subset, bigger, big)
        add("data quantity", f"total {total:,}", f"total {big:,} ({factor:.1f}x)", base[: len(subset)], b,
            [c.name for c in subset], len(subset) if main_kind == "neural" else 0)
    rhos = [c["spearman"] for c in checks if c["spearman"] is not None]
    worst = min(rhos) if rhos else None
    if worst is None:
        overall = "No transfer check could be computed (too few candidates)."
    elif worst >= TRUST:
        overall = (f"Rankings agree across every check (lowest rho {worst:.2f}): the candidates' order is not an artefact "
                   "of this proxy's size or this data quantity, so the recommendation can be expected to hold at larger scale.")
    elif worst >= PARTIAL:
        overall = (f"Rankings partly agree (lowest rho {worst:.2f}): large differences between candidates are real, "
                   "small ones may flip at larger scale; confirm the recommendation with a larger proxy.")
    else:
        overall = (f"Rankings disagree (lowest rho {worst:.2f}): the order of the candidates depends on the proxy or the "
                   "data quantity, so this ranking should not be trusted at larger scale; use larger proxies "
                   "(>= 15M parameters) or more data per candidate.")
    return {"checks": checks, "verdict": overall, "lowest_spearman": worst}


def _size(proxy) -> str:
    d = proxy.describe()
    p = d.get("parameters")
    return "(hashed bigram)" if p is None else f"{p / 1e6:.2f}M"
