"""Bad input is quarantined with a reason and counted; good records around it survive."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mix_pipeline.core.io.documents import list_parts
from mix_pipeline.core.stages import StageEnv, local_runner, run_raw
from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline_tests.conftest import write_jsonl, write_recipe


def _raw(tmp_path, body):
    recipe = load_recipe(write_recipe(tmp_path, body))
    env = StageEnv(recipe, runner=local_runner(1), log=lambda m: None)
    return env


def _read(folder):
    tables = [pq.read_table(p) for p in list_parts(folder)]
    return pa.concat_tables(tables).to_pylist() if tables else []


def test_jsonl_bad_lines_are_quarantined_with_reasons(tmp_path):
    good = {"id": "a", "text": "good text", "url": "https://x"}
    lines = [
        json.dumps(good).encode(),
        b'{"id": "b", "text": "unterminated',
        b'{"id": "c", "text": "bad \xff\xfe bytes"}',
        json.dumps({"id": "d"}).encode(),
        json.dumps({"id": "e", "text": 42}).encode(),
        json.dumps({"id": "f", "text": "   "}).encode(),
        json.dumps([1, 2]).encode(),
        json.dumps({"text": "no id here"}).encode(),
    ]
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "web" / "empty.jsonl").write_bytes(b"")
    # A gzip stream cut in half: the records before the cut stand, the rest is one quarantine record.
    full = gzip.compress(b"".join(json.dumps({"id": f"z{i}", "text": f"doc {i} " * 50}).encode() + b"\n" for i in range(200)), mtime=0)
    (tmp_path / "web" / "cut.jsonl.gz").write_bytes(full[: len(full) // 2])
    # Most of this source is bad on purpose: loosen the quarantine gate so the stage publishes.
    env = _raw(tmp_path, 'name: t\nsources:\n  web: {path: "web/*", checks: {raw_quarantine_rate: {max_rate: 1.0}}}\n')
    stats = run_raw(env, "web").stats

    docs = _read(tmp_path / "data" / "raw" / "web" / "default")
    quarantine = _read(tmp_path / "data" / "quarantine" / "web" / "default")
    reasons = {(q["id"], json.loads(q["metadata"])["reason"]) for q in quarantine}
    assert {"a.jsonl:2", "a.jsonl:3", "a.jsonl:4", "a.jsonl:5", "a.jsonl:6", "a.jsonl:7"} <= {i for i, _ in reasons}
    assert ("a.jsonl:2", "malformed_json") in reasons
    assert ("a.jsonl:3", "invalid_utf8") in reasons
    assert ("a.jsonl:4", "missing_text") in reasons
    assert ("a.jsonl:5", "text_not_string") in reasons
    assert ("a.jsonl:6", "empty_text") in reasons
    assert ("a.jsonl:7", "not_an_object") in reasons
    assert ("empty.jsonl:0", "empty_file") in reasons
    assert any(i.startswith("cut.jsonl.gz:") and r == "truncated_file" for i, r in reasons)
    ids = {d["id"] for d in docs}
    assert {"a", "a.jsonl:8"} <= ids  # a record without an id gets file:line
    assert any(i.startswith("z") for i in ids)
    first = next(d for d in docs if d["id"] == "a")
    assert first["source"] == "web" and first["domain"] == "web"
    assert json.loads(first["metadata"]) == {"url": "https://x", "file": "a.jsonl", "line": 1}
    assert stats["records"] == len(docs) + len(quarantine) == stats["documents"] + stats["quarantined"]


def test_text_directory_and_parquet_inputs(tmp_path):
    code = tmp_path / "code" / "pkg"
    code.mkdir(parents=True)
    (code / "mod.py").write_text("def f():\n    return 1\n")
    (code / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (code / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    pq.write_table(pa.table({"id": ["p1", "p2"], "body": ["paper one", None]}), tmp_path / "p.parquet")
    pq.write_table(pa.table({"id": ["q1"], "other": ["x"]}), tmp_path / "q.parquet")
    env = _raw(
        tmp_path,
        'name: t\nsources:\n  code: {path: "code", format: text, checks: {raw_quarantine_rate: {severity: warn}}}\n'
        '  papers: {path: "*.parquet", format: parquet, text_field: body, checks: {raw_quarantine_rate: {severity: warn}}}\n',
    )
    run_raw(env, "code")
    run_raw(env, "papers")
    code_docs = _read(tmp_path / "data" / "raw" / "code" / "default")
    assert [d["id"] for d in code_docs] == ["pkg/mod.py"]
    code_q = {json.loads(q["metadata"])["reason"] for q in _read(tmp_path / "data" / "quarantine" / "code" / "default")}
    assert code_q == {"binary_file", "invalid_utf8"}
    papers = _read(tmp_path / "data" / "raw" / "papers" / "default")
    assert [d["id"] for d in papers] == ["p1"]
    paper_q = {(q["id"], json.loads(q["metadata"])["reason"]) for q in _read(tmp_path / "data" / "quarantine" / "papers" / "default")}
    assert paper_q == {("p.parquet:2", "missing_text"), ("q.parquet:0", "missing_text_column")}


def test_rerun_replaces_the_partition_whole(tmp_path):
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": str(i), "text": f"t{i}"} for i in range(5)])
    env = _raw(tmp_path, 'name: t\nsources:\n  web: {path: "web/*.jsonl"}\n')
    run_raw(env, "web")
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "only", "text": "t"}])
    run_raw(env, "web")
    raw_dir = tmp_path / "data" / "raw" / "web"
    assert [d["id"] for d in _read(raw_dir / "default")] == ["only"]
    assert sorted(p.name for p in raw_dir.iterdir()) == ["default"]  # no staging leftovers


def test_source_that_matches_nothing_at_run_time_names_source_and_path(tmp_path):
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "1", "text": "t"}])
    env = _raw(tmp_path, 'name: t\nsources:\n  web: {path: "web/*.jsonl"}\n')
    (tmp_path / "web" / "a.jsonl").unlink()
    with pytest.raises(RecipeError, match=r"source 'web': path 'web/\*.jsonl' matches no file"):
        run_raw(env, "web")
