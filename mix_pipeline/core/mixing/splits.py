"""Which split (train, validation, test) each selected row goes to.

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

import numpy as np

from mix_pipeline.core.mixing.pools import Pool
from mix_pipeline.core.mixing.sampling import fill_remainder

SPLITS = ("train", "validation", "test")


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


def split_rows(spec, pools: dict[str, Pool], plans: dict, sources: list[str]) -> dict[str, np.ndarray]:
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
