from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.io.documents import DOCUMENT_SCHEMA

GATES_DOC = Path(__file__).resolve().parents[2] / "docs" / "quality-gates.md"


def _shard(path: Path, rows: list[dict]) -> str:
    full = [{"source": "web", "domain": "web", "metadata": "{}", **r} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=DOCUMENT_SCHEMA), path)
    return str(path)


def _by_name(outcomes):
    return {o.name: o for o in outcomes}


def test_raw_checks_catch_duplicate_ids_and_mis_decoded_text(tmp_path):
    part = _shard(tmp_path / "p.parquet", [
        {"id": "a", "text": "fine"}, {"id": "a", "text": "again"}, {"id": "b", "text": "caf\ufffd au lait"},
    ])
    out = _by_name(quality.raw_checks([part], [], {}))
    assert out["raw_schema"].passed and out["raw_text_not_empty"].passed
    assert not out["raw_unique_ids"].passed and out["raw_unique_ids"].examples[0]["id"] == "a"
    assert not out["raw_valid_utf8"].passed and out["raw_valid_utf8"].examples[0]["id"] == "b"
    assert out["raw_quarantine_rate"].passed
    loosened = _by_name(quality.raw_checks([part], [], {"raw_unique_ids": {"max_duplicate_ids": 1},
                                                         "raw_valid_utf8": {"severity": "warn"}}))
    assert loosened["raw_unique_ids"].passed
    assert not loosened["raw_valid_utf8"].passed and not loosened["raw_valid_utf8"].blocks


def test_raw_length_bounds_measure_a_sample_of_lengths_and_show_the_outliers(tmp_path):
    part = _shard(tmp_path / "p.parquet", [{"id": f"d{i}", "text": "word " * 20} for i in range(50)]
                  + [{"id": "huge", "text": "x" * 5000}, {"id": "long", "text": "y" * 3000}])
    out = _by_name(quality.raw_checks([part], [], {"raw_length_bounds": {"max_chars": 2000, "mostly": 0.99}}))
    bounds = out["raw_length_bounds"]
    assert not bounds.passed and bounds.observed == round(50 / 52, 4)
    assert [(e["id"], e["snippet"][:10]) for e in bounds.examples] == [("huge", "5000 chars"), ("long", "3000 chars")]
    assert _by_name(quality.raw_checks([part], [], {"raw_length_bounds": {"max_chars": 5000}}))["raw_length_bounds"].passed


def test_raw_checks_on_no_documents_fail_text_not_empty(tmp_path):
    out = _by_name(quality.raw_checks([], [], {}))
    assert not out["raw_text_not_empty"].passed
    assert out["raw_schema"].passed


def test_filter_drop_rates_are_per_filter_over_what_reached_it(tmp_path):
    kept = _shard(tmp_path / "k.parquet", [{"id": str(i), "text": "x"} for i in range(30)])
    # 100 in: first filter drops 50 (50%), second drops 20 of the remaining 50 (40%).
    drops = [("gopher_quality", 50), ("c4", 20)]
    out = _by_name(quality.filtered_checks(100, [kept], drops, {}, None, {"filter_drop_rate": {"max_rate": 0.45}}))
    rate = out["filter_drop_rate"]
    assert not rate.passed and rate.observed == {"gopher_quality": 0.5, "c4": 0.4}
    assert "gopher_quality dropped 50.0%" in rate.message and "c4" not in rate.message
    per = {"filter_drop_rate": {"max_rate": 0.45, "per_filter": {"gopher_quality": {"max_rate": 0.6}}}}
    assert _by_name(quality.filtered_checks(100, [kept], drops, {}, None, per))["filter_drop_rate"].passed
    assert out["kept_volume"].passed and out["language_share"].passed


def test_quality_gates_doc_documents_every_check():
    text = GATES_DOC.read_text()
    missing = [name for name in quality.CHECKS if f"`{name}`" not in text]
    assert not missing


# ---- defaults calibrated on real text ------------------------------------------------------
def test_a_few_documents_quoting_the_replacement_character_do_not_stop_a_source(tmp_path):
    """Valid UTF-8 text may contain U+FFFD (a page about encodings); a mis-decoded source has it
    in a large share of its documents."""
    rows = [{"id": str(i), "text": f"plain document {i}"} for i in range(98)]
    rows += [{"id": "enc", "text": "U+FFFD (\ufffd) replaces undecodable bytes."}, {"id": "log", "text": "got b'\ufffd\ufffd'"}]
    out = _by_name(quality.raw_checks([_shard(tmp_path / "a.parquet", rows)], [], {}))
    assert out["raw_valid_utf8"].passed and out["raw_valid_utf8"].observed == 0.02
    mis_decoded = [{**r, "text": r["text"] + " caf\ufffd"} if i % 4 == 0 else r for i, r in enumerate(rows)]
    bad = _by_name(quality.raw_checks([_shard(tmp_path / "b.parquet", mis_decoded)], [], {}))["raw_valid_utf8"]
    assert not bad.passed and bad.observed > 0.25 and bad.examples


def _quarantine(path: Path, reasons: list[str]) -> str:
    import json

    rows = [{"id": f"f:{i}", "text": "", "metadata": json.dumps({"reason": r})} for i, r in enumerate(reasons)]
    return _shard(path, rows)


def test_empty_files_do_not_count_towards_the_quarantine_rate(tmp_path):
    docs = _shard(tmp_path / "d.parquet", [{"id": str(i), "text": "x"} for i in range(80)])
    # 20 empty __init__.py files of a code tree: nothing lost, the source passes.
    empties = _quarantine(tmp_path / "q.parquet", ["empty_file"] * 19 + ["empty_text"])
    rate = _by_name(quality.raw_checks([docs], [empties], {}))["raw_quarantine_rate"]
    assert rate.passed and rate.observed == 0.0
    # A wrong text field quarantines every record: refused.
    missing = _quarantine(tmp_path / "m.parquet", ["missing_text"] * 80)
    rate = _by_name(quality.raw_checks([docs], [missing], {}))["raw_quarantine_rate"]
    assert not rate.passed and rate.observed == 0.5 and rate.examples[0]["snippet"].startswith("missing_text")


def test_default_bands_pass_a_real_crawls_drop_rates_and_stop_a_typo(tmp_path):
    kept = _shard(tmp_path / "k.parquet", [{"id": str(i), "text": "x"} for i in range(12)])
    # A multilingual crawl: the language filter drops 55%, Gopher quality 70% of the rest.
    real = _by_name(quality.filtered_checks(100, [kept], [("language", 55), ("gopher_quality", 33)], {}, None, {}))
    assert real["filter_drop_rate"].passed and real["kept_volume"].passed
    # min_doc_words: 100000 drops everything that reaches the filter.
    empty = [_shard(tmp_path / "e.parquet", [])]
    typo = _by_name(quality.filtered_checks(100, empty, [("language", 55), ("gopher_quality", 45)], {}, None, {}))
    assert not typo["filter_drop_rate"].passed and not typo["kept_volume"].passed


def _clusters(path: Path, groups: dict[str, list[tuple[str, int]]]) -> str:
    """groups: source → [(survivor id, members)], every member of one source."""
    from mix_pipeline.core.dedup.verdicts import CLUSTER_SCHEMA

    rows = []
    for source, clusters in groups.items():
        for survivor, n in clusters:
            rows.append({"source": source, "snapshot": "default", "id": survivor, "fate": "kept", "cluster_size": n})
            rows += [{"source": source, "snapshot": "default", "id": f"{survivor}-{k}", "fate": "duplicate",
                      "duplicate_of_source": source, "duplicate_of_snapshot": "default", "duplicate_of": survivor,
                      "match": "near", "cluster_size": n} for k in range(1, n)]
    pq.write_table(pa.Table.from_pylist(rows, schema=CLUSTER_SCHEMA), path)
    return str(path)


def test_a_big_boilerplate_cluster_passes_a_cluster_swallowing_a_source_does_not(tmp_path):
    # 150 copies of the MIT licence among 1,000 documents: real, and not a runaway.
    licences = _clusters(tmp_path / "a.parquet", {"docs": [("mit", 150)] + [(f"d{i}", 1) for i in range(850)]})
    ok = quality.dedup_index_checks([licences], {})[0]
    assert ok.passed and ok.observed == 150
    runaway = _clusters(tmp_path / "b.parquet", {"web": [("page", 700)] + [(f"w{i}", 1) for i in range(300)]})
    bad = quality.dedup_index_checks([runaway], {})[0]
    assert not bad.passed and "70% of web's documents" in bad.message and bad.examples
    # Small clusters never fail, whatever share of a tiny source they are.
    tiny = _clusters(tmp_path / "c.parquet", {"web": [("page", 3), ("other", 1)]})
    assert quality.dedup_index_checks([tiny], {})[0].passed


def test_bands_read_as_a_person_writes_them():
    assert quality.bounds(None, 0.05) == "≤ 0.05"
    assert quality.bounds(0.5, None) == "≥ 0.5"
    assert quality.bounds(0.1, 0.9) == "0.1 – 0.9"
    assert quality.bounds(0, 0) == "= 0"
    assert quality.bounds(None, None) == "any value"
    rate = quality.band("raw_quarantine_rate", "error", 0.5, None, 0.05, "quarantined share of 30 records")
    assert rate.expected == "≤ 0.05" and rate.message == "quarantined share of 30 records = 0.5, expected ≤ 0.05"
    share = quality.band("language_share", "error", 0.75, 0.99, None, "share of kept documents")
    assert share.expected == "≥ 0.99" and not share.passed


def test_drop_rate_bands_and_conservation_read_as_text(tmp_path):
    out = _by_name(quality.filtered_checks(10, [], [("language", 10)], {}, None, {}))
    assert out["filter_drop_rate"].expected == "language 0 – 0.95"
    assert out["filter_drop_rate"].message == "language dropped 100.0% (expected 0 – 0.95)"
    rows = [{"source": "books", "records": 4, "kept": 4, "dropped": 0, "duplicate": 0, "quarantined": 0, "balanced": True},
            {"source": "web", "records": 5, "kept": 3, "dropped": 1, "duplicate": 0, "quarantined": 0, "balanced": False}]
    ledger = [{"source": "books", "target_weight": 1.0, "achieved_weight": 1.0, "units": 4, "available_units": 4, "epochs": 1.0}]
    checks = _by_name(quality.mixture_checks(ledger, {"books": 1.0}, 0.05, str(tmp_path), {}, {}, rows, {}))
    assert checks["conservation"].observed == {"books": "balanced", "web": "not balanced"}
    assert not checks["conservation"].passed and "web: 5 records but 3+1+0+0" in checks["conservation"].message
