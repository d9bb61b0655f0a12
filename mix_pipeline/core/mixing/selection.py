"""Planning a mixture: which rows of which sources, in which split and output order (`plan_mixture`).

Selection works on per-document arrays (see pools.py) and never on text, so planning a mixture
over millions of documents is arrays and sorting. The phases: per-source unit targets from the
weights and caps (weights.py), each source's rows for a target (sampling.py), searched over
targets until the achieved weights are close (`plan_targets` here), each row's split
(splits.py), then the selection table with each row's seeded output order, and the per-source
ledger the manifest reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

from mix_pipeline.core.mixing.pools import Pool, mix64
from mix_pipeline.core.mixing.sampling import EXACT_MAX_DOCS, achievable_units, plan_source, seeded_order
from mix_pipeline.core.mixing.splits import SPLITS, split_rows
from mix_pipeline.core.mixing.weights import Allocation, InfeasibleMixture, allocate

# Rounds of re-anchoring the total on the source that misses its weight most.
_ANCHOR_ROUNDS = 6
# How far the achieved total may drift from the requested one to bring coarse sources in line.
_TOTAL_DRIFT = 1.25
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class SourceLedger:
    source: str
    target_weight: float
    achieved_weight: float
    target_units: int
    units: int
    documents: int
    rows: int
    available_units: int
    available_documents: int
    epochs: float
    requested_weight: float = 0.0
    max_epochs: float = 1.0
    max_fraction: float = 1.0
    shortfall_units: int = 0
    tokens: int = 0


@dataclass
class Plan:
    # source, file, row, repeat, units, tokens, split, order_key; None where the plan was made by a
    # task (core/stages/mixture.py) and only its ledger came back.
    selection: pa.Table | None
    ledger: list[SourceLedger]
    weighting: dict
    rebalanced: dict[str, int]


def plan_mixture(name: str, spec, pools: dict[str, Pool]) -> Plan:
    """Plan a mixture over `pools` (one per source the mixture draws from).

    Documents are indivisible, so a source of few large documents can miss its target by up to
    one document. Weights matter more than the exact total: when sources with few documents
    cannot all hit their targets, the total moves (by at most 25%) to one where each of them can
    supply close to its share, and when a source still misses, the total is re-anchored on it
    and the others re-planned (a few rounds, within every source's caps, keeping the best
    round); the manifest reports the achieved total.

    The phases: allocate (`allocate`: weights and caps → unit targets), choose the rows
    (`plan_targets`), split them (`split_rows`), then the selection table (`selection_table`)
    and the ledger (`source_ledgers`).
    """
    sources = sorted(pools)
    available = {s: pools[s].available for s in sources}
    try:
        alloc = allocate(spec, available)
    except InfeasibleMixture as exc:
        raise InfeasibleMixture(f"mixture '{name}': {exc}") from None
    plans, targets = plan_targets(spec, pools, alloc)
    # What each short source was asked for but could not give (the others received it).
    rebalanced = {s: alloc.wanted[s] - targets[s] for s in sorted(alloc.short)}
    selection = selection_table(spec.seed, pools, plans, split_rows(spec, pools, plans, sources))
    ledger = source_ledgers(spec, alloc, pools, plans, targets, rebalanced)
    weighting = {"kind": "explicit"} if spec.weights is not None else {"kind": "temperature", "temperature": spec.temperature}
    return Plan(selection, ledger, weighting, rebalanced)


# (worst relative weight error, error per source, units got per source, plans, targets)
_Attempt = tuple[float, dict[str, float], dict[str, int], dict[str, tuple[np.ndarray, np.ndarray]], dict[str, int]]


class TargetSearch:
    """Plans every source for a set of unit targets (each source's plan cached per target) and
    scores the result by its worst relative weight error."""

    def __init__(self, spec, pools: dict[str, Pool], alloc: Allocation):
        self.sources = sorted(pools)
        self.pools, self.alloc, self.shares = pools, alloc, alloc.shares
        self.orders = {s: seeded_order(spec.seed, pools[s]) for s in self.sources}
        self.cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def attempt(self, targets: dict[str, int]) -> _Attempt:
        """Plan every source for `targets`: (worst error, errors, units got, plans, targets)."""
        pools, shares, plans = self.pools, self.shares, {}
        for s in self.sources:
            if (s, targets[s]) not in self.cache:
                self.cache[(s, targets[s])] = plan_source(pools[s], targets[s], self.alloc.caps[s], self.orders[s])
            plans[s] = self.cache[(s, targets[s])]
        got = {s: int(pools[s].units[plans[s][0]].sum()) for s in self.sources}
        total_got = sum(got.values())
        errors = {s: abs(got[s] / total_got - shares[s]) / shares[s] for s in self.sources if shares[s] > 0 and total_got}
        # An empty plan is the worst, not a perfect one (re-anchoring on a source that gave nothing
        # asks every source for 0 units).
        worst = max(errors.values(), default=0.0) if total_got else math.inf
        return worst, errors, got, plans, targets


def plan_targets(spec, pools: dict[str, Pool], alloc: Allocation) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """(plans, targets) of the best attempt: the allocation's targets, then a moved common total
    when coarse sources miss (`move_total`), then re-anchoring rounds (`reanchor`)."""
    search = TargetSearch(spec, pools, alloc)
    good_enough = spec.tolerance / 4
    best = search.attempt(dict(alloc.targets))
    best = move_total(search, spec.total, best, good_enough)
    best = reanchor(search, best, good_enough)
    _, _, _, plans, targets = best
    return plans, targets


def move_total(search: TargetSearch, total: int, best: _Attempt, good_enough: float) -> _Attempt:
    """When the best attempt misses and some sources have few documents (planned exactly), try the
    total (within the allowed drift) at which each of them can supply close to its share; returns
    the better attempt."""
    pools, alloc, shares, sources = search.pools, search.alloc, search.shares, search.sources
    coarse = {s: achievable_units(pools[s], alloc.caps[s]) for s in sources
              if shares[s] > 0 and 0 < len(pools[s]) <= EXACT_MAX_DOCS}
    if best[0] > good_enough and coarse:
        most = min(alloc.caps[s] / shares[s] for s in sources if shares[s] > 0)
        common = _common_total(coarse, shares, total, most, good_enough)
        if common is not None:
            moved = {s: min(int(round(common * shares[s])), alloc.caps[s]) for s in sources}
            best = min(best, search.attempt(moved), key=lambda b: b[0])
    return best


def _common_total(coarse: dict[str, np.ndarray], shares: dict[str, float], total: int, most: float,
                  floor: float) -> float | None:
    """A total T at which every coarse source can supply close to T·share: the narrowest window
    of T-ratios (a/share) holding one achievable value of each, preferring T near `total`
    among windows narrower than `floor`. None when no window lies within the allowed drift."""
    values, labels = [], []
    for k, (s, a) in enumerate(sorted(coarse.items())):
        r = a / shares[s]
        r = r[(r >= total / _TOTAL_DRIFT) & (r <= min(total * _TOTAL_DRIFT, most))]
        if not len(r):
            return None
        values.append(r)
        labels.append(np.full(len(r), k))
    v, lab = np.concatenate(values), np.concatenate(labels)
    order = np.argsort(v, kind="stable")
    v, lab = v[order].tolist(), lab[order].tolist()
    counts, have, lo, best = [0] * len(coarse), 0, 0, None
    for hi in range(len(v)):
        counts[lab[hi]] += 1
        have += counts[lab[hi]] == 1
        while have == len(coarse):
            center = math.sqrt(v[lo] * v[hi])
            key = (max(v[hi] / v[lo] - 1, floor), abs(center / total - 1))
            if best is None or key < best[0]:
                best = (key, center)
            counts[lab[lo]] -= 1
            have -= counts[lab[lo]] == 0
            lo += 1
    return best[1] if best else None


def reanchor(search: TargetSearch, best: _Attempt, good_enough: float) -> _Attempt:
    """Up to _ANCHOR_ROUNDS times: re-anchor the total on the source that misses its weight most
    (it keeps its target, the others are scaled to it), within every source's caps; returns the
    best attempt seen."""
    shares, sources, caps = search.shares, search.sources, search.alloc.caps
    current = best
    for _ in range(_ANCHOR_ROUNDS):
        worst_error, errors, got, _, targets = current
        if worst_error <= good_enough or not errors:
            break
        worst = max(errors, key=lambda s: (errors[s], s))
        anchor = got[worst] / shares[worst]
        anchored = {s: int(round(anchor * shares[s])) for s in sources}
        anchored[worst] = targets[worst]
        if any(anchored[s] > caps[s] for s in sources):
            break
        current = search.attempt(anchored)
        best = min(best, current, key=lambda b: b[0])
    return best


def selection_table(seed: int, pools: dict[str, Pool], plans: dict, splits_by_source: dict[str, np.ndarray]) -> pa.Table:
    """The selection: one row per chosen (document, repeat) of every source, with its position
    (file, row), units, tokens, split and `order_key` (the seeded output order)."""
    sources = sorted(pools)
    source_names, split_names = pa.array(sources), pa.array(list(SPLITS))
    tables = []
    for s in sources:
        pool = pools[s]
        idx, rep = plans[s]
        order_salt = xxhash.xxh3_64_intdigest(f"{seed}\x1foutput\x1f{s}".encode())
        with np.errstate(over="ignore"):
            order_key = mix64(mix64(pool.doc_hash[idx], order_salt) + (rep.astype(np.uint64) + np.uint64(1)) * _GOLDEN, 0)
        file_idx = np.searchsorted(pool.file_starts, idx, side="right") - 1
        unit_array = pa.array(pool.units[idx], pa.int64())
        tables.append(
            pa.table(
                {
                    # Dictionary-encoded with one shared dictionary: a byte per row, not a string.
                    "source": pa.DictionaryArray.from_arrays(
                        pa.array(np.full(len(idx), sources.index(s), np.int16)), source_names),
                    "file": pa.array(file_idx.astype(np.int32)),
                    "row": pa.array((idx - pool.file_starts[file_idx]).astype(np.int32)),
                    "repeat": pa.array(rep, pa.int32()),
                    "units": unit_array,
                    "tokens": unit_array if pool.tokens is pool.units else pa.array(pool.tokens[idx], pa.int64()),
                    "split": pa.DictionaryArray.from_arrays(pa.array(splits_by_source[s]), split_names),
                    "order_key": pa.array(order_key.view(np.int64), pa.int64()),
                }
            )
        )
    return pa.concat_tables(tables)


def source_ledgers(spec, alloc: Allocation, pools: dict[str, Pool], plans: dict, targets: dict[str, int],
                   rebalanced: dict[str, int]) -> list[SourceLedger]:
    """One ledger row per source: what it was asked for, what it gave (units, documents, rows,
    epochs, tokens) and its achieved weight."""
    ledger = []
    for s in sorted(pools):
        pool = pools[s]
        idx, rep = plans[s]
        available = pool.available
        units = int(pool.units[idx].sum())
        ledger.append(
            SourceLedger(
                source=s,
                target_weight=round(alloc.shares[s], 6),
                achieved_weight=0.0,
                target_units=targets[s],
                units=units,
                documents=len(pool) if len(rep) and rep.max() > 0 else len(idx),
                rows=len(idx),
                available_units=available,
                available_documents=len(pool),
                epochs=round(units / available, 4) if available else 0.0,
                requested_weight=round(alloc.requested[s], 6),
                max_epochs=spec.max_epochs_of(s),
                max_fraction=spec.max_fraction_of(s),
                shortfall_units=rebalanced.get(s, 0),
                tokens=int(pool.tokens[idx].sum()),
            )
        )
    total_units = sum(row.units for row in ledger)
    for row in ledger:
        row.achieved_weight = round(row.units / total_units, 6) if total_units else 0.0
    return ledger
