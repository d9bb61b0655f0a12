"""PII redaction: not dropping, rewriting. Each kind (secret keys, card numbers, emails, IP
addresses, phone numbers) is a pattern, an optional validator and a cheap precheck; the text is
rewritten with placeholders and the replacements are counted per kind."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from mix_pipeline.core.filters.base import FilterFamily, per_kind_counts_sql
from mix_pipeline.names import META_PII, PII_KINDS


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
    # A cheap necessary condition: False only when neither the pattern nor `valid`
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


class PIIRedactor(PipelineStep, FilterFamily):
    """Replaces PII (secret keys, card numbers, emails, IP addresses, phone numbers) with
    placeholders; drops nothing.

    Chat documents carry their turns in `metadata["messages"]` (they become the mixture's
    `messages` column), so those are redacted too, not only the rendered text."""

    type = "✂️ - FORMAT"
    name = "🔒 PII redaction"
    drops = False
    built_at_load = True

    @classmethod
    def counts_sql(cls, name: str) -> str:
        return per_kind_counts_sql(name, META_PII)

    @classmethod
    def count_stats(cls, rows: list[dict]) -> dict[str, float]:
        return {f"pii_{r['kind']}": r["matches"] for r in rows}

    @classmethod
    def measured(cls, meta: dict) -> dict | None:
        return {"redacted": meta.get(META_PII) or {}}

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
