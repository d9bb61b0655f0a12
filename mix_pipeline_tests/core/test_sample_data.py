import gzip
import hashlib
import json
import random
import re
from pathlib import Path

import py3langid
import pyarrow.parquet as pq
import pytest
import zstandard
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

from mix_pipeline.core.filters.code_quality import CodeQualityFilter
from mix_pipeline.core.filters.pii import PII, redact_pii
from mix_pipeline.core.filters.safety import SafetyFilter
from mix_pipeline.sample.corpus import build_sample_corpus
from mix_pipeline.sample.pii import PII_KINDS, PII_TEMPLATES, pii_value, plant_version

DEFECT_LISTS = ("exact_duplicates", "near_duplicates", "cross_source_duplicates", "spam", "short", "long",
                "non_english", "offensive", "contaminated", "pii", "bad_code")


def shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(text):
        words = text.split()
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def read_corpus(root: Path) -> dict[str, dict[str, dict]]:
    """source -> id -> record, read back from the on-disk formats."""
    corpus: dict[str, dict[str, dict]] = {"web": {}, "books": {}, "papers": {}, "code": {}}
    for kind in ("qa", "coding", "safety"):
        corpus[f"chat_{kind}"] = {}
        for path in sorted((root / "chat" / kind).glob("part-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                text = "".join(turn["content"] for turn in rec["messages"])
                corpus[f"chat_{kind}"][rec["id"]] = rec | {"file": path.name, "text": text}
    for path in sorted((root / "web").glob("part-*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                corpus["web"][rec["id"]] = rec | {"file": path.name}
    for path in sorted((root / "papers").glob("part-*.jsonl.zst")):
        data = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode("utf-8")
        for line in data.splitlines():
            rec = json.loads(line)
            corpus["papers"][rec["id"]] = rec | {"file": path.name}
    for path in sorted((root / "books").glob("part-*.parquet")):
        for rec in pq.read_table(path).to_pylist():
            corpus["books"][rec["id"]] = rec | {"file": path.name}
    for path in sorted((root / "code").rglob("*.py")):
        rel = path.relative_to(root / "code").as_posix()
        corpus["code"][rel] = {"id": rel, "text": path.read_text(encoding="utf-8"), "file": rel}
    return corpus


def file_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def planted_ids(truth: dict) -> set[tuple[str, str]]:
    return {(e["source"], e["id"]) for key in DEFECT_LISTS for e in truth[key]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    truth = build_sample_corpus(root, size_mb=1, seed=0, log=lines.append)
    return root, truth, read_corpus(root), lines


def test_same_seed_is_byte_identical_and_other_seed_differs(built, tmp_path):
    root, _, corpus, _ = built
    again = tmp_path / "again"
    build_sample_corpus(again, size_mb=1, seed=0)
    assert file_digests(again) == file_digests(root)

    other = tmp_path / "other"
    build_sample_corpus(other, size_mb=1, seed=1)
    other_web = {r["text"] for r in read_corpus(other)["web"].values()}
    assert not other_web & {r["text"] for r in corpus["web"].values()}


def test_layout_and_formats(built):
    root, truth, corpus, lines = built
    assert (root / "README.txt").read_text().strip()
    assert json.loads((root / "ground_truth.json").read_text()) == truth
    assert len(list((root / "web").glob("part-*.jsonl.gz"))) >= 2
    assert sorted(p.name for p in (root / "books").iterdir())[0] == "part-00000.parquet"
    assert sorted(p.name for p in (root / "papers").iterdir())[0] == "part-00000.jsonl.zst"
    assert all(set(r) == {"id", "text", "url", "file"} and r["url"].startswith("https://")
               for r in corpus["web"].values())
    assert all(set(r) == {"id", "text", "title", "file"} for r in corpus["papers"].values())
    assert pq.read_schema(next((root / "books").glob("*.parquet"))).names == ["id", "text", "title"]
    assert sorted(corpus["web"])[0] == "web-000001"
    assert sorted(corpus["books"])[0] == "book-00001"
    assert sorted(corpus["papers"])[0] == "paper-00001"
    assert corpus["code"] and all("/test/" not in i and not i.startswith("idlelib/") for i in corpus["code"])
    for source, records in corpus.items():
        assert truth["counts"][source]["documents"] == len(records)
        assert truth["counts"][source]["bytes"] == sum(len(r["text"].encode()) for r in records.values())
    assert truth["counts"]["total_documents"] == sum(len(r) for r in corpus.values())
    assert truth["seed"] == 0 and truth["size_mb"] == 1.0
    assert len(lines) >= 4 and lines[0].startswith("web: ")


def test_chat_sets(built):
    root, truth, corpus, lines = built
    assert {k: len(corpus[f"chat_{k}"]) for k in ("qa", "coding", "safety")} == {"qa": 1000, "coding": 500, "safety": 250}
    for kind in ("qa", "coding", "safety"):
        for rec in corpus[f"chat_{kind}"].values():
            assert rec["category"] == kind and rec["id"].startswith(f"{kind}-")
            roles = [t["role"] for t in rec["messages"]]
            assert roles[-1] == "assistant" and set(roles) <= {"system", "user", "assistant"}
            assert all(isinstance(t["content"], str) and t["content"].strip() for t in rec["messages"])
    assert all("```python\ndef " in r["messages"][-1]["content"] for r in corpus["chat_coding"].values())
    for rec in list(corpus["chat_coding"].values())[:50]:
        code = rec["messages"][-1]["content"].split("```python\n")[1].split("```")[0]
        compile(code, rec["id"], "exec")  # generated functions are valid Python
    assert any(line.startswith("chat/qa: 1000 conversations") for line in lines)


def test_every_ground_truth_id_exists(built):
    _, truth, corpus, _ = built
    for key in DEFECT_LISTS:
        assert truth[key], key
        for entry in truth[key]:
            assert entry["id"] in corpus[entry["source"]], entry
            if "of_id" in entry:
                assert entry["of_id"] in corpus[entry["of_source"]], entry


def test_one_planted_defect_per_document(built):
    _, truth, _, _ = built
    seen: dict[tuple[str, str], str] = {}
    for key in DEFECT_LISTS:
        for doc in {(e["source"], e["id"]) for e in truth[key]}:
            assert doc not in seen, (doc, key, seen.get(doc))
            seen[doc] = key
    # Originals of duplicates are clean documents.
    for key in ("exact_duplicates", "near_duplicates", "cross_source_duplicates"):
        for e in truth[key]:
            assert (e["of_source"], e["of_id"]) not in seen, e


def test_duplicates(built):
    _, truth, corpus, _ = built
    for e in truth["exact_duplicates"]:
        copy, original = corpus[e["source"]][e["id"]], corpus[e["of_source"]][e["of_id"]]
        assert e["source"] == e["of_source"]
        assert copy["text"] == original["text"]
        if e["source"] == "web":  # web always has several files
            assert copy["file"] != original["file"]
    for e in truth["near_duplicates"]:
        copy, original = corpus[e["source"]][e["id"]], corpus[e["of_source"]][e["of_id"]]
        assert copy["text"] != original["text"]
        assert shingle_jaccard(copy["text"], original["text"]) >= 0.85, e
    assert {e["of_source"] for e in truth["cross_source_duplicates"]} == {"books", "papers"}
    for e in truth["cross_source_duplicates"]:
        copy, original = corpus[e["source"]][e["id"]], corpus[e["of_source"]][e["of_id"]]
        assert e["source"] == "web"
        if e["kind"] == "exact":
            assert copy["text"] == original["text"]
        else:
            assert shingle_jaccard(copy["text"], original["text"]) >= 0.85, e
    # No exact duplicates other than the planted ones.
    texts: dict[str, tuple[str, str]] = {}
    planted = {(e["source"], e["id"]) for e in truth["exact_duplicates"]}
    planted |= {(e["source"], e["id"]) for e in truth["cross_source_duplicates"] if e["kind"] == "exact"}
    for source, records in corpus.items():
        for doc_id, rec in records.items():
            if rec["text"] in texts:
                assert (source, doc_id) in planted or texts[rec["text"]] in planted
            texts[rec["text"]] = (source, doc_id)


def run_filters(text: str) -> list[str]:
    """Names of the filters that drop `text` (empty when it passes all four)."""
    failed = []
    for f in (GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()):
        if f.filter(Document(text=text, id="x")) is not True:
            failed.append(f.name)
    return failed


def test_clean_documents_pass_quality_filters(built):
    _, truth, corpus, _ = built
    planted = planted_ids(truth)
    clean = [r["text"] for s in ("web", "books", "papers") for i, r in corpus[s].items() if (s, i) not in planted]
    assert len(clean) >= 30
    passed = sum(not run_filters(text) for text in clean)
    assert passed >= 0.9 * len(clean), f"{passed}/{len(clean)}"


def test_spam_is_dropped_by_filters(built):
    _, truth, corpus, _ = built
    assert {e["kind"] for e in truth["spam"]} == {"repeated_lines", "keyword_stuffing", "navigation_menu",
                                                  "symbol_soup"}
    dropped = sum(bool(run_filters(corpus[e["source"]][e["id"]]["text"])) for e in truth["spam"])
    assert dropped >= 0.9 * len(truth["spam"])


def test_short_and_long_documents(built):
    _, truth, corpus, _ = built
    for e in truth["short"]:
        assert len(corpus[e["source"]][e["id"]]["text"].split()) < 20
    for e in truth["long"]:
        assert 200_000 <= len(corpus[e["source"]][e["id"]]["text"].encode()) <= 600_000


def test_languages(built):
    _, truth, corpus, _ = built
    foreign = truth["non_english"]
    assert {e["language"] for e in foreign} == {"fr", "de", "es", "it", "pt", "nl"}
    right = sum(py3langid.classify(corpus[e["source"]][e["id"]]["text"])[0] == e["language"] for e in foreign)
    assert right >= 0.95 * len(foreign)

    planted = planted_ids(truth)
    english = [r["text"] for i, r in sorted(corpus["web"].items()) if ("web", i) not in planted]
    sample = random.Random(0).sample(english, min(50, len(english)))
    assert sum(py3langid.classify(text)[0] == "en" for text in sample) >= 0.98 * len(sample)


def test_pii_values_are_in_their_documents(built):
    _, truth, corpus, _ = built
    assert {e["kind"] for e in truth["pii"]} == {"email", "phone", "ip", "credit_card", "secret_key"}
    assert {e["source"] for e in truth["pii"]} == {"web", "papers"}
    for e in truth["pii"]:
        assert e["value"] in corpus[e["source"]][e["id"]]["text"], e
        assert re.fullmatch(PII[e["kind"]].pattern, e["value"]), e  # ground truth: the whole value is the PII
        if e["kind"] == "credit_card":
            digits = [int(c) for c in reversed(re.sub(r"[ -]", "", e["value"]))]
            assert len(digits) in (15, 16)
            assert sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(digits)) % 10 == 0


def test_every_pii_format_in_every_template_is_redacted_and_versions_are_not():
    """The generator's formats (international and national phones, IPv6, Slack and Google keys...)
    in each sentence template the corpus uses, the phone ones ending a sentence too, are redacted
    whole; the IPv4-shaped version numbers planted next to them are left alone."""
    rng = random.Random(0)
    formats: dict[str, set[str]] = {}
    for kind in PII_KINDS:
        for _ in range(200):
            value, fmt = pii_value(kind, rng)
            formats.setdefault(kind, set()).add(fmt)
            for template in PII_TEMPLATES[kind]:
                text, counts = redact_pii(template.format(value))
                assert counts == {kind: 1} and value not in text, (template, value, text)
    assert formats["phone"] == {"us_international", "us_national", "uk_international", "uk_national", "de_international"}
    assert formats["ip"] == {"ipv4", "ipv6"}
    assert formats["secret_key"] == {"aws", "github", "sk", "slack", "google", "pem"}
    assert any(t.endswith("{}.") for t in PII_TEMPLATES["phone"])
    for _ in range(200):
        text, version = plant_version("Some prose here.", rng)
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", version) and redact_pii(text) == (text, {}), text


def test_version_strings_sit_in_the_pii_documents(built):
    _, truth, corpus, _ = built
    versions = truth["version_strings"]
    assert len(versions) == len({(e["source"], e["id"]) for e in truth["pii"]})  # one per PII document
    for e in versions:
        text = corpus[e["source"]][e["id"]]["text"]
        assert e["value"] in text and e["value"] in redact_pii(text)[0], e


def words13(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 13]) for i in range(len(words) - 12)}


def test_eval_sets_and_contaminated_documents(built):
    root, truth, corpus, _ = built
    evals = {name: {r["id"]: r for r in map(json.loads, (root / info["file"]).read_text().splitlines())}
             for name, info in truth["eval_sets"].items()}
    assert {n: len(items) for n, items in evals.items()} == {n: i["items"] for n, i in truth["eval_sets"].items()}
    assert set(evals) == {"qa", "reading"}
    assert all(len(r["text"].split()) >= 26 for items in evals.values() for r in items.values())
    assert {e["eval_set"] for e in truth["contaminated"]} == {"qa", "reading"}
    assert {e["source"] for e in truth["contaminated"]} == {"web", "papers"}
    for e in truth["contaminated"]:
        text = corpus[e["source"]][e["id"]]["text"]
        item = evals[e["eval_set"]][e["eval_id"]]["text"]
        assert item in text and len(text) > 2 * len(item), e
    # Only the planted copies share a 13-gram with an eval item, so decontamination precision is measurable.
    grams = set().union(*(words13(r["text"]) for items in evals.values() for r in items.values()))
    planted = {(e["source"], e["id"]) for e in truth["contaminated"]}
    shared = [(s, i) for s, records in corpus.items() for i, r in records.items() if words13(r["text"]) & grams]
    assert sorted(shared) == sorted(planted)


def test_offensive_pages_and_bad_code_are_what_their_filters_target(built):
    _, truth, corpus, _ = built
    safety = SafetyFilter()
    assert truth["offensive"]
    for e in truth["offensive"]:
        flagged, words, _ = safety.flagged(corpus[e["source"]][e["id"]]["text"])
        assert flagged == e["flagged_words"] and flagged / words > 0.015, e
    planted = planted_ids(truth)
    assert not [i for i, r in corpus["web"].items() if ("web", i) not in planted and safety.flagged(r["text"])[0]]
    reasons = {"long_lines": "code_long_line", "data_like": "code_data_like", "autogenerated": "code_autogenerated"}
    assert {e["kind"] for e in truth["bad_code"]} == set(reasons)
    for e in truth["bad_code"]:
        document = Document(text=corpus["code"][e["id"]]["text"], id=e["id"])
        assert CodeQualityFilter().filter(document) == (False, reasons[e["kind"]]), e


def test_size_is_roughly_honoured(tmp_path):
    truth = build_sample_corpus(tmp_path, size_mb=2, seed=3)
    total = sum(truth["counts"][s]["bytes"] for s in ("web", "books", "code", "papers"))
    assert 0.7 * 2_000_000 <= total <= 1.3 * 2_000_000
    assert 0.35 <= truth["counts"]["web"]["bytes"] / total <= 0.65
