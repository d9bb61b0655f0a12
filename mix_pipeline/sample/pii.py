"""Planted PII and secrets: fictional emails, phone numbers, IP addresses, Luhn-valid card
numbers and secret keys, each in a sentence of its own, plus the IPv4-shaped version numbers
planted next to them that redaction must leave alone.
"""

from __future__ import annotations

from random import Random

from mix_pipeline.names import PII_KINDS as _PII_KIND_NAMES

_FIRST_NAMES = ("alice", "bruno", "chen", "dana", "emeka", "fatima", "george", "hana", "ivan", "julia", "kofi",
                "lena", "marco", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tara")
_LAST_NAMES = ("smith", "garcia", "nguyen", "mueller", "rossi", "kowalski", "tanaka", "okafor", "silva", "dubois",
               "jensen", "patel", "ivanova", "murphy", "cohen", "haddad", "berg", "lopez", "kim", "novak")
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "research.example.edu")
_US_AREA_CODES = (206, 212, 303, 312, 415, 512, 617, 702)
PII_TEMPLATES = {
    "email": (
        "For further questions, write to {} and we will reply within two days.",
        "Please send your comments to {} before the end of the month.",
        "The author can be reached at {} for any corrections.",
    ),
    "phone": (
        "You can call our office at {} on weekdays between nine and five.",
        "For urgent issues, phone {} and ask for the support team.",
        "Reservations are handled by phone at {} during business hours.",
        # The number ends the sentence: its full stop must not hide it.
        "The London office can be reached on {}.",
        "For the Berlin team, dial {}.",
    ),
    "ip": (
        "The server at {} stopped responding after the last update.",
        "Requests from the address {} were blocked by the firewall.",
        "Our logs show repeated connections from {} during the night.",
        "The gateway answered on {}.",
    ),
    "credit_card": (
        "The order was paid with the card {} and shipped the next morning.",
        "Please charge the remaining balance to card number {} as agreed.",
        "The refund went back to the card ending in the digits of {} last week.",
    ),
    "secret_key": (
        "The deployment script still contained the credential {} in plain text.",
        "Someone pasted the key {} into the public issue tracker by mistake.",
        "The configuration file shipped with {} and had to be rotated.",
    ),
}
PII_KINDS = tuple(PII_TEMPLATES)
assert set(PII_KINDS) == set(_PII_KIND_NAMES), "every kind the redactor knows is planted"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
BASE64 = _ALNUM + "+/"


def _luhn_digit(payload: str) -> str:
    """The check digit that makes payload + digit pass the Luhn test."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def _card_number(rng: Random) -> str:
    """A Luhn-valid number in one of the printed layouts (Visa/Mastercard 16, Amex 15)."""
    brand = rng.randrange(3)
    if brand == 2:
        payload = rng.choice(("34", "37")) + "".join(str(rng.randrange(10)) for _ in range(12))
        number = payload + _luhn_digit(payload)
        sep = rng.choice(("", " ", "-"))
        return sep.join((number[:4], number[4:10], number[10:])) if sep else number
    payload = ("4" if brand == 0 else str(rng.randint(51, 55))) + "".join(
        str(rng.randrange(10)) for _ in range(15 - (1 if brand == 0 else 2)))
    number = payload + _luhn_digit(payload)
    sep = rng.choice(("", " ", "-"))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4)) if sep else number


def _secret_key(rng: Random) -> tuple[str, str]:
    shape = rng.randrange(6)
    if shape == 0:
        return "AKIA" + "".join(rng.choice(_ALNUM[:26] + _ALNUM[52:]) for _ in range(16)), "aws"
    if shape == 1:
        return "ghp_" + "".join(rng.choice(_ALNUM) for _ in range(36)), "github"
    if shape == 2:
        # At least one digit and one letter, like every real key.
        body = "".join(rng.choice(_ALNUM) for _ in range(46))
        return f"sk-{rng.choice(('', 'proj-'))}{rng.choice(_ALNUM[:52])}{rng.randrange(10)}{body}", "sk"
    if shape == 3:
        # Slack bot/user tokens: xoxb-<team digits>-<bot digits>-<24 characters>.
        digits = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
        secret = "".join(rng.choice(_ALNUM) for _ in range(24))
        return f"xox{rng.choice('bp')}-{digits(12)}-{digits(13)}-{secret}", "slack"
    if shape == 4:
        # Google API keys: AIza and 35 characters of [A-Za-z0-9_-] (never ending in a dash here,
        # so the sentence's next character is not glued to it).
        body = "".join(rng.choice(_ALNUM + "_-") for _ in range(34)) + rng.choice(_ALNUM)
        return "AIza" + body, "google"
    kind = rng.choice(("RSA ", "EC ", "OPENSSH ", ""))
    body = "".join(rng.choice(BASE64) for _ in range(64))
    return f"-----BEGIN {kind}PRIVATE KEY----- {body} -----END {kind}PRIVATE KEY-----", "pem"


def pii_value(kind: str, rng: Random) -> tuple[str, str]:
    """(value, format) of one planted PII item; the format names its shape in the ground truth."""
    if kind == "email":
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        local = rng.choice((f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}"))
        return f"{local}@{rng.choice(_EMAIL_DOMAINS)}", "email"
    if kind == "phone":
        # Reserved fictional ranges: NANP 555-01xx, Ofcom's 020 7946 0xxx (international and
        # national) and Berlin numbers in the two-group international form.
        fmt = rng.randrange(5)
        if fmt == 0:
            return f"+1 {rng.choice(_US_AREA_CODES)}-555-01{rng.randint(0, 99):02d}", "us_international"
        if fmt == 1:
            return f"({rng.choice(_US_AREA_CODES)}) 555-01{rng.randint(0, 99):02d}", "us_national"
        if fmt == 2:
            return f"+44 20 7946 0{rng.randint(0, 999):03d}", "uk_international"
        if fmt == 3:
            return f"020 7946 0{rng.randint(0, 999):03d}", "uk_national"
        return f"+49 30 {rng.randint(1_000_000, 9_999_999)}", "de_international"
    if kind == "ip":
        if rng.random() < 0.4:
            # The IPv6 documentation prefix 2001:db8::/32, compressed or written out in full.
            groups = [rng.randrange(0x10000) for _ in range(6)]
            if rng.random() < 0.5:
                return "2001:db8:" + ":".join(f"{g:x}" for g in groups[:2]) + f"::{groups[5]:x}", "ipv6"
            return "2001:0db8:" + ":".join(f"{g:04x}" for g in groups), "ipv6"
        prefix = rng.choice(("192.0.2", "198.51.100", "203.0.113", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}"))
        return f"{prefix}.{rng.randint(1, 254)}", "ipv4"
    if kind == "credit_card":
        return _card_number(rng), "card"
    if kind == "secret_key":
        return _secret_key(rng)
    raise ValueError(kind)


# Four-part version numbers look exactly like IPv4 addresses; planted next to PII, they must survive.
_VERSION_TEMPLATES = (
    "The fix shipped in version {} of the driver.",
    "Upgrade to release {} before reporting the problem.",
    "The changelog for build {} lists the change.",
    "Pin the dependency with =={} to reproduce it.",
)


def plant_version(text: str, rng: Random) -> tuple[str, str]:
    """Append a sentence quoting an IPv4-shaped version number; returns the text and the number."""
    value = ".".join(str(rng.randint(0, 30)) for _ in range(4))
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    lines[i] = f"{lines[i]} {rng.choice(_VERSION_TEMPLATES).format(value)}"
    return "\n".join(lines), value


def plant_pii_sentences(text: str, rng: Random, first_kind: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Append 1-3 PII-bearing sentences to random lines; returns the new text and (kind, value, format) items.

    The caller rotates `first_kind` so that even tiny corpora hold every kind."""
    lines = text.split("\n")
    prose = [i for i, line in enumerate(lines) if line.endswith((".", "!", "?")) and len(line) > 80]
    prose = prose or [len(lines) - 1]
    items: list[tuple[str, str, str]] = []
    for n in range(rng.randint(1, 3)):
        kind = first_kind if n == 0 else rng.choice(PII_KINDS)
        value, fmt = pii_value(kind, rng)
        if any(value in v or v in value for _, v, _ in items):
            continue
        i = rng.choice(prose)
        lines[i] = f"{lines[i]} {rng.choice(PII_TEMPLATES[kind]).format(value)}"
        items.append((kind, value, fmt))
    return "\n".join(lines), items
