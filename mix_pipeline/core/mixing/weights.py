"""From a recipe's weights, caps and total to per-source unit targets (`allocate`), or a refusal.

Weights: explicit (`weights`, normalised) or by temperature (∝ available units^(1/T)). A
source's `max_fraction` caps its share; what a capped source gives up goes to the others in
proportion to their weights (water-filling). A source may supply at most
`available × max_epochs` units. When a target does not fit, the mixture fails naming the source
and how short it is, or, with `on_infeasible: rebalance`, the shortfall is water-filled onto the
other sources the same way and recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class InfeasibleMixture(ValueError):
    pass


def water_fill(weights: dict[str, float], caps: dict[str, float], total: float) -> dict[str, float]:
    """amount[s] = min(caps[s], λ·weights[s]) with Σ amount = total where possible: sources that
    hit their cap keep it and the rest is shared out in proportion to the others' weights.
    The sum falls short of `total` only when every source with weight is at its cap."""
    fixed: dict[str, float] = {}
    while True:
        free = [s for s in weights if s not in fixed and weights[s] > 0]
        rest = total - sum(fixed.values())
        if not free or rest <= 0:
            break
        scale = rest / sum(weights[s] for s in free)
        over = [s for s in free if weights[s] * scale > caps[s] * (1 + 1e-12)]
        if not over:
            return {s: fixed.get(s, weights[s] * scale if s in free else 0.0) for s in weights}
        for s in over:
            fixed[s] = caps[s]
    return {s: fixed.get(s, 0.0) for s in weights}


@dataclass
class Allocation:
    requested: dict[str, float]  # normalised recipe (or temperature) weights
    shares: dict[str, float]  # what the planner aims for: after max_fraction caps and rebalancing
    targets: dict[str, int]
    caps: dict[str, int]  # most units a source may supply (available × max_epochs)
    wanted: dict[str, int]  # targets before rebalancing
    short: set[str]  # sources that could not supply what they were asked for


def requested_weights(spec, available: dict[str, int]) -> dict[str, float]:
    if spec.weights is not None:
        raw = {s: float(spec.weights[s]) for s in available}
    else:
        raw = {s: float(n) ** (1.0 / spec.temperature) if n > 0 else 0.0 for s, n in available.items()}
    total = sum(raw.values())
    if total <= 0:
        raise InfeasibleMixture("no source has any units to draw from")
    return {s: w / total for s, w in raw.items()}


def allocate(spec, available: dict[str, int]) -> Allocation:
    """Turn the recipe's weights, caps and total into per-source unit targets (or refuse)."""
    sources = sorted(available)
    requested = requested_weights(spec, available)
    fraction_caps = {s: spec.max_fraction_of(s) for s in sources}
    capped = water_fill(requested, fraction_caps, 1.0)
    if sum(capped.values()) < 1 - 1e-9:
        drawn = [s for s in sources if requested[s] > 0]
        raise InfeasibleMixture(
            f"the max_fraction caps of {', '.join(drawn)} add up to {sum(fraction_caps[s] for s in drawn):g} < 1"
        )
    caps = {s: math.floor(available[s] * spec.max_epochs_of(s)) for s in sources}
    wanted = {s: int(round(spec.total * capped[s])) for s in sources}
    short = {s: wanted[s] - caps[s] for s in sources if wanted[s] > caps[s]}
    if not short:
        return Allocation(requested, capped, wanted, caps, wanted, set())
    if spec.on_infeasible == "fail":
        s = min(short, key=lambda k: (-short[k] / max(wanted[k], 1), k))
        if available[s] == 0:
            raise InfeasibleMixture(f"source '{s}' has no documents left after filtering and dedup")
        raise InfeasibleMixture(
            f"source '{s}' is short: the target needs {wanted[s]:,} units but {available[s]:,} are available "
            f"and max_epochs={spec.max_epochs_of(s):g} allows {caps[s]:,} (short by {short[s]:,}); "
            "raise max_epochs, lower total, or set on_infeasible: rebalance"
        )
    unit_caps = {s: min(caps[s], fraction_caps[s] * spec.total) for s in sources}
    amounts = water_fill(requested, unit_caps, float(spec.total))
    supplied = sum(amounts.values())
    if supplied < spec.total * (1 - 1e-9):
        raise InfeasibleMixture(
            f"even rebalanced, the sources can supply at most {math.floor(supplied):,} of the {spec.total:,} "
            f"units requested (short by {spec.total - math.floor(supplied):,}; "
            f"short: {', '.join(f'{s} by {n:,}' for s, n in sorted(short.items()))})"
        )
    targets = {s: min(int(round(amounts[s])), caps[s]) for s in sources}
    shares = {s: targets[s] / sum(targets.values()) for s in sources}
    return Allocation(requested, shares, targets, caps, wanted, set(short))
