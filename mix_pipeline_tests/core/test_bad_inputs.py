"""The bad-input catalogue (README, "Bad input catalogue"): each kind of bad input is quarantined
with a reason and counted, or refused with one line naming it; none crashes the stage, and a
refused rerun leaves the last good output byte-identical."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.io.documents import file_sha256, list_parts
from mix_pipeline.core.gates.checks import GateFailed
from mix_pipeline.core.io.readers import SourceReader
from mix_pipeline.core.stages import StageEnv, local_runner, run_raw
from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline_tests.conftest import write_jsonl, write_recipe

LOOSE = "checks: {raw_quarantine_rate: {max_rate: 1.0}}"


def _env(folder: Path, body: str, workers: int = 1) -> StageEnv:
    return StageEnv(load_recipe(write_recipe(folder, body)), runner=local_runner(workers), log=lambda m: None)


def _rows(folder: Path) -> list[dict]:
    tables = [pq.read_table(p) for p in list_parts(folder)]
    return pa.concat_tables(tables).to_pylist() if tables else []


def _quarantine(root: Path, source: str) -> list[tuple[str, str, str]]:
    """(id, reason, detail) of a source's quarantine, in file order."""
    out = []
    for row in _rows(root / "data" / "quarantine" / source / "default"):
        meta = json.loads(row["metadata"])
        out.append((row["id"], meta["reason"], meta["detail"]))
    return out


def _hashes(folder: Path) -> dict[str, str]:
    """Every published file under a data root (not datatrove's task logs under _work/, nor the
    catalog, a database whose file bytes are DuckDB's business)."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "_work" and not p.name.startswith("catalog.duckdb")}


def _reader(folder: Path, fmt: str = "jsonl", **kw) -> SourceReader:
    return SourceReader(files=[], root=str(folder), source="s", domain="s", fmt=fmt, text_field="text",
                        id_field="id", quarantine_writer=None, **kw)


# ---- duplicate ids within a source -------------------------------------------------------------
def test_duplicate_ids_keep_the_first_in_file_order_and_quarantine_the_rest(tmp_path):
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "1", "text": "one"}, {"id": "2", "text": "two"},
                                               {"id": "1", "text": "one again"}])
    write_jsonl(tmp_path / "web" / "b.jsonl", [{"id": "2", "text": "two again"}, {"id": "3", "text": "three"}])
    write_jsonl(tmp_path / "web" / "c.jsonl", [{"id": "1", "text": "one, third copy"}, {"id": "4", "text": "four"}])
    body = f'name: t\nexecutor: {{tasks: 2}}\nsources:\n  web: {{path: "web/*.jsonl", {LOOSE}}}\n'
    result = run_raw(_env(tmp_path, body), "web")
    docs = _rows(tmp_path / "data" / "raw" / "web" / "default")
    assert sorted((d["id"], d["text"]) for d in docs) == [("1", "one"), ("2", "two"), ("3", "three"), ("4", "four")]
    assert _quarantine(tmp_path, "web") == [
        ("a.jsonl:3", "duplicate_id", "id '1' first seen at a.jsonl:1"),
        ("b.jsonl:1", "duplicate_id", "id '2' first seen at a.jsonl:2"),
        ("c.jsonl:1", "duplicate_id", "id '1' first seen at a.jsonl:1"),
    ]
    assert result.stats["duplicate_ids"] == 3 and result.stats["records"] == 7 == len(docs) + 3
    assert next(c for c in result.checks if c.name == "raw_unique_ids").passed
    # The catalog counts them as quarantined, so conservation balances.
    with duckdb.connect() as con:
        counts = catalog.record_raw(con, "web", "default", list_parts(tmp_path / "data" / "raw" / "web" / "default"),
                                    list_parts(tmp_path / "data" / "quarantine" / "web" / "default"))
    assert counts == {"records": 7, "documents": 4, "quarantined": 3}

    # Same bytes with two worker processes (and on a rerun).
    before = _hashes(tmp_path / "data")
    run_raw(_env(tmp_path, body, workers=2), "web")
    assert _hashes(tmp_path / "data") == before


# ---- a 100 MB single document ------------------------------------------------------------------
def test_a_100_mb_document_is_quarantined_without_reading_it_into_memory(tmp_path):
    size = 100 * 2**20
    web = tmp_path / "web"
    web.mkdir()
    with open(web / "big.jsonl", "wb") as f:
        f.write(json.dumps({"id": "before", "text": "small one"}).encode() + b"\n")
        f.write(b'{"id": "huge", "text": "' + b"x" * size + b'"}\n')
        f.write(json.dumps({"id": "after", "text": "small two"}).encode() + b"\n")
    tracemalloc.start()
    try:
        out = list(_reader(web).read_file(str(web / "big.jsonl")))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, f"reading a 100 MB record peaked at {peak / 2**20:.0f} MiB"
    assert [(ok, d.id) for ok, d in out] == [(True, "before"), (False, "big.jsonl:2"), (True, "after")]
    assert out[1][1].metadata["reason"] == "document_too_large"
    assert out[1][1].metadata["detail"] == f"{size + 26:,} bytes > max_document_bytes 10,000,000"

    # Through the stage with a per-source limit: a text file and a Parquet value over it as well.
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "big.py").write_bytes(b"# " + b"y" * 5000)
    (tmp_path / "code" / "ok.py").write_text("print('hello')\n")
    pq.write_table(pa.table({"id": ["p1", "p2", "p3"], "text": ["short", "z" * 5000, "also short"]}),
                   tmp_path / "p.parquet")
    body = (f'name: t\nsources:\n  web: {{path: "web/*.jsonl", {LOOSE}}}\n'
            f'  code: {{path: code, format: text, max_document_bytes: 4096, {LOOSE}}}\n'
            f'  papers: {{path: "p.parquet", format: parquet, max_document_bytes: 4096, {LOOSE}}}\n')
    env = _env(tmp_path, body)
    for source in ("web", "code", "papers"):
        run_raw(env, source)
    assert [d["id"] for d in _rows(tmp_path / "data" / "raw" / "web" / "default")] == ["before", "after"]
    assert _quarantine(tmp_path, "web")[0][:2] == ("big.jsonl:2", "document_too_large")
    assert [d["id"] for d in _rows(tmp_path / "data" / "raw" / "code" / "default")] == ["ok.py"]
    assert _quarantine(tmp_path, "code") == [("big.py:0", "document_too_large", "5,002 bytes > max_document_bytes 4,096")]
    assert [d["id"] for d in _rows(tmp_path / "data" / "raw" / "papers" / "default")] == ["p1", "p3"]
    assert _quarantine(tmp_path, "papers") == [("p.parquet:2", "document_too_large", "5,000 bytes > max_document_bytes 4,096")]


# ---- binary files --------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40 + b"\n" * 30


def test_binary_files_are_one_quarantine_record_each(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("def main():\n    return 0\n")
    (code / "logo.png").write_bytes(PNG)
    (code / "archive.gz").write_bytes(gzip.compress(b"some text", mtime=0))
    (code / "late_nul.txt").write_bytes(b"a" * 9000 + b"\x00")
    web = tmp_path / "web"
    write_jsonl(web / "a.jsonl", [{"id": "a", "text": "fine"}])
    (web / "picture.jsonl").write_bytes(PNG)  # matched by the glob, many "lines" of noise
    (web / "packed.jsonl.gz").write_bytes(gzip.compress(PNG, mtime=0))
    body = (f'name: t\nsources:\n  code: {{path: code, format: text, {LOOSE}}}\n'
            f'  web: {{path: "web/*", {LOOSE}}}\n')
    env = _env(tmp_path, body)
    code_stats, web_stats = run_raw(env, "code").stats, run_raw(env, "web").stats
    assert [d["id"] for d in _rows(tmp_path / "data" / "raw" / "code" / "default")] == ["main.py"]
    assert sorted(q[:2] for q in _quarantine(tmp_path, "code")) == [
        ("archive.gz:0", "binary_file"), ("late_nul.txt:0", "nul_bytes"), ("logo.png:0", "binary_file")]
    assert [d["id"] for d in _rows(tmp_path / "data" / "raw" / "web" / "default")] == ["a"]
    assert sorted(q[:2] for q in _quarantine(tmp_path, "web")) == [
        ("packed.jsonl.gz:0", "binary_file"), ("picture.jsonl:0", "binary_file")]
    assert (code_stats["records"], web_stats["records"]) == (4, 3)


# ---- Parquet with a different schema -----------------------------------------------------------------
def test_parquet_files_with_other_schemas(tmp_path):
    folder = tmp_path / "papers"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a1"], "text": ["plain"]}), folder / "a.parquet")
    pq.write_table(pa.table({"text": ["no id column", "second"]}), folder / "b.parquet")
    pq.write_table(pa.table({"id": [1], "text": pa.array(["large"], pa.large_string()), "year": [2024],
                             "tags": [["x", "y"]], "blob": [b"\x00\x01"]}), folder / "c.parquet")
    pq.write_table(pa.table({"id": ["d1", "d2"], "text": [1, 2]}), folder / "d.parquet")
    pq.write_table(pa.table({"id": ["e1"], "text": pa.array(["dict"]).dictionary_encode()}), folder / "e.parquet")
    pq.write_table(pa.table({"id": ["f1"], "text": [b"bytes"]}), folder / "f.parquet")
    pq.write_table(pa.table({"id": ["g1"], "body": ["wrong name"]}), folder / "g.parquet")
    (folder / "h.parquet").write_bytes(b"PAR1 but not really")
    pq.write_table(pa.table({"id": [{"k": 1}], "text": ["id is a struct"]}), folder / "i.parquet")
    stats = run_raw(_env(tmp_path, f'name: t\nsources:\n  papers: {{path: "papers/*", format: parquet, {LOOSE}}}\n'),
                    "papers").stats
    docs = {d["id"]: d for d in _rows(tmp_path / "data" / "raw" / "papers" / "default")}
    assert sorted(docs) == ["1", "a1", "b.parquet:1", "b.parquet:2", "e1"]
    assert json.loads(docs["1"]["metadata"]) == {"blob": "b'\\x00\\x01'", "file": "c.parquet", "line": 1,
                                                 "tags": ["x", "y"], "year": 2024}
    quarantined = sorted(_quarantine(tmp_path, "papers"))
    assert quarantined == [
        ("d.parquet:0", "text_column_not_string", "column 'text' is int64, not string (2 rows)"),
        ("f.parquet:0", "text_column_not_string", "column 'text' is binary, not string (1 rows)"),
        ("g.parquet:0", "missing_text_column", "no column 'text' (columns: ['id', 'body'])"),
        ("h.parquet:0", "unreadable_file", quarantined[3][2]),
        ("i.parquet:1", "bad_id", "'id' is dict, not a string or number"),
    ]
    assert quarantined[3][2].startswith("ArrowInvalid: ")
    assert stats["records"] == 10


# ---- unreadable files --------------------------------------------------------------------------------
NOBODY = 65534


def _read_as_unprivileged(recipe_path: str, data_root: str, source: str = "web") -> dict:
    """In a fresh process: warm up every lazy import as root, then drop to `nobody` (when root;
    chmod does not stop root) and validate the recipe, then run the raw stage with paths unchecked."""
    warm = os.path.join(data_root, "warmup")
    write_jsonl(Path(warm) / "in" / "a.jsonl", [{"id": "w", "text": "warm"}])
    run_raw(_env(Path(warm), 'name: w\nsources:\n  w: {path: "in/*.jsonl"}\n'), "w")
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    out = {"uid": os.getuid()}
    try:
        load_recipe(recipe_path)
    except RecipeError as exc:
        out["refused"] = str(exc)
    env = StageEnv(load_recipe(recipe_path, check_paths=False), runner=local_runner(1), log=lambda m: None)
    try:
        out["stats"] = run_raw(env, source).stats
    except RecipeError as exc:
        out["run_refused"] = str(exc)
    return out


def test_an_unreadable_file_is_refused_at_validation_and_quarantined_at_run_time():
    # Outside pytest's private (0700) tmp folder, so an unprivileged process can reach it.
    folder = Path(tempfile.mkdtemp(prefix="mix_unreadable_"))
    try:
        write_jsonl(folder / "web" / "a.jsonl", [{"id": "a", "text": "readable"}])
        write_jsonl(folder / "web" / "secret.jsonl", [{"id": "s", "text": "private"}])
        recipe = write_recipe(folder, f'name: t\nsources:\n  web: {{path: "web/*.jsonl", {LOOSE}}}\n')
        (folder / "data").mkdir()
        for path in [folder, folder / "web", folder / "data"]:
            path.chmod(0o777)
        (folder / "web" / "a.jsonl").chmod(0o644)
        (folder / "web" / "secret.jsonl").chmod(0o000)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            out = pool.apply(_read_as_unprivileged, (str(recipe), str(folder / "data")))
        assert out["uid"] != 0
        assert out["refused"] == (f"{recipe}: sources.web.path: 1 file(s) are not readable, "
                                  f"e.g. {folder / 'web' / 'secret.jsonl'}")
        assert out["stats"]["documents"] == 1 and out["stats"]["quarantined"] == 1
        assert _quarantine(folder, "web") == [("secret.jsonl:0", "unreadable_file", "PermissionError: Permission denied")]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_an_unreadable_folder_in_a_text_source_is_refused_naming_it():
    folder = Path(tempfile.mkdtemp(prefix="mix_unreadable_"))
    try:
        (folder / "code" / "open").mkdir(parents=True)
        (folder / "code" / "locked").mkdir()
        (folder / "code" / "open" / "a.py").write_text("print('a')\n")
        (folder / "code" / "locked" / "b.py").write_text("print('b')\n")
        recipe = write_recipe(folder, "name: t\nsources:\n  code: {path: code, format: text}\n")
        (folder / "data").mkdir()
        for path in [folder, folder / "code", folder / "code" / "open", folder / "data"]:
            path.chmod(0o777)
        (folder / "code" / "open" / "a.py").chmod(0o644)
        (folder / "code" / "locked").chmod(0o000)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            out = pool.apply(_read_as_unprivileged, (str(recipe), str(folder / "data"), "code"))
        assert out["uid"] != 0
        message = f"source 'code': cannot list folder {folder / 'code' / 'locked'}: Permission denied"
        assert message in out["refused"] and out["run_refused"] == message
        assert not (folder / "data" / "raw").exists()
    finally:
        (folder / "code" / "locked").chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


# ---- zero-document sources ---------------------------------------------------------------------------
def test_a_source_with_no_documents_is_refused_and_the_good_output_kept(tmp_path):
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "1", "text": "good"}])
    body = f'name: t\nsources:\n  web: {{path: "web/*.jsonl", {LOOSE}}}\n'
    env = _env(tmp_path, body)
    run_raw(env, "web")
    good = _hashes(tmp_path / "data")
    cases = [
        ({"a.jsonl": b"", "b.jsonl": b"\n  \n"}, "(empty_file: 2)"),
        ({"a.jsonl": b"not json\n", "b.jsonl": b'{"id": 1}\n'}, "(malformed_json: 1, missing_text: 1)"),
    ]
    for files, reasons in cases:
        for name, data in files.items():
            (tmp_path / "web" / name).write_bytes(data)
        with pytest.raises(GateFailed) as err:
            run_raw(env, "web")
        message = str(err.value)
        assert message.startswith("raw[web:default]: quality gate failed, output not published")
        assert f"raw_text_not_empty: no documents: all 2 record(s) were quarantined {reasons}" in message
        assert "\n" not in message
        assert _hashes(tmp_path / "data") == good


# ---- truncated zstd ------------------------------------------------------------------------------------
def test_truncated_zstd_is_reported(tmp_path):
    import zstandard

    data = b"".join(json.dumps({"id": str(i), "text": f"document {i} " * 40}).encode() + b"\n" for i in range(400))
    zc = zstandard.ZstdCompressor()
    whole = zc.compress(data[: len(data) // 2]) + zc.compress(data[len(data) // 2:])  # two frames
    (tmp_path / "whole.jsonl.zst").write_bytes(whole)
    (tmp_path / "cut.jsonl.zst").write_bytes(whole[: len(whole) * 3 // 4])
    reader = _reader(tmp_path)
    assert [ok for ok, _ in reader.read_file(str(tmp_path / "whole.jsonl.zst"))] == [True] * 400
    out = list(reader.read_file(str(tmp_path / "cut.jsonl.zst")))
    assert all(ok for ok, _ in out[:-1]) and 200 < len(out) < 400
    assert not out[-1][0] and out[-1][1].metadata["reason"] == "truncated_file"
    assert out[-1][1].metadata["detail"] == "EOFError: zstd stream ended inside a frame"
