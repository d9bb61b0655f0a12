"""Choosing a mixture's documents to hit target weights, and writing it out.

Selection works on per-document arrays (units, a hash of the id, a hash of the document's
near-duplicate cluster) and never on text or Python strings, so planning a mixture over
millions of documents is arrays and sorting.

Weights: explicit (`weights`, normalised) or by temperature (∝ available units^(1/T)). A
source's `max_fraction` caps its share; what a capped source gives up goes to the others in
proportion to their weights (water-filling). A source may supply at most
`available × max_epochs` units. When a target does not fit, the mixture fails naming the source
and how short it is, or, with `on_infeasible: rebalance`, the shortfall is water-filled onto the
other sources the same way and recorded.

Per source, whole passes are taken while the target allows (each a new epoch), then the
remainder is filled from a seeded order: the longest prefix that fits, then the next documents
small enough to fit the gap, then a few one-for-one swaps. The order is a hash of (seed, source,
id), so the choice does not depend on shard layout, worker count or input order.

Splits are keyed on the document's cluster survivor (itself, unless dedup kept it as a near or
exact copy of another document), never on the seed: all copies of a document and all its
repeats land in one split. They are stratified by source: per source, validation and then test
take the survivors with the lowest split hashes (a seed-free order) whose units come closest,
from below, to the split's fraction of the source's units, so every split keeps the mixture's
proportions (as closely as whole documents allow). A survivor whose copies sit in another source
(or in no other document of the mixture but of another source) cannot follow two sources' quotas:
it keeps the hash threshold (`u < validation` → validation, then test), the same in every mixture.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from mix_pipeline.core.arrays import runs
from mix_pipeline.core.io.documents import sql_strings
from mix_pipeline.core.io.faults import crash_point

SPLITS = ("train", "validation", "test")
# How many gap-filling picks to try after the prefix; each is one vectorised scan.
_MAX_FILL_STEPS = 10_000
# Exchanges tried after the greedy fill to close the last gap.
_SWAP_ROUNDS = 3
# Rounds of re-anchoring the total on the source that misses its weight most.
_ANCHOR_ROUNDS = 6
# Pools this small are planned exactly: all 2^n subset sums are enumerated.
_EXACT_MAX_DOCS = 16
# How far the achieved total may drift from the requested one to bring coarse sources in line.
_TOTAL_DRIFT = 1.25
# Ids hashed per batch: bounds the Python strings alive at once.
_LOAD_BATCH_ROWS = 65_536

_U64 = np.uint64
_MIX1, _MIX2, _GOLDEN = _U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53), _U64(0x9E3779B97F4A7C15)
_SPLIT_SALT = xxhash.xxh3_64_intdigest(b"mix_pipeline/split")


class InfeasibleMixture(ValueError):
    pass


# ---- hashing ---------------------------------------------------------------------------------
def _hash64(parts: list[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(p.encode("utf-8")) for p in parts), dtype=np.uint64, count=len(parts))


def _mix64(h: np.ndarray, salt: int) -> np.ndarray:
    """A bijective 64-bit finaliser (murmur3's fmix64) of h XOR salt: a fresh uniform hash per salt."""
    h = h ^ _U64(salt)
    with np.errstate(over="ignore"):
        h ^= h >> _U64(33)
        h *= _MIX1
        h ^= h >> _U64(33)
        h *= _MIX2
        h ^= h >> _U64(33)
    return h


def document_hashes(source: str, ids: list[str]) -> np.ndarray:
    """The seed-free identity of each document: xxh3 of (source, id)."""
    return _hash64([f"{source}\x1f{i}" for i in ids])


def split_codes(split_hash: np.ndarray, validation: float, test: float) -> np.ndarray:
    """0 = train, 1 = validation, 2 = test, from a uniform 64-bit hash."""
    u = split_hash.astype(np.float64) / 2.0**64
    return np.where(u < validation, 1, np.where(u < validation + test, 2, 0)).astype(np.int8)


def stratified_split_codes(units: np.ndarray, split_hash: np.ndarray, pinned: np.ndarray, pinned_codes: np.ndarray,
                           validation: float, test: float) -> np.ndarray:
    """Split codes for one source's selected rows (`units` each, keyed by `split_hash`; rows of one
    key go together). Rows where `pinned` keep `pinned_codes`; the other keys are taken in hash
    order for validation, then test, as close to `fraction × units.sum()` (less what the pinned
    rows already give the split; for test, less what validation took beyond its share) as whole
    keys allow. The rest is train."""
    codes = np.zeros(len(units), np.int8)
    codes[pinned] = pinned_codes[pinned]
    free = ~pinned
    if not free.any():
        return codes
    total = int(units.sum())
    keys, inverse = np.unique(split_hash[free], return_inverse=True)  # sorted: hash order
    key_units = np.bincount(inverse, weights=units[free], minlength=len(keys)).astype(np.int64)
    key_codes = np.zeros(len(keys), np.int8)
    available = np.ones(len(keys), bool)
    # Test aims at what validation and test should hold together, less what validation took: the
    # source's train share depends on their sum, so a coarse validation pick is made up by test.
    held = 0
    for code, fraction, cumulative in ((1, validation, validation), (2, test, validation + test)):
        if fraction <= 0:
            continue
        target = int(round(cumulative * total)) - held - int(units[pinned & (codes == code)].sum())
        at = np.flatnonzero(available)
        # Closest to the target, possibly above it by less than the target itself (so a split never
        # takes a document more than twice its share, and a small source's train is not emptied).
        take = at[fill_remainder(key_units[at], target, limit=2 * target)] if target > 0 else at[:0]
        key_codes[take] = code
        available[take] = False
        held += int(key_units[take].sum()) + int(units[pinned & (codes == code)].sum())
    codes[free] = key_codes[inverse]
    return codes


# ---- pools -----------------------------------------------------------------------------------
@dataclass
class Pool:
    """One source's documents as arrays, in file order.

    `units` is what the mixture counts (tokens, or 1 per document/example); `tokens` the token
    counts (the same array when the unit is tokens). `file_starts[k]` is the index of the
    first document of file k (for joining back to the shards by position). Splits are keyed on
    each document's cluster survivor: itself, except for the `copies` (sorted indices), whose
    survivor's identity hash and source are in `copy_hash` and `copy_source`. Kept sparse:
    16 bytes per document plus the copies."""

    source: str
    units: np.ndarray
    tokens: np.ndarray
    doc_hash: np.ndarray
    file_starts: np.ndarray
    copies: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    copy_hash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    copy_source: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __len__(self) -> int:
        return len(self.units)

    @property
    def available(self) -> int:
        return int(self.units.sum())

    def survivors(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For documents `idx`: the split hash of their survivor, and (positions in idx, survivor
        source) of those whose survivor is another document."""
        key = self.doc_hash[idx]
        at = np.zeros(0, np.int64)
        sources = np.zeros(0, dtype=object)
        if len(self.copies) and len(idx):
            pos = np.minimum(np.searchsorted(self.copies, idx), len(self.copies) - 1)
            at = np.flatnonzero(self.copies[pos] == idx)
            key = key.copy()
            key[at] = self.copy_hash[pos[at]]
            sources = self.copy_source[pos[at]]
        return _mix64(key, _SPLIT_SALT), at, sources

    @classmethod
    def from_ids(cls, source: str, ids: list[str], units, tokens=None, survivors: dict[str, tuple[str, str]] | None = None) -> Pool:
        """An in-memory pool (library use and tests); `survivors[id] = (source, id)` of its cluster survivor."""
        units = np.asarray(units, dtype=np.int64)
        copies = [i for i, doc_id in enumerate(ids) if survivors and doc_id in survivors]
        pairs = [survivors[ids[i]] for i in copies]
        return cls(
            source=source,
            units=units,
            tokens=units if tokens is None else np.asarray(tokens, dtype=np.int64),
            doc_hash=document_hashes(source, ids),
            file_starts=np.array([0, len(ids)], dtype=np.int64),
            copies=np.array(copies, dtype=np.int64),
            copy_hash=_hash64([f"{s}\x1f{i}" for s, i in pairs]),
            copy_source=np.array([s for s, _ in pairs], dtype=object),
        )


def read_survivors(cluster_files: list[str], source: str) -> pa.Table | None:
    """(id, duplicate_of_source, duplicate_of) of the source's documents that are copies of another,
    from the dedup index's cluster files of that source (one per snapshot)."""
    files = [f for f in cluster_files if os.path.exists(f)]
    if not files:
        return None
    table = pa.concat_tables(
        pq.read_table(f, columns=["source", "id", "duplicate_of_source", "duplicate_of"]) for f in sorted(files)
    )
    table = table.filter(pc.equal(table["source"], source)).drop(["source"])
    return table.filter(pc.is_valid(table["duplicate_of"]))


def load_pool(source: str, files: list[str], unit: str, survivors: pa.Table | None = None) -> Pool:
    """Read (id, n_tokens) of a source's deduplicated shards a file at a time (Arrow, compact),
    keeping only arrays."""
    tokens, doc_hashes, counts = [], [], []
    copies, copy_hash, copy_source = [], [], []
    offset = 0
    survivor_ids = survivors.column("id").combine_chunks() if survivors is not None and survivors.num_rows else None
    for path in files:
        table = pq.read_table(path, columns=["id", "n_tokens"])
        tokens.append(table.column("n_tokens").to_numpy().astype(np.int64))
        ids = table.column("id")
        # Hash in batches: only one batch of ids is ever alive as Python strings.
        for start in range(0, table.num_rows, _LOAD_BATCH_ROWS):
            doc_hashes.append(document_hashes(source, ids.slice(start, _LOAD_BATCH_ROWS).to_pylist()))
        if survivor_ids is not None:
            # One lookup per file: index_in rebuilds its hash table on every call.
            where = pc.index_in(ids, value_set=survivor_ids)
            hit = np.flatnonzero(where.is_valid().to_numpy(zero_copy_only=False))
            if len(hit):
                at = pa.array(where.to_numpy(zero_copy_only=False)[hit].astype(np.int64))
                s_sources = survivors.column("duplicate_of_source").take(at).to_pylist()
                s_ids = survivors.column("duplicate_of").take(at).to_pylist()
                copies.append(hit + offset)
                copy_hash.append(_hash64([f"{s}\x1f{i}" for s, i in zip(s_sources, s_ids)]))
                copy_source.append(np.array(s_sources, dtype=object))
        counts.append(table.num_rows)
        offset += table.num_rows
    token_array = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
    return Pool(
        source=source,
        units=token_array if unit == "tokens" else np.ones(len(token_array), np.int64),
        tokens=token_array,
        doc_hash=np.concatenate(doc_hashes) if doc_hashes else np.zeros(0, np.uint64),
        file_starts=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        copies=np.concatenate(copies) if copies else np.zeros(0, np.int64),
        copy_hash=np.concatenate(copy_hash) if copy_hash else np.zeros(0, np.uint64),
        copy_source=np.concatenate(copy_source) if copy_source else np.zeros(0, dtype=object),
    )


def seeded_order(seed: int, pool: Pool) -> np.ndarray:
    salt = xxhash.xxh3_64_intdigest(f"{seed}\x1forder\x1f{pool.source}".encode())
    return np.argsort(_mix64(pool.doc_hash, salt), kind="stable")


# ---- weights ---------------------------------------------------------------------------------
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


# ---- per-source selection --------------------------------------------------------------------
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


def plan_source(pool: Pool, target: int, cap: int, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(document index array, repeat array) of the rows chosen from one pool: whole passes while
    the target allows them, then a seeded remainder. Never more than `cap` units."""
    available = pool.available
    if target <= 0 or available == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    full = min(target // available, cap // available)
    remainder = exact_remainder if len(pool) <= _EXACT_MAX_DOCS else fill_remainder
    rem_mask = remainder(pool.units[order], target - full * available, limit=cap - full * available)
    n = len(pool)
    chosen = order[rem_mask]
    doc_idx = [np.arange(n, dtype=np.int64)] * full + [chosen.astype(np.int64)]
    repeats = [np.full(n, r, dtype=np.int32) for r in range(full)] + [np.full(len(chosen), full, dtype=np.int32)]
    return np.concatenate(doc_idx), np.concatenate(repeats)


# ---- the mixture -----------------------------------------------------------------------------
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
    selection: pa.Table  # source, file, row, repeat, units, tokens, split, order_key
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
    (`plan_targets`), split them (`_split_rows`), then the selection table (`selection_table`)
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
    selection = selection_table(spec.seed, pools, plans, _split_rows(spec, pools, plans, sources))
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
              if shares[s] > 0 and 0 < len(pools[s]) <= _EXACT_MAX_DOCS}
    if best[0] > good_enough and coarse:
        most = min(alloc.caps[s] / shares[s] for s in sources if shares[s] > 0)
        common = _common_total(coarse, shares, total, most, good_enough)
        if common is not None:
            moved = {s: min(int(round(common * shares[s])), alloc.caps[s]) for s in sources}
            best = min(best, search.attempt(moved), key=lambda b: b[0])
    return best


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
            order_key = _mix64(_mix64(pool.doc_hash[idx], order_salt) + (rep.astype(np.uint64) + _U64(1)) * _GOLDEN, 0)
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


def _split_rows(spec, pools: dict[str, Pool], plans: dict, sources: list[str]) -> dict[str, np.ndarray]:
    """The split code of every selected row, per source (see the module docstring)."""
    keyed = {}
    for s in sources:
        idx = plans[s][0]
        split_hash, copied, survivor_source = pools[s].survivors(idx)
        own = spec.splits_of(s)
        threshold = split_codes(split_hash, own.validation, own.test)
        # A copy whose survivor lives in another source follows that source's fractions.
        pinned = np.zeros(len(idx), bool)
        for other in sorted(set(survivor_source.tolist()) - {s}):
            at = copied[survivor_source == other]
            theirs = spec.splits_of(other)
            threshold[at] = split_codes(split_hash[at], theirs.validation, theirs.test)
            pinned[at] = True
        keyed[s] = (split_hash, threshold, pinned)
    # A key held by rows of two sources is pinned in both: one split, by the hash threshold.
    uniques = [np.unique(keyed[s][0]) for s in sources]
    if len(uniques) > 1:
        keys, counts = np.unique(np.concatenate(uniques), return_counts=True)
        shared = keys[counts > 1]
    else:
        shared = np.zeros(0, np.uint64)
    out = {}
    for s in sources:
        split_hash, threshold, pinned = keyed[s]
        # Every row of a pinned key keeps the threshold split; all of them use the fractions of the
        # key's survivor's source, so they agree.
        pinned = np.isin(split_hash, np.union1d(split_hash[pinned], shared))
        own = spec.splits_of(s)
        out[s] = stratified_split_codes(pools[s].units[plans[s][0]], split_hash, pinned, threshold,
                                        own.validation, own.test)
    return out


# ---- writing ---------------------------------------------------------------------------------
# Chat turns as the `messages` column: a list of {role, content} (extra per-turn keys are dropped).
_MESSAGES_TYPE = '[{"role": "VARCHAR", "content": "VARCHAR"}]'


def write_mixture(
    selection: pa.Table,
    source_files: dict[str, list[str]],
    out_dir: str,
    shard_rows: int,
    duckdb_temp_dir: str,
    chat_sources: list[str] = (),
    jsonl: bool = False,
    log=lambda msg: None,
) -> dict[str, dict]:
    """Join the selection with the deduplicated documents and write shuffled shards per split.

    Rows are joined by position (file, row) and written in `order_key` order; pyarrow writes
    fixed-size shards, so the same selection always yields the same bytes. Chat sources get a
    `messages` column.

    The phases, per split: its rows with their documents spread over one file per range of the
    output order (`_spread_by_range`, a row group of the documents at a time), each range sorted
    on its own by DuckDB (`_rows_in_order`), so memory holds a row group and a range and not the
    split; then fixed-size shards (`ShardWriter`) and the split's summary (`split_summary`).
    """
    metadata, extra = _output_columns(chat_sources)
    sums = selection.group_by(["split", "source"]).aggregate([("units", "sum"), ("tokens", "sum"), ("units", "count")])
    counted = {(r["split"], r["source"]): r for r in sums.to_pylist()}
    splits: dict[str, dict] = {}
    os.makedirs(duckdb_temp_dir, exist_ok=True)
    for split in SPLITS:
        split_dir = os.path.join(out_dir, split)
        os.makedirs(split_dir, exist_ok=True)
        shards = ShardWriter(split_dir, shard_rows, jsonl)
        folder = tempfile.mkdtemp(prefix=f"mixture-{split}-", dir=duckdb_temp_dir)
        try:
            rows = selection.filter(pc.equal(selection["split"], split))
            range_files = _spread_by_range(rows, sort_ranges(rows), source_files, folder)
            for batch in _rows_in_order(range_files, metadata, extra, duckdb_temp_dir):
                shards.write(batch)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        shards.close()
        splits[split] = split_summary(split, counted, sorted(source_files), out_dir, shards)
        log(f"mixture: {split}: {shards.rows} rows in {len(shards.files)} shard(s)")
    return splits


def _duckdb(temp_dir: str):
    """A DuckDB connection whose memory is bounded, spilling to `temp_dir`."""
    import duckdb

    os.makedirs(temp_dir, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{temp_dir}'")
    con.execute("SET memory_limit='1GB'")
    return con


def _output_columns(chat_sources: list[str]) -> tuple[str, str]:
    """(the SQL of the `metadata` column, extra columns): chat sources get their turns as a
    `messages` column, and no longer in metadata."""
    if not chat_sources:
        return "d.metadata", ""
    chat = sql_strings(list(chat_sources))
    extra = (f", CASE WHEN d.source IN ({chat}) THEN "
             f"json_transform(json_extract(d.metadata, '$.messages'), '{_MESSAGES_TYPE}') END AS messages")
    # The turns live in `messages`; keeping them in metadata too would store them twice.
    metadata = f"CASE WHEN d.source IN ({chat}) THEN json_merge_patch(d.metadata, '{{\"messages\": null}}') ELSE d.metadata END"
    return metadata, extra


# ---- output order in bounded memory ------------------------------------------------------------
# A split is sorted one range of `order_key` at a time: its rows are first spread over range files
# (one pass over the documents), then each range is sorted alone. About this many tokens per range
# (~8 MB of text), so sorting holds one range's documents however large the mixture is...
SORT_RANGE_TOKENS = 2_000_000
# ...and no more ranges than this (files open at once while spreading); past it ranges grow, and
# DuckDB's sort spills a range that outgrows its memory limit.
MAX_SORT_RANGES = 256
# The documents' columns a mixture row carries.
_DOCUMENT_COLUMNS = ["id", "text", "source", "domain", "metadata", "n_tokens"]


def sort_ranges(rows: pa.Table) -> np.ndarray:
    """Each of a split's rows' range of `order_key`: consecutive key ranges of about
    `SORT_RANGE_TOKENS` tokens (rows count one token more, so documents without tokens still
    spread), numbered in key order. Rows with the same key share a range."""
    keys = rows.column("order_key").to_numpy()
    if not len(keys):
        return np.zeros(0, np.int32)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cumulative = np.cumsum(rows.column("tokens").to_numpy().astype(np.int64)[order] + 1)
    total = int(cumulative[-1])
    per_range = max(SORT_RANGE_TOKENS, -(-total // MAX_SORT_RANGES))
    cuts = np.searchsorted(cumulative, np.arange(per_range, total, per_range), side="right")
    first_keys = np.unique(sorted_keys[cuts])  # where each range after the first starts
    return np.searchsorted(first_keys, keys, side="right").astype(np.int32)


def _spread_by_range(rows: pa.Table, ranges: np.ndarray, source_files: dict[str, list[str]], folder: str) -> list[str]:
    """Write a split's selected `rows` with their documents to one Parquet file per sort range
    (`ranges`, see `sort_ranges`), reading the documents a row group at a time (and only row
    groups with a selected row); the files' paths, in range order. Each range is sorted later,
    so rows go in as they are read."""
    names, codes = np.unique(rows.column("source").to_numpy(zero_copy_only=False), return_inverse=True)
    row_numbers = rows.column("row").to_numpy()
    # Rows by (source, file, row): each file's rows are one slice, in file order.
    file_keys = (codes.astype(np.int64) << 32) | rows.column("file").to_numpy().astype(np.int64)
    order = np.lexsort((row_numbers, file_keys))
    file_keys = file_keys[order]
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for code, src in enumerate(names.tolist()):
            for k, path in enumerate(source_files[src]):
                lo, hi = np.searchsorted(file_keys, [(code << 32) | k, ((code << 32) | k) + 1])
                if hi == lo:
                    continue
                at = order[lo:hi]
                for group, positions, picked in _row_group_picks(pq.ParquetFile(path), row_numbers[at], at):
                    picked_rows = rows.take(pa.array(picked))
                    piece = group.take(pa.array(positions)).select(_DOCUMENT_COLUMNS)
                    piece = (piece.append_column("epoch", picked_rows["repeat"])
                             .append_column("order_key", picked_rows["order_key"])
                             .append_column("src", picked_rows["source"]))
                    _scatter(piece, ranges[picked], writers, folder)
    finally:
        for writer in writers.values():
            writer.close()
    return [writers[k].where for k in sorted(writers)]


def _row_group_picks(parquet: pq.ParquetFile, wanted: np.ndarray, ids: np.ndarray):
    """(row group table, positions in it, ids of those rows) for each row group holding one of the
    `wanted` row numbers (sorted; repeats allowed), in file order. Row groups with none are not read."""
    start = 0
    for g in range(parquet.metadata.num_row_groups):
        end = start + parquet.metadata.row_group(g).num_rows
        lo, hi = np.searchsorted(wanted, [start, end])
        if hi > lo:
            yield parquet.read_row_group(g, columns=_DOCUMENT_COLUMNS), wanted[lo:hi] - start, ids[lo:hi]
        start = end


def _scatter(piece: pa.Table, ranges: np.ndarray, writers: dict, folder: str) -> None:
    """Append each row of `piece` to its range's file (opened on first use)."""
    order = np.argsort(ranges, kind="stable")
    ranges, piece = ranges[order], piece.take(pa.array(order))
    starts, counts = runs(ranges)
    for start, count in zip(starts.tolist(), counts.tolist()):
        k = int(ranges[start])
        if k not in writers:
            # Read back once, right away: no compression, no dictionary, no statistics.
            writers[k] = pq.ParquetWriter(os.path.join(folder, f"range-{k:05d}.parquet"), piece.schema,
                                          compression="none", use_dictionary=False, write_statistics=False)
        writers[k].write_table(piece.slice(start, count))


def _rows_in_order(range_files: list[str], metadata: str, extra: str, temp_dir: str):
    """The rows of each range file, sorted in output order, as a stream of record batches. Each
    range has its own DuckDB connection: closing it gives back what the sort held."""
    for path in range_files:
        con = _duckdb(temp_dir)
        try:
            yield from con.sql(
                f"""SELECT d.id, d.text, d.source, d.domain, d.n_tokens, d.epoch, {metadata} AS metadata{extra}
                    FROM read_parquet({sql_strings([path])}) d
                    ORDER BY d.order_key, d.src, d.id, d.epoch"""
            ).to_arrow_reader(ROW_GROUP_ROWS)
        finally:
            con.close()
        os.remove(path)


# Rows per row group of a mixture shard (datatrove's ParquetWriter default): a shard is written
# a row group at a time, so writing holds one row group's documents, not a shard's.
ROW_GROUP_ROWS = 1_000


class ShardWriter:
    """One split's shards: part-NNNNN.parquet (and .jsonl when asked) of exactly `shard_rows`
    rows each but the last, in row groups of `ROW_GROUP_ROWS` rows (the shard's last may be
    shorter). Both are cut at fixed row counts whatever batches arrive, so the same rows always
    give the same bytes."""

    def __init__(self, split_dir: str, shard_rows: int, jsonl: bool):
        self.split_dir, self.shard_rows, self.jsonl = split_dir, shard_rows, jsonl
        self.files: list[str] = []  # Parquet shards written, in order
        self.jsonl_files: list[str] = []
        self.rows = 0
        self._writer, self._jsonl_file, self._in_shard = None, None, 0
        self._pending: list[pa.RecordBatch] = []  # rows not written yet, fewer than a row group
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self._pending_rows and self._pending_rows >= self._group_rows():
            self._write_group(self._group_rows())

    def close(self) -> None:
        """Write what is pending and close the shard; call once, after the split's last batch."""
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._close_shard()

    def _group_rows(self) -> int:
        """Rows of the next row group: a full one, or what is left of the shard."""
        return min(ROW_GROUP_ROWS, self.shard_rows - self._in_shard)

    def _write_group(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending)
        group, rest = table.slice(0, rows), table.slice(rows)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows
        if self._writer is None:
            self._open(table.schema)
        self._writer.write_table(group, row_group_size=rows)
        crash_point("mixture.rows")
        if self._jsonl_file is not None:
            for piece in group.to_batches():
                _write_jsonl(self._jsonl_file, piece)
        self._in_shard += rows
        if self._in_shard == self.shard_rows:
            self._close_shard()

    def _open(self, schema: pa.Schema) -> None:
        path = os.path.join(self.split_dir, f"part-{len(self.files):05d}.parquet")
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.files.append(path)
        if self.jsonl:
            self.jsonl_files.append(path.removesuffix(".parquet") + ".jsonl")
            self._jsonl_file = open(self.jsonl_files[-1], "wb")

    def _close_shard(self) -> None:
        """Close the open shard, if any (the next row group opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._in_shard = 0
        if self._jsonl_file is not None:
            self._jsonl_file.close()
            self._jsonl_file = None


def split_summary(split: str, counted: dict, sources: list[str], out_dir: str, shards: ShardWriter) -> dict:
    """A split's manifest entry: documents, units and tokens (in all and per source), each
    source's share of the units, and its files relative to the mixture folder."""
    by_source = {}
    for s in sources:
        got = counted.get((split, s), {})
        by_source[s] = {"rows": got.get("units_count", 0), "units": got.get("units_sum", 0),
                        "tokens": got.get("tokens_sum", 0)}
    units = sum(v["units"] for v in by_source.values())
    summary = {
        "documents": shards.rows,
        "units": units,
        "tokens": sum(v["tokens"] for v in by_source.values()),
        "files": [os.path.relpath(f, out_dir) for f in shards.files],
        "sources": by_source,
        # Each source's share of the split's units (the mixture's unit), to compare with its weight.
        "shares": {s: round(v["units"] / units, 6) if units else 0.0 for s, v in by_source.items()},
    }
    if shards.jsonl:
        summary["jsonl_files"] = [os.path.relpath(f, out_dir) for f in shards.jsonl_files]
    return summary


def _write_jsonl(f, batch: pa.RecordBatch) -> None:
    import orjson

    for row in batch.to_pylist():
        # metadata is JSON text in Parquet; in JSONL it is the object itself.
        row["metadata"] = orjson.loads(row["metadata"]) if row.get("metadata") else {}
        f.write(orjson.dumps(row) + b"\n")


def output_files(splits: dict[str, dict]) -> list[str]:
    """Every output file the manifest lists, relative to the mixture folder, in a fixed order."""
    out = []
    for split in SPLITS:
        info = splits[split]
        out += info["files"] + info.get("jsonl_files", [])
        for entry in info.get("tokenized", {}).values():
            out += [entry["prefix"] + ".bin", entry["prefix"] + ".idx"]
    return out


def output_digest(out_dir: str, splits: dict[str, dict]) -> str:
    """sha256 over the (relative path, sha256) of every output file, in order."""
    from mix_pipeline.core.io.documents import file_sha256

    h = hashlib.sha256()
    for rel in output_files(splits):
        h.update(f"{rel}\0{file_sha256(os.path.join(out_dir, rel))}\n".encode())
    return h.hexdigest()


def build_manifest(name: str, spec, recipe_sha256: str, tokenizer: str, plan: Plan, splits: dict,
                   output_sha256: str, exports: dict | None = None) -> dict:
    return {
        "mixture": name,
        "recipe_sha256": recipe_sha256,
        "seed": spec.seed,
        "unit": spec.unit,
        "tokenizer": tokenizer,
        "total_target": spec.total,
        "total_units": sum(row.units for row in plan.ledger),
        "max_epochs": spec.max_epochs,
        "weighting": plan.weighting,
        "on_infeasible": spec.on_infeasible,
        "rebalanced": plan.rebalanced,
        "sources": {
            row.source: {k: v for k, v in asdict(row).items() if k != "source"} for row in plan.ledger
        },
        "splits": splits,
        "output_sha256": output_sha256,
        "exports": exports or {},
    }


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
