"""Weight-vector arithmetic for the lab's search: Dirichlet draws around the prior, the ridge
regression's features and fit, L1 distances and the trust radius, the KL divergence from the
sources' natural mix, and the maps between source weights and design-space weights.
Pure numpy; nothing here imports Dagster.
"""

from __future__ import annotations

import numpy as np

_RIDGE = 1e-3


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


def kl_divergence(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(w || q) per row (0·log 0 = 0)."""
    w = np.atleast_2d(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(w > 0, w * np.log(w / np.maximum(q, 1e-12)), 0.0)
    return terms.sum(axis=1)


def reduce_weights(w: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Source weights → design-space weights (each source counted in the dimension that holds it)."""
    return np.asarray(w) @ member.T


def full_weights(w: np.ndarray, expand: np.ndarray, sources: list[str]) -> dict[str, float]:
    """Design-space weights → source weights, by source name."""
    return {s: float(v) for s, v in zip(sources, np.asarray(w) @ expand)}


def rounded(weights: dict[str, float]) -> dict[str, float]:
    """The weights normalised to sum to one, rounded to four places."""
    total = sum(weights.values())
    return {s: round(w / total, 4) for s, w in weights.items()}
