"""The filters on their own: what each one drops or rewrites, and what it records about why."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.mixing import selection as mixing
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.io.documents import DOCUMENT_SCHEMA
from mix_pipeline.core.filters.base import FilterFamily, drop
from mix_pipeline.core.filters.code_quality import CodeQualityFilter, data_fraction
from mix_pipeline.core.filters.language import LanguageIdFilter
from mix_pipeline.core.filters.pii import PII, PIIRedactor, find_pii, luhn_valid, redact_pii
from mix_pipeline.core.filters.safety import SafetyFilter
from mix_pipeline_tests.conftest import prose_doc

CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "3782 822463 10005", "6011000990139424"]
KEYS = [
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "aB3dE5" * 6,
    "sk-proj-" + "Q1w2E3r4T5y6U7i8O9p0" * 2,
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nbase64bodyline==\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
]


def doc(text: str, i: str = "d") -> Document:
    return Document(text=text, id=i, metadata={})


# ---- PII -------------------------------------------------------------------------------------
@pytest.mark.parametrize("card", CARDS)
def test_luhn_valid_card_numbers_are_redacted_in_every_printed_layout(card):
    text, counts = redact_pii(f"Charge it to {card}, please.")
    assert text == "Charge it to <CREDIT_CARD>, please." and counts == {"credit_card": 1}


@pytest.mark.parametrize("number", ["4111 1111 1111 1112", "1234567890123", "12345678901234567890", "v4111111111111111"])
def test_numbers_that_are_not_cards_are_left_alone(number):
    assert "credit_card" not in redact_pii(f"Reference {number} here.")[1]
    assert not luhn_valid("4111111111111112") and luhn_valid("4111111111111111")


@pytest.mark.parametrize("key", KEYS)
def test_secret_key_shapes_are_redacted(key):
    text, counts = redact_pii(f"config: {key} end")
    assert counts == {"secret_key": 1}, text
    assert text == "config: <SECRET_KEY> end"


FOUND = [
    ("Call +49 30 1234567 today.", "phone", "+49 30 1234567"),
    ("The office is on 020 7946 0958.", "phone", "020 7946 0958"),  # the full stop ends the sentence
    ("Dial +33 1 23 45 67 89, then wait.", "phone", "+33 1 23 45 67 89"),
    ("Text +491701234567 now.", "phone", "+491701234567"),
    ("Try +1 (206) 555-0123.", "phone", "+1 (206) 555-0123"),
    ("Blocked 2001:db8::8a2e:370:7334 twice.", "ip", "2001:db8::8a2e:370:7334"),
    ("Host 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", "ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("Link-local fe80::1ff:fe23:4567:890a here.", "ip", "fe80::1ff:fe23:4567:890a"),
    ("Mapped ::ffff:192.0.2.128 too.", "ip", "::ffff:192.0.2.128"),
    ("The server 10.1.2.3.", "ip", "10.1.2.3"),
    ("token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx leaked", "secret_key",
     "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("hook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX posted", "secret_key",
     "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe;", "secret_key", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
]


@pytest.mark.parametrize("text, kind, value", FOUND)
def test_international_phones_ipv6_and_slack_google_keys_are_redacted(text, kind, value):
    redacted, counts = redact_pii(text)
    assert counts == {kind: 1} and value not in redacted, redacted
    assert find_pii(redacted) is None


NOT_PII = [
    "Fixed in version 1.2.3.4 of the driver.", "Version: 10.0.0.1 is out.", "Pin it with foo==1.2.3.4 please.",
    "Upgrade to release 4.3.2.1 first.", "Build 2.0.1.7 broke it.", "requires >= 1.2.3.4", "Python 3.11.4.1",
    "Slices a[1::2] and b[10::3], C++ std::vector and abc::def, 12:30:45, MAC 00:1a:2b:3c:4d:5e.",
    "The sum +3 10 20 is arithmetic.", "Scores 1.5 -2.5 and ratio 3:4.",
]


@pytest.mark.parametrize("text", NOT_PII)
def test_version_strings_and_code_are_not_pii(text):
    assert redact_pii(text) == (text, {})


def test_words_that_merely_look_like_key_prefixes_survive():
    text = "We use sk-learn-style-estimators-everywhere and AKIA is a word; ghp_short too."
    assert redact_pii(text) == (text, {})


def test_redactor_counts_each_kind_and_orders_secrets_before_phones():
    step = PIIRedactor()
    text = ("Mail ann@example.com, call +1 206-555-0123, server 10.1.2.3, card 4111-1111-1111-1111, "
            "key AKIAIOSFODNN7EXAMPLE.")
    (out,) = list(step.run([doc(text)]))
    assert out.metadata["pii_redacted"] == {"secret_key": 1, "credit_card": 1, "email": 1, "ip": 1, "phone": 1}
    assert "<PHONE>" in out.text and "<CREDIT_CARD>" in out.text and "1111" not in out.text
    only_email = PIIRedactor(kinds=["email"])
    (out,) = list(only_email.run([doc(text)]))
    assert out.metadata["pii_redacted"] == {"email": 1} and "4111-1111-1111-1111" in out.text
    with pytest.raises(ValueError, match="unknown kinds"):
        PIIRedactor(kinds=["passport"])


PIECES = st.sampled_from(CARDS + KEYS + ["ann@example.com", "+44 20 7946 0123", "192.0.2.7", "plain words", "2024",
                                          "4111 1111 1111 1112", "v1.2.3", "\n", " - ", "12 34 56", "+49 30 1234567",
                                          "020 7946 0958.", "2001:db8::1", "version 1.2.3.4", "::",
                                          "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"])


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(PIECES, max_size=12))
# An invalid 4-4-4-4 run hiding a valid Amex number until the phone pattern takes its head.
@example(["2024", "2024", "2024", "3782 822463 10005"])
def test_nothing_the_gate_looks_for_survives_redaction(pieces):
    """no_pii_left searches with find_pii; whatever redact_pii leaves, find_pii must not flag."""
    text, _ = redact_pii(" ".join(pieces))
    assert find_pii(text) is None, text


# Decimal digits that are not ASCII (Arabic-Indic, extended Arabic-Indic, Devanagari, fullwidth):
# the patterns' `\d` matches them, so the prechecks must count them as digits.
OTHER_DIGITS = "٠١٢٣٤٥٦٧٨٩۴७１９"
# Text built to sit on the prechecks' edges: PII pieces glued to digits, separators, brackets,
# colons, dots and key-prefix fragments in any order, with no space between them.
EDGE_PIECES = st.one_of(
    PIECES,
    st.text(alphabet="0123456789 .:-+()@_/=\nabcdefxyzAKISGHPkpolruF" + OTHER_DIGITS[::3], max_size=30),
    st.sampled_from(["ASIA", "AIza", "ya29.", "sk-", "sk_live_", "rk_test_", "github_pat_", "gho_", "xoxp-",
                     "https://hooks.slack.com/workflows/", "-----BEGIN ", "PRIVATE KEY-----", "(206) ", "555-0123",
                     # digit shapes: IPv4 octets of one to three digits, full-form IPv6 (hex letters
                     # too), printed card groupings, national phone groups, digits that are not ASCII
                     "1.255.3.4", "٩.٢.٣.٤", "1:2:3:4:5:6:7", "a:b:c:d:e:f:a:b", "ABCD:EF01:2345:6789:",
                     "3782-822463-10005", "4111-1111-1111-1111", "١١١١ ", "(٠٢٠) ", ")-555", "+٤٤", "７９４６"]),
)
BARE = {kind: dataclasses.replace(spec, may_match=None) for kind, spec in PII.items()}


def _outputs(text: str):
    found = find_pii(text)
    return redact_pii(text), found and (found[0], found[1].span())


def _outputs_without_prechecks(text: str):
    original = dict(PII)
    try:
        PII.update(BARE)
        return _outputs(text)
    finally:
        PII.update(original)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.lists(EDGE_PIECES, max_size=10), st.sampled_from(["", " ", "\n", "-", "."]))
@example(["+1 (206) 555-0123"], "")
@example(["AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"], "")
@example(["fe80::1ff:fe23:4567:890a"], "")
def test_pii_prechecks_never_skip_a_match(pieces, sep):
    """Each kind's `may_match` (the cheap check that lets redaction skip its regex) is a
    necessary condition: wherever the bare pattern finds a match its validator accepts, the
    precheck says yes; and redaction with the prechecks equals redaction without them."""
    text = sep.join(pieces)
    for kind, bare in BARE.items():
        found = any(bare.valid is None or bare.valid(m) for m in bare.pattern.finditer(text))
        assert not found or PII[kind].may_match(text), (kind, text)
    assert _outputs(text) == _outputs_without_prechecks(text), text


# PII written with digits that are not ASCII (the prechecks once counted ASCII digits only and
# skipped these), and digit shapes on the prechecks' edges.
HAND_WRITTEN = [
    "call +٤٤٢٠٧٩٤٦٠١٢٣ now", "+44 20 7946 012٣", "host ٩.٢.٣.٤ up", "host 10.٢.٣.٤ up", "１９２.０.２.７",
    "card ４１１１１１１１１１１１１１１１ ok", "card 411111111111111١ x", "(٠٢٠) ٧٩٤٦ ٠٩٥٨", "3782-822463-10005",
    "(020) 7946-0958 or 020.7946.0958", "host 1.255.3.4 or 1.2.255.4", "255.255.255.255.1", "a:b:c:d:e:f:a:b",
    "1:2:3:4:5:6:7:", "ABCD:EF01:2345:6789:ABCD:EF01:2345:6789", "4111-1111-1111-1111-111", "4222 2222 2222 2",
    "4222-2222-2222-2", "4222222222222", "3056 930902 5904", "+1 (206) 555-0123", "call 12 345 678", "+1 234 5678",
    "+1 (2) 34 56 78 90", "dial +1 23 45 67 89.",
    "nothing here at all", "",
    # a key for each prefix the secret precheck looks for, each alone in its text
    "ya29.a0AfH6SMBxYz1234567890abcd", "sk_live_a1B2c3D4e5F6g7H8", "rk_test_a1B2c3D4e5F6g7H8", "ASIAY34FZKBOKMUTVV7A",
    "github_pat_11ABCDEFG0123456789abcdef", *(f"gh{c}_" + "aB3dE5" * 6 for c in "pousr"), "xoxp-1234-5678-abcd",
]


def test_prechecks_change_no_redaction():
    """Redaction and find_pii with the prechecks equal the bare patterns on the texts these
    tests build and the hand-written edges above."""
    texts = CARDS + KEYS + [text for text, _, _ in FOUND] + NOT_PII + HAND_WRITTEN
    texts += [f"Charge it to {card}, please." for card in CARDS] + [f"config: {key} end" for key in KEYS]
    texts += [prose_doc(seed) for seed in range(3)] + [" ".join(texts), "".join(texts), "\n".join(HAND_WRITTEN)]
    for text in texts:
        assert _outputs(text) == _outputs_without_prechecks(text), text
    assert redact_pii("call +٤٤٢٠٧٩٤٦٠١٢٣, host ٩.٢.٣.٤")[1] == {"ip": 1, "phone": 1}


def test_no_pii_left_gate_uses_the_redactors_patterns_and_kinds(tmp_path):
    (tmp_path / "train").mkdir()
    rows = [{"id": "a", "text": "Paid with 4111 1111 1111 1111 yesterday.", "source": "web", "domain": "web", "metadata": "{}"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), tmp_path / "train" / "part-00000.parquet")
    ledger = [{"source": "web", "target_weight": 1.0, "achieved_weight": 1.0, "epochs": 1.0,
               "units": 10, "available_units": 10}]
    splits = {"train": {"files": ["train/part-00000.parquet"]}}

    def gate(pii_sources):
        out = quality.mixture_checks(ledger, {"web": 1.0}, 0.01, str(tmp_path), splits, pii_sources, None, {})
        return next(o for o in out if o.name == "no_pii_left")

    failed = gate({"web": ("secret_key", "credit_card", "email", "ip", "phone")})
    assert not failed.passed and failed.examples[0]["snippet"].startswith("credit_card: ")
    assert gate({"web": ("email",)}).passed  # this source only asked for emails to be redacted


# ---- language --------------------------------------------------------------------------------
def test_language_drop_records_language_and_score():
    f = LanguageIdFilter(languages=["en"])
    german = doc("Die Regierung präsentiert ein neues Projekt in der nächsten Woche. Die Kinder bauen alte Häuser.")
    assert f.filter(german) == (False, "language_de")
    value = json.loads(german.metadata["filter_value"])
    assert value["language"] == "de" and 0.5 < value["score"] <= 1.0
    english = doc(prose_doc(1))
    assert f.filter(english) is True and english.metadata["language"] == "en" and "filter_value" not in english.metadata


# ---- safety ----------------------------------------------------------------------------------
def test_safety_drops_over_the_flagged_fraction_and_records_it():
    clean = prose_doc(3, sentences=8)
    n_words = len(clean.split())
    f = SafetyFilter(max_flagged_fraction=0.02)
    offensive = doc(clean.replace("The ", "The fucking ", 4) + " What a bullshit plan, you bastards.")
    assert f.filter(offensive) == (False, "offensive_words")
    value = json.loads(offensive.metadata["filter_value"])
    assert value["flagged_words"] == 5 and value["flagged_fraction"] > 0.02 and value["examples"][0] == "fucking"
    # One flagged word is below min_flagged_words (2); two in a long text are below the fraction.
    assert f.filter(doc(clean + " Bullshit.")) is True
    long_text = " ".join([clean] * 20) + " shit shit"
    assert f.filter(doc(long_text)) is True and len(long_text.split()) > 100 * 2 > n_words


def test_safety_reads_user_lists_with_phrases_and_can_skip_the_default(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("# team list\nflibbertigibbet\nmaple syrup scandal\n")
    text = "Flibbertigibbet! The maple syrup scandal, again: flibbertigibbet and the Maple Syrup Scandal."
    own = SafetyFilter(word_lists=[str(words)], use_default_list=False, max_flagged_fraction=0.05)
    assert own.filter(doc(text)) == (False, "offensive_words")
    assert own.flagged(text)[0] == 4
    assert own.flagged("fuck fuck")[0] == 0  # the built-in list is off
    with pytest.raises(ValueError, match="no words to flag"):
        SafetyFilter(word_lists=[], use_default_list=False)


# ---- code ------------------------------------------------------------------------------------
def test_code_quality_keeps_ordinary_code():
    for module in (catalog, mixing, quality):
        assert CodeQualityFilter().filter(doc(inspect.getsource(module))) is True, module.__name__


@pytest.mark.parametrize(
    "text, reason, key",
    [
        ("# Code generated by protoc-gen-go. DO NOT EDIT.\npackage api\n", "code_autogenerated", "marker"),
        ('"""Codec generated from \'MAPPINGS/CP1252.TXT\' with gencodec.py."""\nimport codecs\n', "code_autogenerated", "marker"),
        ("x = 1\n" + "y=" + "+".join(["x"] * 800) + "\n", "code_long_line", "max_line_length"),
        ("\n".join(["value_" + "a" * 120 + " = 1"] * 20), "code_long_mean_line", "mean_line_length"),
        ("\n".join(["{}[]()<>;:=+-*/&|" * 3] * 40), "code_low_alnum", "alnum_fraction"),
        ("DATA = [\n" + "\n".join("    0x1f2e3d4c, 0x00ff00ff, 3.14159, 42," for _ in range(60)) + "\n]\n", "code_data_like", "data_fraction"),
        ("BLOB = (\n" + "\n".join("    'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkw'" for _ in range(60)) + "\n)\n", "code_data_like", "data_fraction"),
    ],
)
def test_code_quality_drops_generated_minified_and_data_files(text, reason, key):
    d = doc(text)
    assert CodeQualityFilter().filter(d) == (False, reason)
    assert key in json.loads(d.metadata["filter_value"])


def test_generated_by_in_a_docstring_is_not_a_marker():
    text = '"""Trees.\n\nA tree can be generated by passing a flag to compile().\n"""\n\ndef parse(source):\n    return source\n'
    assert CodeQualityFilter().filter(doc(text)) is True
    assert data_fraction("x = 0x1f + 12") > data_fraction("x = width + height")


# ---- shared word splitting -------------------------------------------------------------------
def _sample_texts(corpus, folder: str) -> list[tuple[str, str]]:
    import gzip

    out = []
    for path in sorted((corpus / folder).glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out += [(r["id"], r["text"]) for r in map(json.loads, f)]
    return out


def test_shared_tokenizer_splits_words_and_sentences_like_datatrove(sample_3mb):
    """The warm, shared tokenizer returns datatrove's words and sentence spans exactly, on every
    web document and (as C4 asks) every line of it, across cache resets too."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    from mix_pipeline.core.filters.tokenizer import SharedSpaCyTokenizer

    texts = [t for _, t in _sample_texts(sample_3mb, "web")][:150]
    lines = [line.strip() for t in texts for line in t.splitlines() if line.strip()]
    assert len(texts) == 150 and len(lines) > 1000
    stock = SpaCyTokenizer("en")
    # A small string store forces several rebuilds of the spaCy pipeline along the way.
    shared = SharedSpaCyTokenizer("en", max_strings=3000)
    for text in texts:
        assert shared.word_tokenize(text) == stock.word_tokenize(text)
        assert shared.word_tokenize(text) == stock.word_tokenize(text)  # the memo's answer
    for line in lines:
        assert shared.span_tokenize(line) == stock.span_tokenize(line)
    assert [shared.sent_tokenize(t) for t in texts[:20]] == [stock.sent_tokenize(t) for t in texts[:20]]
    assert shared.resets >= 2


def test_memoized_words_are_a_copy_per_caller():
    from mix_pipeline.core.filters.tokenizer import SharedSpaCyTokenizer

    shared = SharedSpaCyTokenizer("en", memo_size=2)
    words = shared.word_tokenize("One two three.")
    words.append("four")
    assert shared.word_tokenize("One two three.") == ["One", "two", "three", "."]
    for text in ["a b", "c d", "e f"]:
        shared.word_tokenize(text)
    assert list(shared._words) == ["c d", "e f"]


def _decisions(steps, docs) -> list:
    """(id, verdict, text, metadata) per document after running `steps` in order."""
    out = []
    for d in docs:
        d = Document(text=d.text, id=d.id, metadata=dict(d.metadata))
        verdict = "kept"
        for step in steps:
            result = step.filter(d)
            if result is not True:
                verdict = result
                break
        out.append((d.id, verdict, d.text, json.dumps(d.metadata, sort_keys=True)))
    return out


def test_prose_filters_decide_as_datatrove_and_record_what_they_measured(sample_3mb):
    """The Gopher repetition, Gopher quality, C4 and FineWeb filters a recipe builds (core.filters.prose:
    one shared word split, array statistics) keep and drop the same documents for the same
    reasons, leaving the same texts, as datatrove's own filters; each drop carries its value."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from mix_pipeline.core.filters import words as prose_words
    from mix_pipeline.core.filters.registry import build_filter

    docs = [doc(text, i) for i, text in _sample_texts(sample_3mb, "web")]
    # Documents that stress the word split and the n-gram walk: contractions, abbreviations,
    # irregular spacing, repeated n-grams, lists of short lines.
    docs += [doc(t, f"x{i}") for i, t in enumerate([
        "Don't stop.  It's fine, e.g. the U.S. and the U.K. are here. " * 12,
        "the cat sat on the mat and the dog sat on the log " * 30,
        "\n".join(f"- item {i} of the list." for i in range(80)),
        "A sentence here.\tAnother one there! And a third?  Yes. Fourth one. Fifth one.\n" * 6,
        "one two three four five six seven eight nine ten " * 3 + "eleven twelve the and of to " * 20,
    ])]
    names = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
    ours = [build_filter(name, {}) for name in names]
    assert [type(s).__module__ for s in ours] == ["mix_pipeline.core.filters.prose"] * 4
    stock = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]
    got, want = _decisions(ours, docs), _decisions(stock, docs)
    assert [(i, v, t) for i, v, t, _ in got] == [(i, v, t) for i, v, t, _ in want]
    # In a pipeline Gopher repetition decides a batch at a time (the batch's statistics in one
    # pass): each document still gets the verdict it gets alone, whatever its neighbours.
    alone = [v for _, v, _, _ in _decisions(stock[:1], docs)]
    for size in (1, 5, 64):
        copies = [Document(text=d.text, id=d.id, metadata={}) for d in docs]
        batched = [v for i in range(0, len(copies), size) for v in ours[0].filter_batch(copies[i:i + size])]
        assert ["kept" if v is True else v for v in batched] == alone, size
    for _, verdict, _, meta in got:
        if verdict != "kept":
            assert json.loads(json.loads(meta)["filter_value"]), verdict
    # The comparison means something only if the corpus exercises drops and C4's rewrites.
    verdicts = {v if v == "kept" else v[1] for _, v, _, _ in want}
    assert "kept" in verdicts and len(verdicts) >= 4, verdicts
    assert any(text != d.text for (_, _, text, _), d in zip(want, docs))
    # The words are spaCy's own, also after the chunk cache starts again.
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    small, stock_words = prose_words.WordSplitter("en", max_chunks=500), SpaCyTokenizer("en")
    for d in docs[:60]:
        want = stock_words.word_tokenize(d.text)
        assert small.words(d.text) == want
        arrays = small.arrays(d.text)  # the same words as hashes, lengths and flags
        assert arrays.ids.tolist() == prose_words.word_ids(want).tolist()
        assert arrays.lengths.tolist() == [len(w) for w in want]
        assert arrays.flags.tolist() == [prose_words.word_flags(w) for w in want]
        assert small.count_words(d.text) == len(want)


def test_languages_datatrove_does_not_split_with_blank_spacy_keep_its_tokenizer():
    from mix_pipeline.core.filters.registry import build_filter
    from mix_pipeline.core.filters.words import word_splitter

    assert word_splitter("fr") is not None and build_filter("gopher_quality", {"language": "fr"}).language == "fr"
    assert word_splitter("ja") is None and build_filter("fineweb", {"language": "ja"}).language == "ja"


def test_fast_language_identifier_gives_py3langid_languages_and_scores(sample_3mb):
    """The array walk of core.fastlang returns py3langid's own (language, probability), to the
    last bit, on the sample corpus (English and foreign web documents, books, papers) and on
    edge cases: empty, one byte, all upper case, non-Latin scripts."""
    from mix_pipeline.core.filters.language import fast_language_identifier, language_identifier

    stock, fast = language_identifier(), fast_language_identifier()
    texts = [t[:10_000] for folder in ("web", "papers") for _, t in _sample_texts(sample_3mb, folder)][:400]
    texts += ["", "a", "!", "HELLO WORLD, THIS IS LOUD.", "Привет, как дела? Всё хорошо.", "これは日本語の文です。",
              "مرحبا بالعالم", "e\u0301t\u00e9 caf\u00e9", "\x00\x01 binary\x7f"]
    got = [fast.classify(t) for t in texts]
    assert got == [stock.classify(t) for t in texts]
    assert len({lang for lang, _ in got}) >= 4
    # A batch walks the texts end to end: each still gets the answer it gets alone, whatever
    # its neighbours (the edge cases between long texts, in batches of several sizes).
    mixed = [t for pair in zip(texts[:40], texts[-9:] * 5) for t in pair]
    for size in (1, 7, 64):
        assert [a for i in range(0, len(mixed), size) for a in fast.classify_batch(mixed[i:i + size])] == \
            [stock.classify(t) for t in mixed]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=120), min_size=1, max_size=5), st.integers(1, 7))
@example([[0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]], 6)
@example([[0, 1, 0, 1], [0, 1, 0, 1, 0, 1], [], [2, 3]], 4)
def test_ngram_statistics_count_only_repeating_positions_and_match_datatrove(texts, vocabulary):
    """Gopher repetition's n-gram statistics, counted for a batch of texts at once and only
    where the shorter n-gram repeats (ngrams.NgramCandidates), equal datatrove's own functions
    on each text alone, for every n, in the filter's order."""
    import numpy as np
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_top_duplicate,
        get_n_grams,
    )

    from mix_pipeline.core.filters.ngrams import NgramCandidates, duplicated_ngram_chars, top_ngram_chars
    from mix_pipeline.core.filters.words import word_ids

    # One "w" per word, at its start: joined n-grams are equal only if their words are (datatrove
    # joins the duplicated n-grams' words without a space).
    batch = [[f"w{c % vocabulary}" + "a" * (c % 3) for c in choices] for choices in texts]
    ngrams = NgramCandidates([word_ids(words) for words in batch])
    cum = np.concatenate(([0], np.cumsum([len(w) for words in batch for w in words], dtype=np.int64)))
    longest = max(map(len, batch))
    for n in (2, 3, 4):
        if longest < n:
            continue
        found, repeating = top_ngram_chars(*ngrams.at(n), ngrams, cum[n:] - cum[:-n] + (n - 1))
        ngrams.counted(n, repeating)
        for t, words in enumerate(batch):
            if len(words) >= n:
                assert found[t] == find_top_duplicate(get_n_grams(words, n)), (n, t)
    for n in range(5, 11):
        if longest < n:
            continue
        found, repeating = duplicated_ngram_chars(*ngrams.at(n), ngrams, n, cum[n:] - cum[:-n])
        ngrams.counted(n, repeating)
        for t, words in enumerate(batch):
            if len(words) >= n:
                assert found[t] == find_all_duplicate(words, n), (n, t)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab\n\r ", max_size=30))
@example("")
@example("\n")
@example("\n\n")
def test_split_lines_is_gopher_repetitions_regex_split(text):
    import re

    from mix_pipeline.core.filters import prose

    assert prose.split_lines(text) == re.split("\n+", text)


class ShoutingFilter(BaseFilter, FilterFamily):
    """A new filter family, as its own module would define it."""

    path_params = ("allow_lists",)

    def __init__(self, max_upper: float = 0.5, allow_lists: list[str] | None = None, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.max_upper, self.allow_lists = float(max_upper), list(allow_lists or [])

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        share = sum(c.isupper() for c in doc.text) / max(len(doc.text), 1)
        return drop(doc, "shouting", share=round(share, 4)) if share > self.max_upper else True


def test_adding_a_filter_is_its_module_plus_one_registry_line(monkeypatch):
    """The registry builds, checks and classifies a family from its class's declarations alone."""
    from mix_pipeline.core.filters import registry

    monkeypatch.setitem(registry.FAMILIES, "shouting", f"{__name__}.ShoutingFilter")  # the one line
    step = registry.build_filter("shouting", {"allow_lists": ["ok.txt"]}, resolve=lambda p: f"/recipe/{p}")
    assert step.allow_lists == ["/recipe/ok.txt"] and registry.is_dropping("shouting")
    assert registry.path_params("shouting", {"allow_lists": ["ok.txt"]}) == [("allow_lists", "ok.txt")]
    with pytest.raises(ValueError, match="unknown parameter 'loud'"):
        registry.check_params("shouting", {"loud": True})
    assert step.filter(Document(text="STOP SHOUTING", id="1")) == (False, "shouting")
    # The families' declarations say what the names used to: PII alone rewrites, the prose
    # filters alone split words, the safety word lists alone are paths.
    families = {name: registry.filter_class(name) for name in registry.FILTER_NAMES}
    assert [n for n, cls in families.items() if not cls.drops] == [registry.PII]
    assert [n for n, cls in families.items() if cls.splits_words] == list(registry.PROSE_FILTERS)
    assert {n: cls.path_params for n, cls in families.items() if cls.path_params} == {registry.SAFETY: ("word_lists",)}


class CountingShoutingFilter(ShoutingFilter):
    """A family that also reports: what it counts, the numbers drawn from that, what it measured."""

    @classmethod
    def counts_sql(cls, name: str) -> str:
        return f"""SELECT '{name}', 'upper', count(*), NULL FROM docs
                   WHERE json_extract(metadata, '$.upper') IS NOT NULL HAVING count(*) > 0"""

    @classmethod
    def count_stats(cls, rows: list[dict]) -> dict[str, float]:
        return {f"shouting_{r['kind']}": r["documents"] for r in rows}

    @classmethod
    def measured(cls, meta: dict) -> dict | None:
        return {"upper": meta["upper"]} if "upper" in meta else None


def test_a_family_reports_its_own_counts_and_measurements(monkeypatch, tmp_path):
    """The catalog's counts, the stage's statistics and `trace` ask each family, so a new family's
    report hooks reach all three with its registry line alone."""
    import duckdb

    from mix_pipeline.core.filters import registry
    from mix_pipeline.core.provenance.catalog import filter_counts
    from mix_pipeline.core.provenance.trace import _measured
    from mix_pipeline.core.stages.filtered import _filter_count_stats

    monkeypatch.setitem(registry.FAMILIES, "shouting", f"{__name__}.CountingShoutingFilter")
    metas = [{"language": "en", "language_score": 0.9, "pii_redacted": {"email": 2}, "upper": 0.8},
             {"language": "fr", "flagged_words": 3},
             {"language": "en", "decontaminated": {"qa": 5}}]
    path = str(tmp_path / "part.parquet")
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"],
                             "metadata": [json.dumps(m) for m in metas]}), path)
    rows = filter_counts(duckdb.connect(), [path])
    assert [(r["filter"], r["kind"], r["documents"], r["matches"]) for r in rows] == [
        ("decontamination", "qa", 1, 5), ("language", "en", 2, None), ("language", "fr", 1, None),
        ("pii", "email", 1, 2), ("safety", "flagged", 1, 3), ("shouting", "upper", 1, None)]
    assert _filter_count_stats(rows) == {
        "contaminated_qa": 1, "language_share_en": 0.666667, "language_share_fr": 0.333333, "pii_email": 2,
        "safety_flagged_documents": 1, "safety_flagged_words": 3, "shouting_upper": 1}
    assert _measured("shouting", metas[0]) == {"upper": 0.8}
    assert _measured("language", metas[0]) == {"language": "en", "score": 0.9}
    assert _measured("pii", metas[1]) == {"redacted": {}}
    assert _measured("safety", metas[1]) == {"flagged_words": 3}
    assert _measured("decontamination", metas[2]) == {"matched_ngrams": {"qa": 5}}
