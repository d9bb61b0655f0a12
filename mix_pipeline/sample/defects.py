"""Other planted defects: spam pages, offensive pages, bad code files and near duplicates."""

from __future__ import annotations

import functools
import re
from random import Random

from mix_pipeline.core.filters.wordlists import default_word_list, read_word_list
from mix_pipeline.sample.english import EnglishModel
from mix_pipeline.sample.pii import BASE64

_SPAM_PHRASES = (
    "Buy now! Best price!",
    "Click here to claim your free prize!",
    "Limited offer, order today!",
    "Cheap pills, no prescription needed!",
    "Work from home and earn thousands!",
    "Hot singles in your area!",
    "Lowest prices guaranteed!",
    "Act fast, only a few left!",
)
_SPAM_PRODUCTS = ("watches", "sneakers", "phones", "laptops", "handbags", "vitamins", "loans", "tickets", "perfume")
_SPAM_KEYWORDS = (
    "cheap flights", "best deals", "discount hotels", "free shipping", "online casino", "buy followers",
    "weight loss", "crypto profits", "replica watches", "payday loans", "car insurance", "seo services",
)
_NAV_ITEMS = (
    "Home", "About", "About Us", "Products", "Services", "Blog", "News", "Contact", "Login", "Sign up", "Cart",
    "FAQ", "Support", "Careers", "Press", "Shop", "Pricing", "Search", "Sitemap", "Help", "Account", "Partners",
    "Events", "Gallery", "Downloads", "Forum", "Docs", "Terms", "Privacy", "Newsletter",
)
_LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore".split()
_SYMBOL_CLUSTERS = ("###", "$$$", "@@", "%%", "&&&", "***", "#!", "~~", "^^", "#$%", "!!!", "+++")
SPAM_KINDS = ("repeated_lines", "keyword_stuffing", "navigation_menu", "symbol_soup")
# What each planted spam kind is as low-quality text (ground truth `low_quality`, scored by the
# quality classifier): a navigation menu is page boilerplate, lorem-ipsum symbol soup is filler.
LOW_QUALITY_KINDS = {"repeated_lines": "spam", "keyword_stuffing": "spam", "navigation_menu": "boilerplate",
                     "symbol_soup": "filler"}


def spam_doc(kind: str, rng: Random) -> str:
    if kind == "repeated_lines":
        line = rng.choice(_SPAM_PHRASES)
        header = f"Buy {rng.choice(_SPAM_PRODUCTS)} for only ${rng.randint(5, 99)}.{rng.randint(0, 99):02d}!"
        return "\n".join([header] + [line] * rng.randint(30, 60))
    if kind == "keyword_stuffing":
        keywords = rng.sample(_SPAM_KEYWORDS, 3)
        lines = [
            " ".join(rng.choice(keywords) for _ in range(rng.randint(6, 12))) + rng.choice(("", ".", "!"))
            for _ in range(rng.randint(20, 40))
        ]
        return "\n".join(lines)
    if kind == "navigation_menu":
        # Under 50 words and nearly all short, unpunctuated lines.
        return "\n".join(rng.sample(_NAV_ITEMS, rng.randint(12, 20)))
    if kind == "symbol_soup":
        lines = []
        for _ in range(rng.randint(15, 30)):
            tokens = [rng.choice(_LOREM) if rng.random() < 0.5 else rng.choice(_SYMBOL_CLUSTERS) for _ in range(12)]
            lines.append("Lorem ipsum " + " ".join(tokens) + ".")
        return "\n".join(lines)
    raise ValueError(kind)


@functools.lru_cache(maxsize=1)
def _offensive_words() -> tuple[str, ...]:
    # The safety filter's own built-in list, so planted pages are what the default filter targets.
    return tuple(e[0] for e in read_word_list(default_word_list()) if len(e) == 1)


def plant_offensive(text: str, rng: Random) -> tuple[str, int]:
    """Insert flagged words after 2-6% of the words; returns the text and how many were inserted."""
    words = _offensive_words()
    lines = text.split("\n")
    n_words = sum(len(line.split()) for line in lines)
    n = max(3, round(n_words * rng.uniform(0.02, 0.06)))
    for _ in range(n):
        i = rng.randrange(len(lines))
        parts = lines[i].split(" ")
        j = rng.randint(1, len(parts))  # never before the first word: sentences keep their capital
        parts.insert(j, rng.choice(words))
        lines[i] = " ".join(parts)
    return "\n".join(lines), n


def bad_code_files(rng: Random) -> list[tuple[str, bytes, str]]:
    """(relative path, bytes, kind): a minified one-liner, a data table module, a generated stub."""
    names = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")
    stmts = [f"{rng.choice(names)}_{i}=compute({rng.randint(0, 999)},{rng.choice(names)}_{max(0, i - 1)})"
             for i in range(120)]
    minified = "# bundled module\n" + ";".join(stmts) + "\n"
    rows = [", ".join(f"0x{rng.getrandbits(32):08x}" for _ in range(8)) + "," for _ in range(150)]
    blob = "".join(rng.choice(BASE64) for _ in range(76 * 20))
    blob_lines = "\n".join(f"    '{blob[i:i + 76]}'" for i in range(0, len(blob), 76))
    table = "TABLE = (\n" + "\n".join(f"    {r}" for r in rows) + f"\n)\nBLOB = (\n{blob_lines}\n)\n"
    classes = "\n\n".join(
        f"class {n.capitalize()}Request:\n    def __init__(self, value=None):\n        self.value = value\n\n"
        f"    def serialize(self):\n        return encode(self.value, field={i})\n" for i, n in enumerate(names))
    generated = ("# -*- coding: utf-8 -*-\n# Generated by the protocol buffer compiler.  DO NOT EDIT!\n"
                 "# source: service.proto\n\n" + classes)
    return [
        ("vendor/minified_bundle.py", minified.encode(), "long_lines"),
        ("vendor/lookup_tables.py", table.encode(), "data_like"),
        ("vendor/service_pb2.py", generated.encode(), "autogenerated"),
    ]


NEAR_DUP_MIN_JACCARD = 0.86  # planted pairs must clear 0.85 with a margin
SHINGLE_WORDS = 5


def _shingles(text: str, n: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def _jaccard(a: str, b: str, n: int = SHINGLE_WORDS) -> float:
    sa, sb = _shingles(a, n), _shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def near_copy(text: str, rng: Random, model: EnglishModel) -> str:
    """Swap ~1% of the words and maybe add/drop a closing sentence, keeping 5-gram Jaccard >= 0.86.

    Each swapped word breaks up to five shingles, so ~1.5% swaps already costs ~7% of
    them; the rate halves until the pair is similar enough."""
    parts = re.split(r"(\s+)", text)
    candidates = [i for i in range(0, len(parts), 2) if parts[i].isalpha() and parts[i].islower()]
    n_swaps = max(1, round(len(candidates) * rng.uniform(0.008, 0.015)))
    tail = rng.choice(("keep", "add", "drop"))
    while True:
        edited = parts[:]
        for i in rng.sample(candidates, min(n_swaps, len(candidates))):
            new = rng.choice(model.vocab)
            edited[i] = new if new != edited[i] else rng.choice(model.vocab)
        copy = "".join(edited)
        if tail == "add":
            copy = f"{copy} {model.sentence(rng, max_words=12)}"
        elif tail == "drop":
            cut = max(copy.rfind(". "), copy.rfind("? "), copy.rfind("! "))
            if cut > len(copy) - 400:  # only a short last sentence, never a whole paragraph
                copy = copy[: cut + 1]
        if copy != text and _jaccard(copy, text) >= NEAR_DUP_MIN_JACCARD:
            return copy
        n_swaps = max(1, n_swaps // 2)
        tail = "keep"
