from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mix_pipeline.core import quality
from mix_pipeline.core.documents import DOCUMENT_SCHEMA

README = Path(__file__).resolve().parents[2] / "README.md"


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


def test_readme_documents_every_check():
    text = README.read_text()
    missing = [name for name in quality.CHECKS if f"`{name}`" not in text]
    assert not missing
