"""Word lists for the safety filter: the built-in list shipped as package data, and the parser
shared by user lists. Kept apart from safety.py so the sample-corpus builder can plant words
from the same list without importing datatrove."""

from __future__ import annotations

import re
from importlib import resources

DEFAULT_WORD_LIST = "offensive_words_en.txt"  # in mix_pipeline/wordlists/
_LETTERS = re.compile(r"[^\W\d_]+")


def words(text: str) -> list[str]:
    """Case-folded runs of letters: how both documents and list entries are split."""
    return _LETTERS.findall(text.casefold())


def read_word_list(text: str) -> list[tuple[str, ...]]:
    """One word or phrase per line; `#` starts a comment line."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and (entry := tuple(words(line))):
            entries.append(entry)
    return entries


def default_word_list() -> str:
    return resources.files("mix_pipeline").joinpath("wordlists", DEFAULT_WORD_LIST).read_text(encoding="utf-8")
