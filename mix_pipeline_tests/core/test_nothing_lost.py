"""Issue 16, "nothing lost": valid input is never quarantined, odd inputs never hang or get read
twice, and published shards are checked against what their stage recorded before anything
downstream trusts them. Each case is a row of the README's bad-input catalogue."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from mix_pipeline.core import catalog
from mix_pipeline.core.documents import list_parts
from mix_pipeline.core.stages import StageEnv, local_runner, run_raw
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.conftest import prose_doc, write_jsonl, write_recipe

LOOSE = "checks: {raw_quarantine_rate: {max_rate: 1.0}}"


def _env(folder: Path, body: str) -> StageEnv:
    return StageEnv(load_recipe(write_recipe(folder, body)), runner=local_runner(1), log=lambda m: None)


def _rows(folder: Path) -> list[dict]:
    tables = [pq.read_table(p) for p in list_parts(folder)]
    return pa.concat_tables(tables).to_pylist() if tables else []


def _fates(root: Path, source: str, snapshot: str = "default") -> list[tuple]:
    with duckdb.connect() as con:
        catalog.record_raw(con, source, snapshot, list_parts(root / "data" / "raw" / source / snapshot),
                           list_parts(root / "data" / "quarantine" / source / snapshot))
        return con.execute("SELECT id, reason, detail FROM document_fates ORDER BY id").fetchall()


# ---- valid documents are never quarantined ----------------------------------------------------
def test_valid_records_that_used_to_be_quarantined_are_kept_with_exact_ids(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "a_bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "bom1", "text": "first"}).encode()
                                      + b"\n" + json.dumps({"id": "bom2", "text": "second"}).encode() + b"\n")
    (web / "b_score.jsonl").write_text('{"id": "s1", "text": "huge score", "score": 1e400, "n": 12345678901234567890123}\n')
    (web / "c_ids.jsonl").write_text('{"id": 123456789012345678901234567890, "text": "one"}\n'
                                     '{"id": 123456789012345678901234567891, "text": "two"}\n')
    # Line 2 has no id, so it gets `d_gen.jsonl:2`, which line 1 names explicitly.
    (web / "d_gen.jsonl").write_text('{"id": "d_gen.jsonl:2", "text": "explicit"}\n{"text": "generated"}\n')
    write_jsonl(web / "e_fake.jsonl.gz", [{"id": f"f{i}", "text": f"plain {i}"} for i in range(20)])  # not gzipped
    (web / "f_crlf.jsonl").write_bytes(b'{"id": "crlf1", "text": "windows"}\r\n{"id": "crlf2", "text": "lines"}\r\n')
    result = run_raw(_env(tmp_path, f'name: t\nsources:\n  web: {{path: "web/*", {LOOSE}}}\n'), "web")
    assert result.stats["quarantined"] == 0, _rows(tmp_path / "data" / "quarantine" / "web" / "default")
    docs = {d["id"]: d for d in _rows(tmp_path / "data" / "raw" / "web" / "default")}
    assert docs["bom1"]["text"] == "first" and "bom2" in docs
    assert json.loads(docs["s1"]["metadata"])["score"] == "1e400"  # kept as written: no double holds it
    assert json.loads(docs["s1"]["metadata"])["n"] == 12345678901234567890123
    assert {"123456789012345678901234567890", "123456789012345678901234567891"} <= set(docs)
    assert docs["d_gen.jsonl:2"]["text"] == "explicit" and docs["d_gen.jsonl:2#1"]["text"] == "generated"
    assert {f"f{i}" for i in range(20)} <= set(docs) and {"crlf1", "crlf2"} <= set(docs)
    assert len(docs) == result.stats["records"] == 2 + 1 + 2 + 2 + 20 + 2
    fates = _fates(tmp_path, "web")
    assert fates == []  # nothing quarantined, so no id has two fates


def test_quarantined_records_keep_the_parsers_message_in_the_catalog(tmp_path):
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "1", "text": "fine"}, '{"id": "2", "text": ', {"id": "3", "text": 7},
                                               '{"id": "4", "text": NaN}', '{"id": "5", "text": "\\ud800"}'])
    run_raw(_env(tmp_path, f'name: t\nsources:\n  web: {{path: "web/*.jsonl", {LOOSE}}}\n'), "web")
    fates = {i: (r, d) for i, r, d in _fates(tmp_path, "web")}
    assert fates["a.jsonl:2"][0] == "malformed_json" and "unexpected end of data" in fates["a.jsonl:2"][1]
    assert fates["a.jsonl:3"] == ("text_not_string", "'text' is int")
    assert fates["a.jsonl:4"][0] == "malformed_json" and fates["a.jsonl:5"][0] == "malformed_json"
