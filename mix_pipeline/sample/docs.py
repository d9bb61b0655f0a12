"""A generated document, the duplicate guard, and how a source's documents are numbered and
split into files.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from random import Random

from mix_pipeline.sample.sizes import FILE_TARGET_BYTES, MIN_FILES

# The kind of a document with planted personal information, and the key of its planted items
# (`Doc.info`, ground_truth.json): a defect label, named like the filter meant to catch it.
PII_DEFECT = "pii"


@dataclass(eq=False)
class Doc:
    text: str
    kind: str = "clean"  # clean | pii | spam | short | long | non_english | offensive | contaminated | exact | near | cross
    meta: dict = field(default_factory=dict)  # url / title columns
    info: dict = field(default_factory=dict)  # ground-truth details (spam kind, language, pii items)
    of: Doc | None = None  # original of a duplicate
    source: str = ""
    id: str = ""
    pos: int = -1
    is_original: bool = False

    @property
    def nbytes(self) -> int:
        return len(self.text.encode())


class Uniq:
    """Guards against unplanned exact duplicates, which would blur dedup recall/precision."""

    def __init__(self):
        self._seen: set[bytes] = set()  # membership only, never iterated

    def add(self, text: str) -> bool:
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True


def arrange(docs: list[Doc], source: str, id_format: str, rng: Random) -> list[list[Doc]]:
    """Shuffle, split into files by position, move same-source copies away from their
    original's file, then number the docs in file order."""
    order = docs[:]
    rng.shuffle(order)
    n = len(order)
    total = sum(d.nbytes for d in order)
    n_files = min(n, max(MIN_FILES[source], math.ceil(total / FILE_TARGET_BYTES)))

    def file_of(pos: int) -> int:
        return pos * n_files // n

    for pos, d in enumerate(order):
        d.pos = pos
    if n_files > 1:
        for d in order[:]:
            if d.of is None or d.kind == "cross" or file_of(d.pos) != file_of(d.of.pos):
                continue
            home = file_of(d.of.pos)
            free = [j for j, x in enumerate(order)
                    if file_of(j) != home and x.of is None and not x.is_original]
            if not free:
                continue
            j, i = rng.choice(free), d.pos
            order[i], order[j] = order[j], order[i]
            order[i].pos, order[j].pos = i, j
    for pos, d in enumerate(order):
        d.source = source
        d.id = id_format.format(pos + 1)
    files: list[list[Doc]] = [[] for _ in range(n_files)]
    for pos, d in enumerate(order):
        files[file_of(pos)].append(d)
    return files
