"""English prose: an order-2 word Markov chain over sentences of the Python documentation.

Trained on `pydoc_data.topics` and standard-library docstrings, text that ships with every
CPython install, so the output looks like natural English to language-id and quality
heuristics without any download.
"""

from __future__ import annotations

import ast
import functools
import re
from random import Random

from mix_pipeline.sample.stdlib import MAX_CODE_FILE_BYTES, read_utf8, stdlib_py_files

# Stdlib prose harvested for the Markov chain: enough docstrings for variety,
# bounded because `ast.parse` over the whole standard library takes seconds.
DOCSTRING_BUDGET_CHARS = 500_000
MIN_DOCSTRING_CHARS = 200


_STRIP_CHARS = str.maketrans({c: None for c in '*"“”‘’`()[]'})
_CITATION_RE = re.compile(r"\[\d+\]")
_APOSTROPHE_RE = re.compile(r"(?<=[A-Za-z])’(?=[A-Za-z])")  # as in "object’s"; other ’ are quote marks
# Words may hold ' _ / - inside but must end in a letter or digit: a trailing quote mark
# is left over from `code' style quoting.
_MID_TOKEN_RE = re.compile(r"(?:[A-Za-z](?:[A-Za-z0-9'_/-]*[A-Za-z0-9])?|\d{1,4}|e\.g\.|i\.e\.|cf\.|vs\.)[,;:]?")
_FINAL_TOKEN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9'_/-]*[A-Za-z0-9])?[.!?]")
_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "cf.", "vs."})
_SENTENCE_WORDS = (5, 60)
_TITLE_STOP = frozenset(
    "about above after again against also another because been before being below between both cannot could "
    "does doing during each either every from further have having here into itself just more most must "
    "neither none only other otherwise same shall should since some such than that their them then there "
    "these they this those through under unless until upon very were what when where whether which while "
    "will with within without would your".split()
)


def _is_end(token: str) -> bool:
    return token[-1] in ".!?" and token not in _ABBREVIATIONS


class EnglishModel:
    """Order-2 word Markov chain over sentences; (None, None) is the sentence-start state."""

    def __init__(self, sentences: list[list[str]]):
        chain: dict[tuple, list[str]] = {}
        counts: dict[str, int] = {}
        for words in sentences:
            a = b = None
            for w in words:
                chain.setdefault((a, b), []).append(w)
                a, b = b, w
                if w.isalpha() and w.islower() and len(w) >= 5:
                    counts[w] = counts.get(w, 0) + 1
        self.chain = chain
        # Frequent plain words, in first-seen order: replacement words for near
        # duplicates and raw material for titles and site names.
        self.vocab = [w for w, n in counts.items() if n >= 3]
        self.title_words = [w for w in self.vocab if w not in _TITLE_STOP and 5 <= len(w) <= 12]

    def sentence(self, rng: Random, max_words: int = _SENTENCE_WORDS[1]) -> str:
        chain, rand = self.chain, rng.random
        while True:
            a = b = None
            words = []
            while len(words) < max_words:
                options = chain[(a, b)]
                w = options[int(rand() * len(options))]
                words.append(w)
                if _is_end(w):
                    return " ".join(words)
                a, b = b, w

    def paragraph(self, rng: Random, n_sentences: int) -> str:
        return " ".join(self.sentence(rng) for _ in range(n_sentences))

    def body(self, rng: Random, target_bytes: int, sentences: tuple[int, int], sep: str) -> str:
        """Paragraphs until `target_bytes`; no paragraph repeats (repetition filters would drop the doc)."""
        paragraphs: list[str] = []
        seen: set[str] = set()  # membership only, never iterated
        size = 0
        while size < target_bytes:
            p = self.paragraph(rng, rng.randint(*sentences))
            if p in seen:
                continue
            seen.add(p)
            paragraphs.append(p)
            size += len(p.encode()) + len(sep)
        return sep.join(paragraphs)

    def title(self, rng: Random, templates: tuple[str, ...]) -> str:
        words = [rng.choice(self.title_words).capitalize() for _ in range(3)]
        return rng.choice(templates).format(*words)


def _prose_blocks(text: str):
    """Blank-line separated blocks that read as prose (no code, tables, lists or headings)."""
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").split("\n")
        if not lines[0][:1].isalpha() or any(line[:1].isspace() for line in lines[1:]):
            continue
        if len(lines) > 1 and set(lines[1].strip()) <= set("*=-~^"):
            continue
        if ">>>" in block:
            continue
        yield " ".join(line.strip() for line in lines)


def _clean_sentences(block: str):
    """Sentences of plain words only: code-ish tokens would trip curly-bracket/symbol filters."""
    tokens = _APOSTROPHE_RE.sub("'", _CITATION_RE.sub("", block)).translate(_STRIP_CHARS).split()
    current: list[str] = []
    for tok in tokens:
        current.append(tok)
        if not _is_end(tok):
            continue
        words, current = current, []
        if not _SENTENCE_WORDS[0] <= len(words) <= _SENTENCE_WORDS[1]:
            continue
        if not words[0][0].isalpha() or not _FINAL_TOKEN_RE.fullmatch(words[-1]):
            continue
        if all(_MID_TOKEN_RE.fullmatch(w) for w in words[:-1]):
            words[0] = words[0][0].upper() + words[0][1:]
            yield words


def _docstrings(budget_chars: int) -> list[str]:
    found, total = [], 0
    for _, path in stdlib_py_files():
        if path.stat().st_size > MAX_CODE_FILE_BYTES:
            continue
        source = read_utf8(path)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                    found.append(doc)
                    total += len(doc)
        if total >= budget_chars:
            break
    return found


@functools.lru_cache(maxsize=1)
def english_model() -> EnglishModel:
    # Depends only on the interpreter's own files, so caching it per process is safe.
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)] + _docstrings(DOCSTRING_BUDGET_CHARS)
    sentences = [s for text in texts for block in _prose_blocks(text) for s in _clean_sentences(block)]
    return EnglishModel(sentences)
