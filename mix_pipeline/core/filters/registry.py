"""The filters a recipe can list, each built as a datatrove pipeline step.

Prose-quality filters are datatrove's (Gopher repetition, Gopher quality, C4, FineWeb), with
their statistics computed from one shared word split per document (core.prose).
datatrove's LanguageFilter downloads a fastText model at run time; ours uses py3langid, whose
model ships inside the wheel, so filtering works on air-gapped machines. The safety filter's
default word list ships inside this package. PII is redaction, not dropping: it rewrites the
text and counts what it replaced.

Filters that drop a document stamp what they measured (`filter_value`) next to datatrove's
`filter_reason`, so the catalog can say not only which filter dropped a document but why.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer, strip_strings

from mix_pipeline.core.filters import wordlists
from mix_pipeline.core.filters.prose import drop, word_splitter
from mix_pipeline.names import (
    FILTER_NAMES,
    META_FLAGGED_WORDS,
    META_LANGUAGE,
    META_LANGUAGE_SCORE,
    META_PII,
    PII_KINDS,
)


# ---- language ----------------------------------------------------------------------------
@functools.cache
def language_identifier():
    """py3langid's model, loaded once per process (a forkserver that loads it hands it to every
    worker it forks; see core.worker_preload)."""
    from py3langid.langid import _load_identifier

    return _load_identifier(norm_probs=True)


@functools.cache
def fast_language_identifier():
    """py3langid's model classified with array operations instead of its per-byte Python loop:
    the same languages and scores (see core.fastlang), several times faster."""
    from mix_pipeline.core.filters.fastlang import FastIdentifier

    return FastIdentifier(language_identifier())


class LanguageIdFilter(BaseFilter):
    """Keeps documents whose most likely language is listed, with probability ≥ `min_score`."""

    name = "🌍 Language ID (py3langid, offline)"

    def __init__(self, languages: list[str] | None = None, min_score: float = 0.5, max_chars: int = 3000,
                 exclusion_writer=None, batch_size: int = 64):
        # Documents are classified `batch_size` at a time (core.fastlang walks a batch at once);
        # each answer is the one the document gets alone.
        super().__init__(exclusion_writer, batch_size=batch_size)
        self.languages = list(languages or ["en"])
        self.min_score = float(min_score)
        if int(max_chars) < 1:
            raise ValueError(f"max_chars must be ≥ 1 (got {max_chars})")
        self.max_chars = int(max_chars)

    def identify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(language, probability) of each text, from its first `max_chars` characters: enough
        for a stable answer, and the cost per document is bounded (3,000 instead of 10,000
        changed 1 decision in 2,289 documents of the 20 MB sample corpus and cut the filter's
        CPU by 40%)."""
        return [(lang, float(prob)) for lang, prob in
                fast_language_identifier().classify_batch([t[: self.max_chars] for t in texts])]

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        return [self._decide(doc, lang, score) for doc, (lang, score) in zip(batch, self.identify([d.text for d in batch]))]

    def _decide(self, doc: Document, lang: str, score: float) -> bool | tuple[bool, str]:
        score = round(score, 4)
        doc.metadata[META_LANGUAGE] = lang
        doc.metadata[META_LANGUAGE_SCORE] = score
        self.stat_update(f"lang_{lang}")
        if lang not in self.languages:
            return drop(doc, f"language_{lang}", language=lang, score=score)
        if score < self.min_score:
            return drop(doc, "language_low_score", language=lang, score=score, min_score=self.min_score)
        return True


# ---- safety ------------------------------------------------------------------------------
class SafetyFilter(BaseFilter):
    """Drops documents whose share of flagged (offensive) words exceeds `max_flagged_fraction`.

    Words come from the built-in list (unless `use_default_list` is false) plus every file in
    `word_lists`; matching is on whole words, case-insensitive. `min_flagged_words` keeps a long
    or short document from being dropped over one quoted word.
    """

    name = "🛡️ Safety (offensive word lists)"

    def __init__(
        self,
        word_lists: list[str] | None = None,
        use_default_list: bool = True,
        max_flagged_fraction: float = 0.01,
        min_flagged_words: int = 2,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        if not 0.0 <= float(max_flagged_fraction) <= 1.0:
            raise ValueError(f"max_flagged_fraction must be within [0, 1] (got {max_flagged_fraction})")
        entries = wordlists.read_word_list(wordlists.default_word_list()) if use_default_list else []
        for path in word_lists or []:
            with open(path, encoding="utf-8") as f:
                entries += wordlists.read_word_list(f.read())
        if not entries:
            raise ValueError("no words to flag: the word lists are empty and use_default_list is false")
        self.max_flagged_fraction = float(max_flagged_fraction)
        self.min_flagged_words = int(min_flagged_words)
        self.words = frozenset(e[0] for e in entries if len(e) == 1)
        self.phrases = frozenset(e for e in entries if len(e) > 1)
        self.phrase_lengths = sorted({len(p) for p in self.phrases})

    def flagged(self, text: str) -> tuple[int, int, list[str]]:
        """(flagged occurrences, words, the distinct flagged words/phrases in order of appearance)."""
        words = wordlists.words(text)
        hits = [w for w in words if w in self.words]
        for n in self.phrase_lengths:
            hits += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1) if tuple(words[i : i + n]) in self.phrases]
        return len(hits), len(words), list(dict.fromkeys(hits))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        n_flagged, n_words, which = self.flagged(doc.text)
        doc.metadata[META_FLAGGED_WORDS] = n_flagged
        if n_flagged:
            self.stat_update("documents_flagged")
            self.stat_update("flagged_words", value=n_flagged)
        fraction = n_flagged / n_words if n_words else 0.0
        if n_flagged >= self.min_flagged_words and fraction > self.max_flagged_fraction:
            return drop(doc, "offensive_words", flagged_fraction=round(fraction, 4), flagged_words=n_flagged,
                         words=n_words, max_flagged_fraction=self.max_flagged_fraction, examples=which[:3])
        return True


# ---- code --------------------------------------------------------------------------------
# Header markers of generated files, searched case-insensitively in the first `header_lines`.
# "generated by/from" alone also occurs in ordinary docstrings ("a tree can be generated by
# passing ..."), so it counts only when a generator file or a known generator is named.
DEFAULT_AUTOGEN_MARKERS = (
    r"auto-?generated",
    r"automatically generated",
    r"do not edit",
    r"generated (?:by|from|with)\b.*?\.(?:py|pl|sh|js|ts|go|rb|java|c|h|cc|cpp|txt|proto|json|ya?ml|xml|y|g4)\b",
    r"generated by (?:the )?(?:protocol buffer compiler|protoc|sphinx|django|swig|thrift|cython|flatc|bison|yacc)",
)
# A token that is data rather than code: a number literal, a run of string escapes, a long hex
# or base64 blob. Tokens are split on whitespace and the punctuation that separates literals.
_DATA_TOKEN = re.compile(
    r"[-+]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)[lLuUfFjJ]*"
    r"|(?:\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|\\[0-7]{3})+"
    r"|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}"
    r"|(?=[A-Za-z0-9+/]*\d)(?=[A-Za-z0-9+/]*[A-Za-z])[A-Za-z0-9+/]{24,}={0,2}"
)
_TOKEN_SPLIT = re.compile(r"[\s,;:()\[\]{}]+")
_STRING_PREFIX = re.compile(r"^[bBrRuUfF]{0,2}(?=[\"'])")


def data_fraction(text: str) -> float:
    """Share of the non-separator characters that sit in data-like tokens."""
    total = data = 0
    for token in _TOKEN_SPLIT.split(text):
        if not token:
            continue
        total += len(token)
        core = _STRING_PREFIX.sub("", token).strip("\"'`")
        if core and _DATA_TOKEN.fullmatch(core):
            data += len(token)
    return data / total if total else 0.0


class CodeQualityFilter(BaseFilter):
    """Code-specific quality: drops generated files, minified or data-like files.

    Applied to code sources instead of the prose filters (which would drop most code for having
    few stop words and many symbols). Thresholds follow common code-corpus practice (The Stack /
    StarCoder): lines over 1000 characters, mean line length over 100, alphanumeric share under 25%.
    """

    name = "🧑‍💻 Code quality"

    def __init__(
        self,
        max_line_length: int = 1000,
        max_mean_line_length: float = 100.0,
        min_alnum_fraction: float = 0.25,
        max_data_fraction: float = 0.5,
        autogen_markers: list[str] | None = None,
        header_lines: int = 10,
        exclusion_writer=None,
    ):
        super().__init__(exclusion_writer)
        self.max_line_length = int(max_line_length)
        self.max_mean_line_length = float(max_mean_line_length)
        self.min_alnum_fraction = float(min_alnum_fraction)
        self.max_data_fraction = float(max_data_fraction)
        markers = DEFAULT_AUTOGEN_MARKERS if autogen_markers is None else autogen_markers
        self.autogen = re.compile("|".join(f"(?:{m})" for m in markers), re.IGNORECASE) if markers else None
        self.header_lines = int(header_lines)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        lines = text.split("\n")
        if self.autogen is not None:
            for i, line in enumerate(lines[: self.header_lines], start=1):
                if m := self.autogen.search(line):
                    return drop(doc, "code_autogenerated", marker=m.group(0)[:80], line=i)
        longest = max(len(line) for line in lines)
        if longest > self.max_line_length:
            return drop(doc, "code_long_line", max_line_length=longest, limit=self.max_line_length)
        mean = len(text) / len(lines)
        if mean > self.max_mean_line_length:
            return drop(doc, "code_long_mean_line", mean_line_length=round(mean, 1), limit=self.max_mean_line_length)
        alnum = sum(ch.isalnum() for ch in text) / len(text) if text else 0.0
        if alnum < self.min_alnum_fraction:
            return drop(doc, "code_low_alnum", alnum_fraction=round(alnum, 4), limit=self.min_alnum_fraction)
        data = data_fraction(text)
        if data > self.max_data_fraction:
            return drop(doc, "code_data_like", data_fraction=round(data, 4), limit=self.max_data_fraction)
        return True


# ---- PII ---------------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_number(match: re.Match) -> bool:
    digits = re.sub(r"[ -]", "", match.group(0))
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


@dataclass(frozen=True)
class PIIKind:
    pattern: re.Pattern
    replacement: str
    # Matches the pattern finds but this rejects are left alone (a card number must pass Luhn).
    valid: Callable[[re.Match], bool] | None = None
    # A cheap necessary condition (issue 15): False only when neither the pattern nor `valid`
    # can accept anything in the text, so the regex is skipped without changing any output.
    # See `_may_match` below; test_filters checks it against the bare patterns.
    may_match: Callable[[str], bool] | None = None


# Words that introduce a version number: "version 1.2.3.4" is a version, not an IP address.
_VERSION_CONTEXT = re.compile(
    r"(?:\b(?:v|ver|version|versions|release|releases|rel|build|builds|revision|rev|firmware|fw|driver|patch|"
    r"kernel|tag|update|upgrade|downgrade|package|pkg|python|release[ -]candidate)\.?\s*[:=#]?\s*|[=<>~!]=\s*|[<>]\s*)$",
    re.IGNORECASE,
)


def _not_a_version(match: re.Match) -> bool:
    """An IPv4-shaped match preceded by a version word (version, release, build, ==, ...) is a version."""
    return _VERSION_CONTEXT.search(match.string, max(0, match.start() - 24), match.start()) is None


_H4 = r"[0-9A-Fa-f]{1,4}"
_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
# IPv6: the full eight groups, or a `::`-compressed form (optionally ending in an IPv4 address).
# Compressed forms need a digit and a group of 3-4 hex digits, so Python slices (`a[1::2]`) and
# C++ scopes of hex-looking words (`abc::def`) are not addresses.
_IPV6 = (
    rf"(?<![\w:.])(?:"
    rf"(?:{_H4}:){{7}}{_H4}"
    rf"|(?=[0-9A-Fa-f:.]*\d)(?=[0-9A-Fa-f:.]*[0-9A-Fa-f]{{3}})"
    rf"(?:(?:{_H4}:){{1,6}}|:):(?:(?:{_H4}:){{0,5}}(?:{_IPV4}|{_H4}))?"
    rf")(?![\w:]|\.\d)"
)

# ---- PII prechecks (issue 15) -------------------------------------------------------------
# The five patterns scan every position of every document (~5 MB/s together); most documents
# have no '@', too few digits, no key prefix. Each precheck below is implied by its pattern (and
# validator): every match contains one of the literals / the digit shape named, so a document
# that fails it has no match, and skipping the regex leaves the text and the counts unchanged.
# Replacement placeholders contain no digits, '@', ':' or key prefix, so a precheck on the
# current text stays exact across the redaction passes.
_SECRET_LITERALS = (
    "-----BEGIN ",  # PEM private keys
    "AKIA", "ASIA",  # AWS
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",  # GitHub
    "sk-", "k_live_", "k_test_",  # sk-… API keys, Stripe sk_/rk_
    "xox", "hooks.slack.com/",  # Slack
    "AIza", "ya29.",  # Google
)


def _by_first_character(literals) -> tuple[re.Pattern, ...]:
    # sre finds an alternation of literals by skipping to their first characters, about as
    # fast as one `in` scan: one scan per first character instead of one per literal.
    groups: dict[str, list[str]] = {}
    for literal in literals:
        groups.setdefault(literal[0], []).append(re.escape(literal))
    return tuple(re.compile("|".join(group)) for group in groups.values())


_SECRET_SCANS = _by_first_character(_SECRET_LITERALS)

# The digit shape of a text: its UTF-8 bytes with every decimal digit written b"0", so the digit
# count and the digit runs the card, IP and phone patterns need are a byte count and searches
# of bytes for literal-led patterns (GB/s), where the patterns themselves start with lookbehinds
# that sre tries at every position. `\d` in the patterns matches any Unicode decimal digit
# (Arabic-Indic, fullwidth, ...), so those become b"0" too; no other character encodes to an
# ASCII byte, so a match's ASCII characters stay neighbours in the shape.
_ASCII_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")
_OTHER_DIGIT = re.compile(r"[^\D0-9]")  # \d but not 0-9 (sre skips fast to a leading class)
# In every card match: 13 digits in a row, or the printed 4-4-4-1+ and 4-6-4+ groupings.
_CARD_SHAPE = re.compile(rb"0000(?:0{9}|(?P<s>[ -])0000(?P=s)0000(?P=s)0|(?P<t>[ -])000000(?P=t)0000)")
_IPV4_SHAPE = re.compile(rb"0\.0{1,3}\.0{1,3}\.0")  # inside every IPv4 match
# Inside every full-form IPv6 match (eight groups of 1-4 hex digits), hex digits written b"0".
_HEX_LETTERS_TO_0 = bytes.maketrans(b"abcdefABCDEF", b"0" * 12)
_IPV6_FULL_SHAPE = re.compile(rb"0:0{1,4}:0{1,4}:0{1,4}:0{1,4}:0{1,4}:0{1,4}:0")
# Every phone branch has '+' then a digit (international), or a group of digits, a separator and
# three digits (national: the second separator, whether or not the area code is bracketed).
_PHONE_SHAPE = re.compile(rb"\+0|0[ .-]000")

# (text, its digit shape, its digit count) of the last text asked about: the prechecks of three
# kinds, and the passes of redact_pii that change nothing, ask about the same text object. One
# tuple, read and replaced whole.
_last_shape: list = [(None, b"", 0)]


def _digit_shape(text: str) -> tuple[bytes, int]:
    """The text's digit shape and its digit count."""
    memo = _last_shape[0]
    if memo[0] is not text:
        plain = text if text.isascii() else _OTHER_DIGIT.sub("0", text)
        shape = plain.encode("utf-8", "surrogatepass").translate(_ASCII_DIGITS_TO_0)
        memo = _last_shape[0] = (text, shape, shape.count(b"0"))
    return memo[1], memo[2]


def _may_have_secret(text: str) -> bool:
    return any(scan.search(text) for scan in _SECRET_SCANS)


def _may_have_card(text: str) -> bool:
    shape, digits = _digit_shape(text)
    return digits >= 13 and _CARD_SHAPE.search(shape) is not None


def _may_have_email(text: str) -> bool:
    return "@" in text


def _may_have_ip(text: str) -> bool:
    # IPv6: a '::'-compressed form, or eight groups (seven ':'); IPv4: four dotted numbers.
    if "::" in text:
        return True
    shape, digits = _digit_shape(text)
    if text.count(":") >= 7 and _IPV6_FULL_SHAPE.search(shape.translate(_HEX_LETTERS_TO_0)):
        return True
    return digits >= 4 and _IPV4_SHAPE.search(shape) is not None


def _may_have_phone(text: str) -> bool:
    # The validator wants 8 digits in the match.
    shape, digits = _digit_shape(text)
    return digits >= 8 and _PHONE_SHAPE.search(shape) is not None


PII: dict[str, PIIKind] = {
    "secret_key": PIIKind(
        re.compile(
            # A PEM private key, with its body when the END line follows within 8 KB.
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]{0,8192}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?"
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
            r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b"  # GitHub tokens
            # sk-… API keys (OpenAI/Anthropic style) and Stripe keys; a digit and a letter are
            # required so that hyphenated words (sk-learn-style names) are not taken for keys.
            r"|(?<![\w-])sk-(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}"
            r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b"
            # Slack tokens (xoxb-/xoxp-/xoxa-/xoxr-/xoxs-/xoxe-, dash-separated, with digits) and
            # incoming-webhook URLs.
            r"|\bxox[abeoprs]-(?=[A-Za-z0-9-]*\d)[A-Za-z0-9]{1,64}(?:-[A-Za-z0-9]{1,64}){1,5}\b"
            r"|https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9_/-]{20,}"
            # Google API keys (AIza + 35 characters) and OAuth access tokens (ya29.).
            r"|(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])|\bya29\.[0-9A-Za-z_-]{20,}"
        ),
        "<SECRET_KEY>",
        may_match=_may_have_secret,
    ),
    "credit_card": PIIKind(
        # 13-19 digits, contiguous or grouped the way cards are printed (4-4-4-4[-3], 4-6-5, 4-6-4)
        # with one consistent separator; digit runs in any other grouping are not card numbers.
        re.compile(
            r"(?<![\w.-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{4,5})(?![\w-]|\.\d)"
        ),
        "<CREDIT_CARD>",
        _card_number,
        _may_have_card,
    ),
    "email": PIIKind(re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), "<EMAIL>", None, _may_have_email),
    "ip": PIIKind(
        re.compile(rf"{_IPV6}|\b{_IPV4}\b(?!\.\d)"), "<IP_ADDRESS>", _not_a_version, _may_have_ip
    ),
    # Phone numbers need a separator structure so that plain numbers (years, counts, version
    # strings) are left alone: an international number (+country code, then 2-5 groups, or 7-15
    # digits in one run; 8 digits at least), or a national one of three groups (020 7946 0958, (206) 555-0123).
    # A sentence's full stop may follow; a dot followed by a digit continues a number.
    "phone": PIIKind(
        re.compile(
            r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\)|[ .-]\d{1,4})(?:[ .-]\d{2,8}){1,4}(?!\w|[.-]\d)"
            r"|(?<![\w+])\+\d{7,15}(?!\w|[.-]\d)"
            r"|(?<![\w.+])(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}(?!\w|[.-]\d)"
        ),
        "<PHONE>",
        lambda m: sum(ch.isdigit() for ch in m.group(0)) >= 8,  # "+3 10 20" is arithmetic
        _may_have_phone,
    ),
}
assert tuple(PII) == PII_KINDS, "redaction order is defined once, in names.PII_KINDS"


def _ordered(kinds) -> tuple[str, ...]:
    wanted = set(kinds)
    return tuple(k for k in PII_KINDS if k in wanted)


def _redact_kind(text: str, spec: PIIKind) -> tuple[str, int]:
    if spec.may_match is not None and not spec.may_match(text):
        return text, 0
    if spec.valid is None:
        return spec.pattern.subn(spec.replacement, text)
    n = 0

    def replace(m: re.Match) -> str:
        nonlocal n
        if spec.valid(m):
            n += 1
            return spec.replacement
        return m.group(0)

    return spec.pattern.sub(replace, text), n


# Every replacement removes the digits, '@' or key prefix its pattern needs, so passes converge fast.
_MAX_PASSES = 8


def redact_pii(text: str, kinds=PII_KINDS) -> tuple[str, dict[str, int]]:
    """Replace each PII match with its placeholder; returns the text and the count per kind.

    Passes repeat until one replaces nothing: a match rejected by its validator (a digit run that
    fails Luhn) is consumed whole and can hide a valid one inside it until a later kind (phone)
    takes its head. The fixed point is what `find_pii`, and so the `no_pii_left` gate, checks.
    """
    counts: dict[str, int] = {}
    for _ in range(_MAX_PASSES):
        changed = False
        for kind in _ordered(kinds):
            text, n = _redact_kind(text, PII[kind])
            if n:
                counts[kind] = counts.get(kind, 0) + n
                changed = True
        if not changed:
            break
    return text, counts


def find_pii(text: str, kinds=PII_KINDS) -> tuple[str, re.Match] | None:
    """The first PII match of the first kind that has one (what `no_pii_left` looks for)."""
    for kind in _ordered(kinds):
        spec = PII[kind]
        if spec.may_match is not None and not spec.may_match(text):
            continue
        for m in spec.pattern.finditer(text):
            if spec.valid is None or spec.valid(m):
                return kind, m
    return None


class PIIRedactor(PipelineStep):
    """Replaces PII (secret keys, card numbers, emails, IP addresses, phone numbers) with
    placeholders; drops nothing.

    Chat documents carry their turns in `metadata["messages"]` (they become the mixture's
    `messages` column), so those are redacted too, not only the rendered text."""

    type = "✂️ - FORMAT"
    name = "🔒 PII redaction"

    def __init__(self, kinds: list[str] | None = None):
        super().__init__()
        unknown = set(kinds or []) - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown kinds {sorted(unknown)} (known: {list(PII_KINDS)})")
        self.kinds = _ordered(kinds or PII_KINDS)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("total")
            doc.text, counts = redact_pii(doc.text, self.kinds)
            messages = doc.metadata.get("messages")
            if isinstance(messages, list):
                for turn in messages:
                    if isinstance(turn, dict) and isinstance(turn.get("content"), str):
                        turn["content"], _ = redact_pii(turn["content"], self.kinds)
            if counts:
                doc.metadata[META_PII] = counts
                self.stat_update("documents_redacted")
                for kind, n in counts.items():
                    self.stat_update(f"pii_{kind}", value=n)
            yield doc


def pii_kinds(params: dict[str, Any]) -> tuple[str, ...]:
    """The kinds a `pii` filter entry redacts (all by default)."""
    return _ordered(params.get("kinds") or PII_KINDS)


# ---- word splitting for datatrove's prose filters ----------------------------------------
class SharedSpaCyTokenizer(SpaCyTokenizer):
    """datatrove's spaCy word/sentence tokenizer for one language, shared by the prose filters of
    a pipeline (Gopher repetition, Gopher quality, C4, FineWeb) and kept warm across documents.

    datatrove's `SpaCyTokenizer` runs every call inside a spaCy `memory_zone`, which discards
    every lexeme and tokenizer-cache entry the call created; so each filter, and C4 once per
    kept line, re-derives the affix splits and lexical attributes of every word it has already
    seen. Here the vocabulary and the cache persist between calls (until the string store holds
    `max_strings` entries: then the pipeline is rebuilt, so memory stays bounded), and the word
    split of the last `memo_size` texts is kept, keyed on the exact text, so a filter that sees
    the text the previous one saw (and not the text C4 rewrote) does not split it again.

    The results are the same: spaCy's cache memoizes how a whitespace-delimited chunk splits,
    which depends on the chunk alone, and the sentencizer reads token texts. The same words reach
    the same filter code; test_filters checks that on the sample corpus.
    """

    def __init__(self, language: str, max_strings: int = 200_000, memo_size: int = 4):
        super().__init__(language)
        self.max_strings = int(max_strings)
        self.memo_size = int(memo_size)
        self._words: dict[str, list[str]] = {}
        self.resets = 0

    def __getstate__(self):
        # Pickled to every datatrove worker: ship the settings, not a loaded spaCy pipeline.
        return {**self.__dict__, "_tokenizer": None, "_words": {}}

    def _nlp(self):
        nlp = self.tokenizer
        if len(nlp.vocab.strings) > self.max_strings:
            self._tokenizer = None
            self.resets += 1
            nlp = self.tokenizer
        return nlp

    def _do_tokenize(self, text: str):
        self._nlp()
        return super()._do_tokenize(text)

    def word_tokenize(self, text: str) -> list[str]:
        words = self._words.get(text)
        if words is None:
            tokens = [token.text for chunk in self._do_tokenize(text) for token in chunk]
            words = strip_strings(tokens)
            if len(self._words) >= self.memo_size:
                del self._words[next(iter(self._words))]
            self._words[text] = words
        # A copy: a caller may change its list without changing what the next filter reads.
        return list(words)

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings([sent.text for doc in self._do_tokenize(text) for sent in doc.sents])

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for doc in self._do_tokenize(text):
            start = spans[-1][1] if spans else 0
            spans.extend((start + sent.start_char, start + sent.end_char) for sent in doc.sents)
        return spans


# datatrove's prose filters that split text into words or sentences through `self.language`.
_WORD_SPLITTING = frozenset({"gopher_repetition", "gopher_quality", "c4", "fineweb"})
_shared_tokenizers: dict[str, SharedSpaCyTokenizer] = {}


def shared_tokenizer(language: str) -> SharedSpaCyTokenizer | None:
    """This process's shared tokenizer for `language`, where datatrove tokenizes that language
    with a plain blank spaCy pipeline (None for the others: Japanese, Chinese, Vietnamese,
    NLTK/Stanza/... languages keep datatrove's own tokenizer)."""
    if language not in _shared_tokenizers:
        stock = load_word_tokenizer(language)
        if type(stock) is not SpaCyTokenizer or stock.config is not None:
            return None
        _shared_tokenizers[language] = SharedSpaCyTokenizer(stock.language)
    return _shared_tokenizers[language]


# ---- registry ----------------------------------------------------------------------------
_CLASSES: dict[str, str | type[PipelineStep]] = {
    # datatrove's classes with their `filter` computed from one shared word split (core.prose):
    # the same parameters, decisions and reasons, plus the measured value of each drop.
    "gopher_repetition": "mix_pipeline.core.filters.prose.FastGopherRepetitionFilter",
    "gopher_quality": "mix_pipeline.core.filters.prose.FastGopherQualityFilter",
    "c4": "mix_pipeline.core.filters.prose.FastC4QualityFilter",
    "fineweb": "mix_pipeline.core.filters.prose.FastFineWebQualityFilter",
    "language": LanguageIdFilter,
    "safety": SafetyFilter,
    "code_quality": CodeQualityFilter,
    "pii": PIIRedactor,
    "quality_classifier": "mix_pipeline.core.filters.quality_model.QualityClassifierFilter",
}
assert set(_CLASSES) == set(FILTER_NAMES)
# Parameters that are file paths, resolved against the recipe's folder.
PATH_PARAMS: dict[str, tuple[str, ...]] = {"safety": ("word_lists",)}


def _filter_class(name: str) -> type[PipelineStep]:
    if name not in _CLASSES:
        raise ValueError(f"unknown filter '{name}' (known: {', '.join(FILTER_NAMES)})")
    cls = _CLASSES[name]
    if isinstance(cls, str):
        module, _, attr = cls.rpartition(".")
        return getattr(importlib.import_module(module), attr)
    return cls


def is_dropping(name: str) -> bool:
    """Every filter drops documents except `pii`, which rewrites them."""
    return name != "pii"


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming a parameter the filter does not take (checked at recipe load)."""
    accepted = set(inspect.signature(_filter_class(name).__init__).parameters) - {"self", "exclusion_writer"}
    for key in params:
        if key not in accepted:
            raise ValueError(f"unknown parameter '{key}' (accepted: {', '.join(sorted(accepted))})")
    for key in PATH_PARAMS.get(name, ()):
        value = params.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"'{key}' must be a list of file paths")
    if not isinstance(_CLASSES[name], str):
        # Our filters are cheap to build: building one checks values too (a PII kind, a marker
        # regex, a fraction out of range) at recipe load instead of mid-run. Files are checked
        # once paths resolve (recipe.check_source_paths).
        try:
            _filter_class(name)(**{k: v for k, v in params.items() if k not in PATH_PARAMS.get(name, ())})
        except (TypeError, ValueError, re.error) as exc:
            raise ValueError(str(exc)) from None


def path_params(name: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(parameter, path) for every file path a filter's parameters name."""
    return [(key, p) for key in PATH_PARAMS.get(name, ()) for p in params.get(key) or []]


def build_filter(name: str, params: dict[str, Any], exclusion_writer=None,
                 resolve: Callable[[str], str] = lambda p: p) -> PipelineStep:
    params = dict(params)
    for key in PATH_PARAMS.get(name, ()):
        if params.get(key):
            params[key] = [resolve(p) for p in params[key]]
    cls = _filter_class(name)
    step = cls(exclusion_writer=exclusion_writer, **params) if is_dropping(name) else cls(**params)
    if name in _WORD_SPLITTING and isinstance(step.language, str) and word_splitter(step.language) is None:
        # A language core.prose cannot split runs datatrove's own filter code. Both helpers accept
        # the same languages (those datatrove splits with a blank spaCy pipeline), so this keeps
        # datatrove's tokenizer; SharedSpaCyTokenizer stays as the benchmarks' "before" reference.
        step.language = shared_tokenizer(step.language) or step.language
    return step
