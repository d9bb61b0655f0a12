"""py3langid's classification with its per-byte Python loop replaced by array operations.

py3langid walks a DFA over the UTF-8 bytes of the text in a Python loop (`visit_counts`) and
counts the feature each visited state outputs; that loop is about half of the language filter's
cost. The DFA is an Aho–Corasick automaton: after any input its state is the trie node of the
longest suffix of the input that is a node, and nodes are at most `depth` (6) bytes deep. So
the state after byte i depends only on the bytes i-depth+1..i and can be found for every
position at once: walk the trie from every start position in parallel, k = 1..depth steps (a
step is a trie edge when the DFA's move lands one level deeper), and give each end position the
node of the longest walk that reaches it. The counts, the order the features are summed in and
so the scores are py3langid's own (test_filters compares them with py3langid's `classify`).
"""

from __future__ import annotations

import math

import numpy as np

from mix_pipeline.core.arrays import runs


class FastIdentifier:
    """`classify(text)` exactly as py3langid's LanguageIdentifier computes it."""

    def __init__(self, identifier):
        self.identifier = identifier
        self.nextmove = np.asarray(identifier.tk_nextmove).view(np.int32)  # < 2**31 states
        self.rowbase = np.asarray(identifier._rowbase, dtype=np.int32)
        self.output = np.asarray(identifier.tk_output, dtype=np.int64)
        # py3langid stores the feature weights as float16 and its matmul converts the rows it
        # gathers to float32 on every call, which costs more than the walk; converting once
        # gives the same float32 products (57 MB, shared by forked workers).
        self.weights = np.asarray(identifier.nb_ptc, dtype=np.float32)
        self.depth = self._trie_depths()
        self.max_depth = int(self.depth.max())

    def _trie_depths(self, block: int = 4096) -> np.ndarray:
        """Trie depth of every state: breadth-first from the root over all 256 moves, `block`
        states at a time (int32 indices, an int8 table that stays in cache, temporaries of a
        few MB that the allocator reuses: whole levels at once take 1.5 CPU s, most of it page
        faults of 100 MB temporaries; once per process)."""
        depth = np.full(len(self.rowbase), -1, dtype=np.int8)
        depth[0], level, d = 0, np.array([0]), 0
        every_byte = np.arange(256, dtype=np.int32)
        while len(level):
            d += 1
            for start in range(0, len(level), block):
                rows = self.rowbase.take(level[start:start + block])
                moves = self.nextmove.take((rows[:, None] + every_byte).ravel())
                depth[moves[depth.take(moves) < 0]] = d  # no sort: a state reached twice gets d twice
            level = np.flatnonzero(depth == d)
        return depth

    def states(self, data: np.ndarray, room: np.ndarray) -> np.ndarray:
        """The DFA's state after each byte of `data` (uint8): several texts end to end, each
        walked from the start state; `room` (bytes from each position to the end of its text)
        keeps every walk inside its text."""
        b = data.astype(np.int32)
        n = len(b)
        state = np.zeros(n, dtype=np.int32)
        node = np.zeros(n, dtype=np.int32)  # node[j]: trie node of bytes j..j+k-1 (when alive)
        alive = np.ones(n, dtype=bool)
        for k in range(1, min(self.max_depth, n) + 1):
            m = n - k + 1
            at = self.rowbase.take(node[:m])
            at += b[k - 1:]
            node = self.nextmove.take(at)
            alive = alive[:m] & (self.depth.take(node) == k)
            alive &= room[:m] >= k
            np.copyto(state[k - 1:], node, where=alive)
        return state

    def decide_batch(self, texts: list[str]) -> list[np.ndarray]:
        """py3langid's normalised class probabilities of each text. The DFA walk and the feature
        counts run once over the batch (numpy's per-call cost dominates texts of a few thousand
        bytes); each text's scores are then summed exactly as for that text alone."""
        ident = self.identifier
        data = [ident._encode(t) for t in texts]
        sizes = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
        ends = np.cumsum(sizes)
        b = np.frombuffer(b"".join(data), dtype=np.uint8)
        text_of = np.repeat(np.arange(len(data)), sizes)
        out = self.output[self.states(b, room=ends[text_of] - np.arange(len(b)))]
        keys, counts = self._first_visit_counts(text_of, out)
        n_features = len(self.weights)
        bounds = np.searchsorted(keys // n_features, np.arange(len(data) + 1))
        features = keys % n_features
        results = []
        for i, size in enumerate(sizes.tolist()):
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                scores = np.log1p(counts[lo:hi].astype(np.float32)) @ self.weights[features[lo:hi]] + ident.nb_pc
            else:
                scores = np.full(len(ident.nb_classes), 0.0, dtype=np.float32)
            scores *= 1.0 / math.sqrt(size or 1)
            np.exp(scores - scores.max(), out=scores)
            scores /= scores.sum()
            for a, c in ident._alias_pairs:
                scores[a] += scores[c]
                scores[c] = 0.0
            results.append(scores)
        return results

    def _first_visit_counts(self, text_of: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (text, feature) keys (text * features + feature) of the visited states
        that output a feature, with their counts, text by text and, within a text, in order of
        first visit (py3langid's Counter order). What np.unique(return_index, return_counts) and
        an argsort of the first visits give, with plain sorts of packed integers instead (several
        times cheaper than the stable argsorts those need)."""
        hit = np.flatnonzero(out >= 0)
        keys = text_of[hit] * len(self.weights) + out[hit]
        if not len(keys):
            return keys, keys
        n = int(hit[-1]) + 1
        if int(keys.max()) >= (1 << 62) // n or n >= (1 << 31):  # too large to pack: the same with np.unique
            keys, first, counts = np.unique(keys, return_index=True, return_counts=True)
            order = np.argsort(first, kind="stable")
            return keys[order], counts[order]
        packed = np.sort(keys * n + hit)  # by key, then position
        sorted_keys = packed // n
        starts, counts = runs(sorted_keys)
        first = packed[starts] % n  # each key's first position
        # Positions grow text by text, so ordering by first position is text by text, then first visit.
        d = len(starts)
        order = np.sort(first * d + np.arange(d)) % d
        return sorted_keys[starts][order], counts[order]

    def classify(self, text: str) -> tuple[str, float]:
        return self.classify_batch([text])[0]

    def classify_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        answers = []
        for scores in self.decide_batch(texts):
            i = int(scores.argmax())
            conf = float(scores[i])
            if self.identifier.min_confidence is not None and conf < self.identifier.min_confidence:
                answers.append(("und", conf))
            else:
                answers.append((self.identifier.nb_classes[i], conf))
        return answers
