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


class FastIdentifier:
    """`classify(text)` exactly as py3langid's LanguageIdentifier computes it."""

    def __init__(self, identifier):
        self.identifier = identifier
        self.nextmove = np.asarray(identifier.tk_nextmove)
        self.rowbase = np.asarray(identifier._rowbase, dtype=np.int64)
        self.output = np.asarray(identifier.tk_output, dtype=np.int64)
        # py3langid stores the feature weights as float16 and its matmul converts the rows it
        # gathers to float32 on every call, which costs more than the walk; converting once
        # gives the same float32 products (57 MB, shared by forked workers).
        self.weights = np.asarray(identifier.nb_ptc, dtype=np.float32)
        # Trie depth of every state: breadth-first from the root over all 256 moves.
        depth = np.full(len(self.rowbase), -1, dtype=np.int64)
        depth[0], level, d = 0, np.array([0]), 0
        while len(level):
            moves = self.nextmove[(self.rowbase[level][:, None] + np.arange(256)).ravel()].astype(np.int64)
            fresh = np.unique(moves[depth[moves] < 0])
            d += 1
            depth[fresh] = d
            level = fresh
        self.depth = depth
        self.max_depth = int(depth.max())

    def states(self, data: bytes) -> np.ndarray:
        """The DFA's state after each byte of `data`."""
        b = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        n = len(b)
        state = np.zeros(n, dtype=np.int64)
        node = np.zeros(n, dtype=np.int64)  # node[j]: trie node of bytes j..j+k-1 (when alive)
        alive = np.ones(n, dtype=bool)
        for k in range(1, min(self.max_depth, n) + 1):
            m = n - k + 1
            node = self.nextmove[self.rowbase[node[:m]] + b[k - 1:]].astype(np.int64)
            alive = alive[:m] & (self.depth[node] == k)
            if not alive.any():
                break
            ends = state[k - 1:]
            ends[alive] = node[alive]
        return state

    def decide(self, text: str) -> np.ndarray:
        ident = self.identifier
        data = ident._encode(text)
        out = self.output[self.states(data)]
        out = out[out >= 0]
        if len(out):
            idx, first, counts = np.unique(out, return_index=True, return_counts=True)
            order = np.argsort(first, kind="stable")  # py3langid's Counter order: first visit
            scores = np.log1p(counts[order].astype(np.float32)) @ self.weights[idx[order]] + ident.nb_pc
        else:
            scores = np.full(len(ident.nb_classes), 0.0, dtype=np.float32)
        scores *= 1.0 / math.sqrt(len(data) or 1)
        np.exp(scores - scores.max(), out=scores)
        scores /= scores.sum()
        for i, j in ident._alias_pairs:
            scores[i] += scores[j]
            scores[j] = 0.0
        return scores

    def classify(self, text: str) -> tuple[str, float]:
        scores = self.decide(text)
        i = int(scores.argmax())
        conf = float(scores[i])
        if self.identifier.min_confidence is not None and conf < self.identifier.min_confidence:
            return "und", conf
        return self.identifier.nb_classes[i], conf
