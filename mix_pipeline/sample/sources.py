"""The web, books, papers and code sources: clean documents with their planted defects."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from random import Random

from mix_pipeline.sample.defects import SPAM_KINDS, bad_code_files, near_copy, plant_offensive, spam_doc
from mix_pipeline.sample.docs import PII_DEFECT, Doc, Uniq
from mix_pipeline.sample.english import english_model
from mix_pipeline.sample.evals import eval_sets, plant_eval_item
from mix_pipeline.sample.languages import LANGUAGES, foreign_doc
from mix_pipeline.sample.pii import PII_KINDS, plant_pii_sentences, plant_version
from mix_pipeline.sample.sizes import (
    BOOK_DOC_BYTES,
    BOOK_MEAN_BYTES,
    LONG_DOC_BYTES,
    MB,
    PAPER_DOC_BYTES,
    PAPER_MEAN_BYTES,
    SOURCE_SHARES,
    WEB_DOC_BYTES,
    WEB_MEAN_BYTES,
)
from mix_pipeline.sample.stdlib import MAX_CODE_FILE_BYTES, MIN_CODE_FILE_BYTES, read_utf8, stdlib_py_files


def _count(fraction: float, n: float, minimum: int = 1) -> int:
    return max(minimum, round(fraction * n))


def _long_count(size_mb: float, minimum: int) -> int:
    return max(minimum, round(size_mb / 10))


def _long_size(budget: float, rng: Random) -> int:
    high = max(LONG_DOC_BYTES[0], min(LONG_DOC_BYTES[1], int(0.4 * budget)))
    return rng.randint(LONG_DOC_BYTES[0], high)


def _take_originals(pool: list[Doc], k: int, rng: Random) -> list[Doc]:
    """k clean docs, preferring ones not already copied; each becomes an original."""
    fresh = [d for d in pool if not d.is_original]
    chosen = rng.sample(fresh, k) if k <= len(fresh) else fresh + [rng.choice(pool) for _ in range(k - len(fresh))]
    for d in chosen:
        d.is_original = True
    return chosen


def _copy(original: Doc, kind: str, text: str, meta: dict) -> Doc:
    return Doc(text=text, kind=kind, meta=meta, of=original)


class Builder:
    """Makes each source's documents from its own seeded random stream (`rng(name)`), sharing one
    duplicate guard, the eval sets to plant and the counters that rotate planted kinds."""

    def __init__(self, size_mb: float, seed: int):
        self.size_mb = size_mb
        self.seed = seed
        self.model = english_model()
        self.uniq = Uniq()
        self.budget = {s: share * size_mb * MB for s, share in SOURCE_SHARES.items()}
        self.sites = self._sites(self.rng("sites"))
        self.n_cross = min(10, max(2, round(size_mb / 2)))
        self.n_pii_docs = 0
        self.evals = eval_sets(self.model, self.rng("evals"))
        self.n_contaminated = 0
        self.bad_code: list[tuple[str, str]] = []  # (path, kind)

    def plant_contamination(self, doc: Doc, rng: Random, first_line: int) -> None:
        """Embed an eval item in a clean document, alternating eval sets and walking their items."""
        names = sorted(self.evals)
        name = names[self.n_contaminated % len(names)]
        items = self.evals[name]
        item = items[(self.n_contaminated // len(names)) % len(items)]
        doc.text = plant_eval_item(doc.text, item["text"], rng, first_line)
        doc.kind = "contaminated"
        doc.info = {"eval_set": name, "eval_id": item["id"]}
        self.n_contaminated += 1

    def plant_pii(self, doc: Doc, rng: Random) -> None:
        doc.text, doc.info[PII_DEFECT] = plant_pii_sentences(doc.text, rng, PII_KINDS[self.n_pii_docs % len(PII_KINDS)])
        doc.text, version = plant_version(doc.text, rng)
        doc.info["versions"] = [version]
        doc.kind = PII_DEFECT
        self.n_pii_docs += 1

    def rng(self, name: str) -> Random:
        return Random(f"sample-corpus/{self.seed}/{name}")

    def unique(self, make: Callable[[], str]) -> str:
        while True:
            text = make()
            if self.uniq.add(text):
                return text

    def unique_turns(self, make: Callable[[], list[dict]]) -> list[dict]:
        while True:
            turns = make()
            if self.uniq.add("\x1e".join(f"{t['role']}\x1f{t['content']}" for t in turns)):
                return turns

    def _sites(self, rng: Random) -> list[str]:
        words = self.model.title_words
        return [f"www.{rng.choice(words).lower()}{rng.choice(words).lower()}.{rng.choice(('com', 'org', 'net', 'io'))}"
                for _ in range(60)]

    def url(self, text: str, rng: Random) -> str:
        slug = "-".join(re.findall(r"[a-z]+", text[:80].lower())[:6]) or "page"
        section = rng.choice(("blog", "articles", "news", "docs", "guide", "posts"))
        return f"https://{rng.choice(self.sites)}/{section}/{slug}-{rng.randint(100, 99999)}"

    def clean_fill(self, docs: list[Doc], budget: float, make: Callable[[], Doc], minimum: int) -> None:
        """Add clean docs until the budget is spent, and at least `minimum` of them
        so that tiny builds still have originals to copy and docs to plant PII in."""
        used = sum(d.nbytes for d in docs)
        n_clean = 0
        while used < budget or n_clean < minimum:
            doc = make()
            docs.append(doc)
            used += doc.nbytes
            n_clean += 1

    def books(self) -> list[Doc]:
        rng, model = self.rng("books"), self.model
        budget = self.budget["books"]
        templates = ("The {0} of {1}", "{0} and {1}", "A {0} for {1}", "On {0} and {1}", "The {0} {1}")

        def book(size: int, kind: str = "clean") -> Doc:
            title = model.title(rng, templates)
            chapter = f"Chapter {rng.randint(1, 30)}: {model.title(rng, ('The {0}', '{0} and {1}', 'Of {0}'))}"
            text = self.unique(lambda: f"{chapter}\n\n" + model.body(rng, size, (3, 8), "\n\n"))
            return Doc(text=text, kind=kind, meta={"title": title})

        docs = [book(_long_size(budget, rng), "long") for _ in range(_long_count(self.size_mb, 0))]
        n_est = max(0.0, budget - sum(d.nbytes for d in docs)) / BOOK_MEAN_BYTES
        n_exact = _count(0.02, n_est)
        self.clean_fill(docs, budget - n_exact * BOOK_MEAN_BYTES, lambda: book(rng.randint(*BOOK_DOC_BYTES)),
                        minimum=n_exact + math.ceil(self.n_cross / 2) + 1)
        clean = [d for d in docs if d.kind == "clean"]
        docs += [_copy(o, "exact", o.text, dict(o.meta)) for o in _take_originals(clean, n_exact, rng)]
        return docs

    def papers(self) -> list[Doc]:
        rng, model = self.rng("papers"), self.model
        budget = self.budget["papers"]
        templates = ("Towards {0} {1} for {2}", "On the {0} of {1} {2}", "{0} {1}: A Study of {2}",
                     "Learning {0} {1} with {2}", "{0} and {1} in {2}")
        middle = ("Background", "Related Work", "Method", "Experimental Setup", "Results", "Discussion",
                  "Limitations")

        def paper() -> Doc:
            title = model.title(rng, templates)
            sections = ["Introduction"] + sorted(rng.sample(middle, rng.randint(2, 4)), key=middle.index)
            sections.append("Conclusion")
            per_section = rng.randint(*PAPER_DOC_BYTES) // len(sections)

            def make() -> str:
                parts = [title, "Abstract\n" + model.paragraph(rng, rng.randint(4, 7))]
                for i, name in enumerate(sections, 1):
                    parts.append(f"{i}. {name}\n" + model.body(rng, per_section, (3, 7), "\n"))
                return "\n\n".join(parts)

            return Doc(text=self.unique(make), meta={"title": title})

        n_est = budget / PAPER_MEAN_BYTES
        n_exact, n_near, n_pii = _count(0.02, n_est), _count(0.02, n_est), _count(0.05, n_est)
        n_contaminated = _count(0.03, n_est)
        docs: list[Doc] = []
        self.clean_fill(docs, budget - (n_exact + n_near) * PAPER_MEAN_BYTES, paper,
                        minimum=n_exact + n_near + n_pii + n_contaminated + self.n_cross // 2 + 1)
        clean = [d for d in docs if d.kind == "clean"]
        docs += [_copy(o, "exact", o.text, dict(o.meta)) for o in _take_originals(clean, n_exact, rng)]
        docs += [_copy(o, "near", near_copy(o.text, rng, model), dict(o.meta))
                 for o in _take_originals(clean, n_near, rng)]
        for d in [d for d in clean if not d.is_original][:n_pii]:
            self.plant_pii(d, rng)
        for d in [d for d in clean if not d.is_original and d.kind == "clean"][:n_contaminated]:
            self.plant_contamination(d, rng, first_line=2)  # after the title and the abstract
        return docs

    def web(self, books: list[Doc], papers: list[Doc]) -> list[Doc]:
        rng, model = self.rng("web"), self.model
        budget = self.budget["web"]

        def page(size: int, kind: str = "clean") -> Doc:
            text = self.unique(lambda: model.body(rng, size, (2, 5), "\n"))
            return Doc(text=text, kind=kind, meta={"url": self.url(text, rng)})

        docs = [page(_long_size(budget, rng), "long") for _ in range(_long_count(self.size_mb, 1))]

        pools = {"books": [d for d in books if d.kind == "clean"], "papers": [d for d in papers if d.kind == "clean"]}
        for i in range(self.n_cross):
            (original,) = _take_originals(pools[("books", "papers")[i % 2]], 1, rng)
            near = i % 3 == 1
            text = near_copy(original.text, rng, model) if near else original.text
            docs.append(Doc(text=text, kind="cross", meta={"url": self.url(text, rng)}, of=original,
                             info={"kind": "near" if near else "exact"}))

        n_est = max(0.0, budget - sum(d.nbytes for d in docs)) / WEB_MEAN_BYTES
        for i in range(_count(0.04, n_est, len(SPAM_KINDS))):
            kind = SPAM_KINDS[i % len(SPAM_KINDS)]
            text = self.unique(lambda: spam_doc(kind, rng))
            docs.append(Doc(text=text, kind="spam", meta={"url": self.url(text, rng)}, info={"kind": kind}))
        for _ in range(_count(0.01, n_est)):
            text = self.unique(lambda: model.sentence(rng, max_words=15))
            docs.append(Doc(text=text, kind="short", meta={"url": self.url(text, rng)}))
        first_lang = rng.randrange(len(LANGUAGES))
        for i in range(_count(0.03, n_est, len(LANGUAGES))):
            lang = LANGUAGES[(first_lang + i) % len(LANGUAGES)]
            text = self.unique(lambda: foreign_doc(lang, rng))
            docs.append(Doc(text=text, kind="non_english", meta={"url": self.url(text, rng)}, info={"language": lang}))
        for _ in range(_count(0.05, n_est, 2)):
            doc = page(rng.randint(*WEB_DOC_BYTES))
            self.plant_pii(doc, rng)
            docs.append(doc)
        for _ in range(_count(0.01, n_est, 2)):
            doc = page(rng.randint(*WEB_DOC_BYTES))
            doc.text, n = plant_offensive(doc.text, rng)
            doc.kind, doc.info = "offensive", {"flagged_words": n}
            docs.append(doc)
        for _ in range(_count(0.015, n_est, 2)):
            doc = page(rng.randint(*WEB_DOC_BYTES))
            self.plant_contamination(doc, rng, first_line=0)
            docs.append(doc)

        n_exact, n_near = _count(0.03, n_est), _count(0.03, n_est)
        self.clean_fill(docs, budget - (n_exact + n_near) * WEB_MEAN_BYTES,
                        lambda: page(rng.randint(*WEB_DOC_BYTES)), minimum=n_exact + n_near + 1)
        clean = [d for d in docs if d.kind == "clean"]
        for o in _take_originals(clean, n_exact, rng):
            docs.append(_copy(o, "exact", o.text, {"url": self.url(o.text, rng)}))
        for o in _take_originals(clean, n_near, rng):
            text = near_copy(o.text, rng, model)
            docs.append(_copy(o, "near", text, {"url": self.url(text, rng)}))
        return docs

    def code(self) -> list[tuple[str, bytes]]:
        """A seeded sample of stdlib sources as (relative path, bytes), sorted by path."""
        rng = self.rng("code")
        sized = [(rel, path, path.stat().st_size) for rel, path in stdlib_py_files()]
        candidates = [c for c in sized if MIN_CODE_FILE_BYTES <= c[2] <= MAX_CODE_FILE_BYTES]
        rng.shuffle(candidates)
        budget = self.budget["code"]
        chosen, used = [], 0
        for rel, data, kind in bad_code_files(self.rng("bad-code")):
            self.uniq.add(data.decode())
            chosen.append((rel, data))
            used += len(data)
            self.bad_code.append((rel, kind))
        for rel, path, size in candidates:
            if budget - used < MIN_CODE_FILE_BYTES:
                break
            if used + size > budget:  # a smaller file may still fit
                continue
            text = read_utf8(path)
            if text is not None and self.uniq.add(text):
                # UTF-8 decoding is lossless, so re-encoding gives back the file's exact bytes.
                chosen.append((rel, text.encode("utf-8")))
                used += size
        return sorted(chosen)
