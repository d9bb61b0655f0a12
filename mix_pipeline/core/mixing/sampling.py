"""Choosing one source's rows for a unit target: whole passes, then a seeded remainder.

Per source, whole passes are taken while the target allows (each a new epoch), then the
remainder is filled from a seeded order: the longest prefix that fits, then the next documents
small enough to fit the gap, then a few one-for-one swaps. The order is a hash of (seed, source,
id), so the choice does not depend on shard layout, worker count or input order. Pools of at
most `EXACT_MAX_DOCS` documents are planned exactly instead (every subset sum).
"""

from __future__ import annotations

import numpy as np
import xxhash

from mix_pipeline.core.mixing.pools import Pool, mix64

# How many gap-filling picks to try after the prefix; each is one vectorised scan.
_MAX_FILL_STEPS = 10_000
# Exchanges tried after the greedy fill to close the last gap.
_SWAP_ROUNDS = 3
# Pools this small are planned exactly: all 2^n subset sums are enumerated.
EXACT_MAX_DOCS = 16


def seeded_order(seed: int, pool: Pool) -> np.ndarray:
    salt = xxhash.xxh3_64_intdigest(f"{seed}\x1forder\x1f{pool.source}".encode())
    return np.argsort(mix64(pool.doc_hash, salt), kind="stable")


def fill_remainder(units: np.ndarray, target: int, limit: int | None = None) -> np.ndarray:
    """Boolean mask over `units` (already in seeded order) whose sum lands as close to `target`
    as it cheaply can: the longest prefix that fits, then the next documents small enough for
    the gap, then a few swaps of one taken document for one untaken document that shrink the
    remaining error. The sum never exceeds `limit` (the epoch cap)."""
    take = np.zeros(len(units), dtype=bool)
    if target <= 0 or len(units) == 0:
        return take
    limit = target if limit is None else max(limit, 0)
    prefix = int(np.searchsorted(np.cumsum(units), target, side="right"))
    take[:prefix] = True
    gap = target - int(units[:prefix].sum())
    rest = np.arange(prefix, len(units))
    for _ in range(_MAX_FILL_STEPS):
        if gap <= 0 or len(rest) == 0:
            break
        fits = rest[units[rest] <= gap]
        if len(fits) == 0:
            break
        pick = fits[0]
        take[pick] = True
        gap -= int(units[pick])
        rest = fits[1:]
    for _ in range(_SWAP_ROUNDS):
        if gap == 0:
            break
        gap = _best_swap(units, take, gap, slack=limit - target)
    return take


def _best_swap(units: np.ndarray, take: np.ndarray, gap: int, slack: int) -> int:
    """Apply the single exchange (drop taken i, add untaken j; adding j alone is the case of
    i = nothing) whose change u_j - u_i best closes `gap`; return the new gap."""
    taken, untaken = np.flatnonzero(take), np.flatnonzero(~take)
    if len(untaken) == 0:
        return gap
    order = untaken[np.argsort(units[untaken], kind="stable")]
    sorted_units = units[order]
    out_units = np.concatenate([[0], units[taken]])  # 0: add without removing
    want = out_units + gap
    pos = np.searchsorted(sorted_units, want)
    best = (abs(gap), -1, -1)
    for shift in (-1, 0):
        j = np.clip(pos + shift, 0, len(order) - 1)
        delta = sorted_units[j] - out_units
        new_gap = gap - delta
        ok = -new_gap <= slack  # the sum may pass the target only within the cap
        err = np.where(ok, np.abs(new_gap), np.iinfo(np.int64).max)
        k = int(np.argmin(err))
        if err[k] < best[0]:
            best = (int(err[k]), k, int(order[j[k]]))
    _, k, j = best
    if j < 0:
        return gap
    if k > 0:
        take[taken[k - 1]] = False
    take[j] = True
    return gap - (int(units[j]) - int(out_units[k]))


def _subset_sums(units: np.ndarray) -> np.ndarray:
    """sums[m] = Σ units[i] over the set bits i of m."""
    sums = np.zeros(1, np.int64)
    for u in units.tolist():
        sums = np.concatenate([sums, sums + u])
    return sums


def exact_remainder(units: np.ndarray, target: int, limit: int) -> np.ndarray:
    """For a small pool (in seeded order): the subset whose sum is closest to `target` without
    passing `limit`; among equally close ones the lowest bitmask, so the seed decides ties."""
    sums = _subset_sums(units)
    err = np.where(sums <= limit, np.abs(sums - target), np.iinfo(np.int64).max)
    mask = int(np.argmin(err))
    return np.array([(mask >> i) & 1 for i in range(len(units))], dtype=bool)


def achievable_units(pool: Pool, cap: int) -> np.ndarray:
    """Every unit total a small pool can supply within `cap` (whole passes plus any subset)."""
    sums = np.unique(_subset_sums(pool.units))
    available = pool.available
    values = np.unique(np.concatenate([k * available + sums for k in range(cap // available + 1)]))
    return values[(values > 0) & (values <= cap)]


def plan_source(pool: Pool, target: int, cap: int, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(document index array, repeat array) of the rows chosen from one pool: whole passes while
    the target allows them, then a seeded remainder. Never more than `cap` units."""
    available = pool.available
    if target <= 0 or available == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    full = min(target // available, cap // available)
    remainder = exact_remainder if len(pool) <= EXACT_MAX_DOCS else fill_remainder
    rem_mask = remainder(pool.units[order], target - full * available, limit=cap - full * available)
    n = len(pool)
    chosen = order[rem_mask]
    doc_idx = [np.arange(n, dtype=np.int64)] * full + [chosen.astype(np.int64)]
    repeats = [np.full(n, r, dtype=np.int32) for r in range(full)] + [np.full(len(chosen), full, dtype=np.int32)]
    return np.concatenate(doc_idx), np.concatenate(repeats)
