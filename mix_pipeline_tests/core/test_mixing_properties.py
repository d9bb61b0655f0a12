"""Property tests of the planner over random source sizes, weights, caps, totals and seeds.

The oracle is written independently of the planner: share caps by bisection on the water
level, feasibility straight from the definitions (a source may give at most
⌊available × max_epochs⌋ units and at most max_fraction of the total).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mix_pipeline.core.mixing.pools import Pool
from mix_pipeline.core.mixing.selection import plan_mixture
from mix_pipeline.core.mixing.weights import InfeasibleMixture
from mix_pipeline.recipe import MixtureSpec

TOLERANCE = 0.005
# Below this many units a ±1 rounding alone is 0.5%: such targets are not "feasible" to 0.5%.
MIN_TARGET_UNITS = 400


@st.composite
def cases(draw):
    n_sources = draw(st.integers(1, 4))
    names = [f"s{i}" for i in range(n_sources)]
    sources = {}
    for name in names:
        sources[name] = {
            "docs": draw(st.integers(30, 3000)),
            "max_size": draw(st.sampled_from([1, 5, 40, 200])),
            "weight": draw(st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.5, 1.0, 2.0])),
            "max_epochs": draw(st.sampled_from([0.5, 1.0, 1.5, 2.0, 4.0])),
            "max_fraction": draw(st.sampled_from([None, None, 0.3, 0.5, 0.8])),
        }
    if all(s["weight"] == 0 for s in sources.values()):
        sources[names[0]]["weight"] = 1.0
    return {
        "sources": sources,
        "data_seed": draw(st.integers(0, 2**16)),
        "seed": draw(st.integers(0, 2**31)),
        "load": draw(st.one_of(st.floats(0.02, 0.5), st.floats(0.5, 1.6))),
        "mode": draw(st.sampled_from(["fail", "rebalance"])),
    }


def build(case):
    rng = np.random.default_rng(case["data_seed"])
    pools = {}
    for name, s in case["sources"].items():
        units = rng.integers(1, s["max_size"] + 1, s["docs"])
        pools[name] = Pool.from_ids(name, [f"{name}-{i}" for i in range(s["docs"])], units)
    capacity = sum(pools[n].available * s["max_epochs"] for n, s in case["sources"].items() if s["weight"] > 0)
    spec = MixtureSpec(
        total=max(1, int(capacity * case["load"])),
        weights={n: s["weight"] for n, s in case["sources"].items()},
        sources={n: {"max_epochs": s["max_epochs"], "max_fraction": s["max_fraction"]} for n, s in case["sources"].items()},
        on_infeasible=case["mode"],
        seed=case["seed"],
        tolerance=TOLERANCE,
    )
    return spec, pools


def capped_shares(weights: dict[str, float], caps: dict[str, float]) -> dict[str, float]:
    """min(cap, λ·w) summing to 1, λ found by bisection."""
    total_w = sum(weights.values())
    lo, hi = 0.0, 1.0
    while sum(min(caps[s], hi * w / total_w) for s, w in weights.items()) < 1 - 1e-12 and hi < 1e12:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(min(caps[s], mid * w / total_w) for s, w in weights.items()) < 1:
            lo = mid
        else:
            hi = mid
    return {s: min(caps[s], hi * w / total_w) for s, w in weights.items()}


@settings(max_examples=int(os.environ.get("MIX_HYPOTHESIS_EXAMPLES", 400)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow], derandomize=bool(os.environ.get("CI")))  # fixed draw under CI
@given(cases())
# CI's fixed draw once found this: s2's working target sat 4 units under its epoch cap while its share was at it.
@example(case={"sources": {"s0": {"docs": 30, "max_size": 200, "weight": 0.1, "max_epochs": 0.5, "max_fraction": None},
                           "s1": {"docs": 30, "max_size": 1, "weight": 0.0, "max_epochs": 0.5, "max_fraction": None},
                           "s2": {"docs": 30, "max_size": 200, "weight": 0.1, "max_epochs": 0.5, "max_fraction": None},
                           "s3": {"docs": 30, "max_size": 200, "weight": 0.05, "max_epochs": 2.0, "max_fraction": None}},
               "data_seed": 11, "seed": 226, "load": 0.5, "mode": "rebalance"})
def test_planner_properties(case):
    spec, pools = build(case)
    names = sorted(pools)
    weights = {n: case["sources"][n]["weight"] for n in names}
    fractions = {n: case["sources"][n]["max_fraction"] or 1.0 for n in names}
    if sum(fractions[n] for n in names if weights[n] > 0) < 1:
        with pytest.raises(InfeasibleMixture):
            plan_mixture("m", spec, pools)  # the recipe validator refuses these before planning
        return
    shares = capped_shares(weights, fractions)
    cap = {n: math.floor(pools[n].available * spec.max_epochs_of(n)) for n in names}
    wanted = {n: int(round(spec.total * shares[n])) for n in names}
    short = {n for n in names if wanted[n] > cap[n]}
    can_supply = sum(min(cap[n], fractions[n] * spec.total) for n in names if weights[n] > 0)

    if short and spec.on_infeasible == "fail":
        with pytest.raises(InfeasibleMixture, match=r"source '(s\d)' is short: .*\(short by [\d,]+\)") as err:
            plan_mixture("m", spec, pools)
        assert any(f"source '{n}'" in str(err.value) for n in short)
        event("refused: a source is short")
        return
    if short and can_supply < spec.total * (1 - 1e-9):
        with pytest.raises(InfeasibleMixture, match="even rebalanced"):
            plan_mixture("m", spec, pools)
        event("refused: short even rebalanced")
        return

    plan = plan_mixture("m", spec, pools)
    by = {r.source: r for r in plan.ledger}
    for n in names:
        # Never past a source's epoch cap, rebalanced or not.
        assert by[n].units <= pools[n].available * spec.max_epochs_of(n) + 1e-9, (n, by[n])
        assert by[n].epochs <= spec.max_epochs_of(n) + 1e-4
    assert set(plan.rebalanced) == short
    if short:
        # The shortfall went to the others by weight: the sources not at a cap keep their ratios.
        assert spec.on_infeasible == "rebalance"
        # A source is free when its share (not its working target, which the planner may lower a few units
        # to hit the ratios with coarse documents) stays below its caps.
        free = [n for n in names if n not in short and weights[n] > 0 and by[n].target_units >= MIN_TARGET_UNITS
                and by[n].target_weight * spec.total < min(cap[n], fractions[n] * spec.total) - 1]
        for a, b in zip(free, free[1:]):
            assert by[a].target_weight / by[b].target_weight == pytest.approx(weights[a] / weights[b], rel=0.01)
        for n in short:
            # ±1: the oracle's shares may round a .5 the other way.
            assert by[n].shortfall_units > 0 and abs(by[n].shortfall_units - (wanted[n] - by[n].target_units)) <= 1
    else:
        for n in names:
            assert by[n].target_weight == pytest.approx(shares[n], abs=1e-6)
    event("rebalanced" if short else "planned as asked")
    # Weights: within 0.5% of the target whenever every target is large enough to be hit that closely.
    if all(by[n].target_units >= MIN_TARGET_UNITS for n in names if by[n].target_weight > 0):
        for n in names:
            if by[n].target_weight > 0:
                assert abs(by[n].achieved_weight - by[n].target_weight) / by[n].target_weight <= TOLERANCE, (n, by[n])
                assert by[n].achieved_weight <= fractions[n] * (1 + TOLERANCE)
            else:
                assert by[n].units == 0
        event("weights checked to 0.5%")
    # Same seed, same selection.
    assert plan_mixture("m", spec, pools).selection.equals(plan.selection)
