"""Reusing an earlier run of the same experiment (`reuse: true`). Source fingerprints and a key of
the experiment's settings say what changed; `design_space` then picks fresh (one dimension per
source), reuse (the unchanged sources move as one dimension, Olmix-style) or unchanged (the
previous results as they are). Also the reuse run's accounting. Nothing here imports Dagster.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import xxhash

from mix_pipeline.core.lab.data import LabSetup
from mix_pipeline.core.lab.report import write_results
from mix_pipeline.core.mixing.pools import Pool


def source_fingerprint(pool: Pool) -> str:
    """Which documents (ids) of which sizes a source holds: changes when a snapshot drifts."""
    h = xxhash.xxh3_64()
    h.update(np.ascontiguousarray(pool.doc_hash).tobytes())
    h.update(np.ascontiguousarray(pool.units).astype(np.int64).tobytes())
    return h.hexdigest()


def config_key(exp, prior_spec, total: int, proxy_key: dict) -> str:
    keep = exp.model_dump(mode="json", exclude={"reuse", "transfer", "proxy"})
    blob = json.dumps({"exp": keep, "prior": prior_spec.model_dump(mode="json"), "total": total, "proxy": proxy_key},
                      sort_keys=True)
    return xxhash.xxh3_64_hexdigest(blob.encode())


def previous_results(out: str) -> dict | None:
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
    same_config = previous.get("config_key") == config_key(exp, prior_spec, total, proxy_key)
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


def reuse_unchanged(lab: LabSetup, space: DesignSpace, out: str) -> dict:
    """Nothing changed since the last run: its results, marked as reused (0 proxies trained), written again."""
    lab.log(f"lab[{lab.experiment}]: nothing changed since the last run; reusing its results (0 proxies trained)")
    results = space.reused_results
    results["reuse"] = {"mode": "unchanged", "proxies_trained": 0,
                        "fresh_proxies": results["proxies_trained"], "changed_sources": []}
    write_results(out, results)
    return results


def reuse_summary(lab: LabSetup, space: DesignSpace, trained: int, chosen: dict, previous: dict) -> dict:
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
