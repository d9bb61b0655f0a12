"""Gopher repetition's n-gram statistics over hashed word ids, for a batch of texts at once: counts
by sorting, only over the positions whose shorter n-gram repeats (`NgramCandidates`), and the
duplicated-n-gram greedy walk only over the positions whose n-gram occurred before."""

from __future__ import annotations

import numpy as np

from mix_pipeline.core.arrays import runs


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _ngram_ids(ids: np.ndarray, n: int, previous: np.ndarray | None) -> np.ndarray:
    """Ids of the n-grams starting at each position (from the (n-1)-gram ids when given)."""
    m = len(ids) - n + 1
    if previous is None:
        out = ids[:m].copy()
        for k in range(1, n):
            out = out * _MIX + ids[k : k + m]
        return out
    return previous[:m] * _MIX + ids[n - 1 : n - 1 + m]


def _groups(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices of h by id then index, start of each id's run in that order, run lengths)."""
    order = np.argsort(h, kind="stable")
    return order, *runs(h[order])


def _repeated(order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mask (in h's order) of the entries whose id occurs more than once."""
    mask = np.empty(len(order), dtype=bool)
    mask[order] = np.repeat(counts > 1, counts)
    return mask


# A batch's n-gram keys carry the text's number in their top bits, so one sort groups the
# n-grams text by text; the id keeps the other 56 bits (collisions: 2**-56 per pair in a text).
_TEXT_SHIFT = np.uint64(56)
MAX_BATCH = 1 << 8


def top_ngram_chars(keys: np.ndarray, pos: np.ndarray, batch: NgramCandidates, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's `find_top_duplicate` for each text of the batch: characters of its most
    frequent n-gram (the first seen of the most frequent ones, as `Counter.most_common` picks)
    times its count; a text whose n-grams are all distinct gets its first n-gram, once.

    `keys` holds the n-gram keys at positions `pos` (ascending): every position whose n-gram
    can occur more than once in its text (see `NgramCandidates`). `chars[p]`: characters of
    the n-gram at p. Also returns positions that include every one whose n-gram repeats.
    Counting sorts the keys (a plain sort: several times cheaper than an argsort)."""
    found = chars[batch.starts[:-1].clip(max=len(chars) - 1)]  # each text's first n-gram, once
    if not len(keys):
        return found, pos
    sk = np.sort(keys)
    starts, counts = runs(sk)
    text = (sk[starts] >> _TEXT_SHIFT).astype(np.intp)
    best = np.ones(batch.n_texts, dtype=np.int64)
    np.maximum.at(best, text, counts)
    winners = counts == best[text]
    winners &= counts > 1
    if winners.any():
        hits = np.flatnonzero(_members(keys, sk[starts[winners]]))  # ascending positions
        hit_text = batch.text[pos[hits]]
        first, _ = runs(hit_text)  # each text's first hit
        where = pos[hits[first]]
        found[hit_text[first]] = chars[where] * best[hit_text[first]]
    return found, pos[_maybe_repeated(keys)]


def _buckets(h: np.ndarray, size: int) -> np.ndarray:
    """Bucket of each id in a table of `size` (a power of two) entries."""
    return ((h ^ (h >> np.uint64(29))) & np.uint64(size - 1)).astype(np.intp)


def _table_size(n: int) -> int:
    """A table 2-4 times n's size: small enough to stay in cache, few ids per bucket."""
    return 1 << max(4, (2 * n).bit_length())


def _members(h: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Mask of the entries of h that are in `sorted_ids` (sorted, not empty): the entries whose
    bucket holds one of them, then a binary search for those few only."""
    size = _table_size(len(h))
    marked = np.zeros(size, dtype=bool)
    marked[_buckets(sorted_ids, size)] = True
    maybe = np.flatnonzero(marked[_buckets(h, size)])
    at = np.searchsorted(sorted_ids, h[maybe])
    at[at == len(sorted_ids)] = 0
    mask = np.zeros(len(h), dtype=bool)
    mask[maybe] = sorted_ids[at] == h[maybe]
    return mask


def _maybe_repeated(h: np.ndarray) -> np.ndarray:
    """Mask of the entries of h whose id may occur more than once: every one that does, and a
    few others (ids sharing a bucket). Cheaper than finding exactly the repeated ones, and only
    ever used to narrow down where to count longer n-grams."""
    buckets = _buckets(h, _table_size(len(h)))
    return np.bincount(buckets)[buckets] > 1


def duplicated_ngram_chars(keys: np.ndarray, pos: np.ndarray, batch: NgramCandidates, n: int,
                           joined_chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's `find_all_duplicate` for each text of the batch: walk the n-grams; one seen
    before (among the ones walked, not skipped) adds its characters and skips the next n-1
    positions. Only positions whose n-gram occurred earlier in the text can repeat, so the walk
    visits only those.

    `keys`, `pos` as in `top_ngram_chars`; also returns the positions whose n-gram occurs more
    than once in its text."""
    found = np.zeros(batch.n_texts, dtype=np.int64)
    if not len(keys):
        return found, pos
    order, starts, counts = _groups(keys)
    if counts.max() == 1:
        return found, pos[:0]
    first_of_run = np.zeros(len(keys), dtype=bool)
    first_of_run[order[starts]] = True
    first_pos = np.empty(len(keys), dtype=np.int64)
    first_pos[order] = np.repeat(pos[order[starts]], counts)
    later = ~first_of_run
    at, firsts, ids = pos[later], first_pos[later], keys[later]
    bounds = np.searchsorted(at, batch.starts).tolist()  # each text's stretch of `at`
    for t in np.flatnonzero(np.diff(bounds)).tolist():
        lo, hi = bounds[t], bounds[t + 1]
        found[t] = _walk(at[lo:hi].tolist(), firsts[lo:hi].tolist(), ids[lo:hi].tolist(), n, joined_chars)
    return found, pos[_repeated(order, counts)]


def _walk(at: list[int], firsts: list[int], ids: list[int], n: int, joined_chars: np.ndarray) -> int:
    """The greedy walk of `find_all_duplicate` over one text's positions whose n-gram occurred
    before (`firsts`: where it first occurred)."""
    skipped: set[int] = set()
    walked: set[int] = set()  # ids of repeated positions that were walked
    total, idx = 0, 0
    for c, first, ident in zip(at, firsts, ids):
        if c < idx:
            continue
        if first not in skipped or ident in walked:
            total += int(joined_chars[c])
            skipped.update(range(c + 1, c + n))
            idx = c + n
        else:
            walked.add(ident)
            idx = c + 1
    return total


class NgramCandidates:
    """The n-gram keys of a batch of texts' words (end to end) and, per n, the positions worth
    sorting.

    An n-gram that occurs twice in a text starts with an (n-1)-gram that occurs twice (at the
    same two positions), so once the k-grams have been counted only the positions whose k-gram
    repeats need counting for any n > k (a superset of them will do): on prose that is a few
    percent of the words by n = 5, and the sorts shrink with it. The answers are the same as
    counting every position. A batch is counted with one sort per n, however many texts it
    holds (numpy's per-call cost dominates texts of a few thousand words)."""

    def __init__(self, texts: list[np.ndarray]):
        if len(texts) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} texts per batch (got {len(texts)})")
        sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        self.n_texts = len(texts)
        self.starts = np.concatenate(([0], np.cumsum(sizes)))  # each text's first position
        self.ids = np.concatenate(texts) if texts else np.zeros(0, dtype=np.uint64)
        self.text = np.repeat(np.arange(len(texts)), sizes)  # the text of each position
        self.room = self.starts[1:][self.text] - np.arange(len(self.ids))  # words to its text's end
        self._tag = self.text.astype(np.uint64) << _TEXT_SHIFT
        self._ngrams: dict[int, np.ndarray] = {}
        self._repeating: tuple[int, np.ndarray] | None = None  # (k, positions whose k-gram repeats)

    def ngram_ids(self, n: int) -> np.ndarray:
        if n not in self._ngrams:
            self._ngrams[n] = _ngram_ids(self.ids, n, self._ngrams.get(n - 1))
        return self._ngrams[n]

    def at(self, n: int, skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, positions) of the n-grams that may repeat within their text, leaving out the
        texts where `skip` is set."""
        h = self.ngram_ids(n)
        if self._repeating is None or self._repeating[0] >= n:
            pos = np.flatnonzero(self.room[:len(h)] >= n)
        else:
            pos = self._repeating[1]
            pos = pos[self.room[pos] >= n]
        if skip is not None and skip.any():
            pos = pos[~skip[self.text[pos]]]
        return (h[pos] >> np.uint64(64 - int(_TEXT_SHIFT))) | self._tag[pos], pos

    def counted(self, n: int, repeating: np.ndarray) -> None:
        """Record the positions whose n-gram occurs more than once in its text."""
        if self._repeating is None or self._repeating[0] < n:
            self._repeating = (n, repeating)
