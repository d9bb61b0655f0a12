"""Nothing lost: valid input is never quarantined, odd inputs never hang or get read
twice, and published shards are checked against what their stage recorded before anything
downstream trusts them. Each case is a row of the README's bad-input catalogue."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.io.documents import list_parts
from mix_pipeline.core.stages import StageEnv, local_runner, run_raw
from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline.recipe.inputs import snapshots, source_files
from mix_pipeline_tests.conftest import write_jsonl, write_recipe
from mix_pipeline_tests.helpers import TWO_SOURCES_RECIPE, write_two_sources

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
                                      + b"\n" + json.dumps({"id": "bom2", "text": "second"}).encode() + b"\n"
                                      # `cat` of two files that each start with one
                                      + b"\xef\xbb\xbf" + json.dumps({"id": "bom3", "text": "third"}).encode() + b"\n")
    (web / "b_score.jsonl").write_text('{"id": "s1", "text": "huge score", "score": 1e400, "n": 12345678901234567890123, '
                                       '"source": "dolma", "line": 7, "input_line": 8}\n')
    (web / "c_ids.jsonl").write_text('{"id": 123456789012345678901234567890, "text": "one"}\n'
                                     '{"id": 123456789012345678901234567891, "text": "two"}\n'
                                     '{"id": 0.100000000000000000001, "text": "three"}\n'
                                     '{"id": 0.100000000000000000002, "text": "four"}\n')
    # Line 2 has no id, so it gets `d_gen.jsonl:2`, which line 1 names explicitly.
    (web / "d_gen.jsonl").write_text('{"id": "d_gen.jsonl:2", "text": "explicit"}\n{"text": "generated"}\n')
    write_jsonl(web / "e_fake.jsonl.gz", [{"id": f"f{i}", "text": f"plain {i}"} for i in range(20)])  # not gzipped
    (web / "f_crlf.jsonl").write_bytes(b'{"id": "crlf1", "text": "windows"}\r\n{"id": "crlf2", "text": "lines"}\r\n')
    write_jsonl(web / "g_gzipped.jsonl", [{"id": f"g{i}", "text": f"gz {i}"} for i in range(3)], gz=True)  # no .gz
    result = run_raw(_env(tmp_path, f'name: t\nsources:\n  web: {{path: "web/*", {LOOSE}}}\n'), "web")
    assert result.stats["quarantined"] == 0, _rows(tmp_path / "data" / "quarantine" / "web" / "default")
    docs = {d["id"]: d for d in _rows(tmp_path / "data" / "raw" / "web" / "default")}
    assert docs["bom1"]["text"] == "first" and {"bom2", "bom3"} <= set(docs)
    assert json.loads(docs["s1"]["metadata"])["score"] == "1e400"  # kept as written: no double holds it
    meta = json.loads(docs["s1"]["metadata"])
    assert meta["n"] == 12345678901234567890123
    # Fields named like the pipeline's own keys are kept under another name, not overwritten.
    assert (docs["s1"]["source"], meta["input_source"], meta["line"], meta["input_input_line"], meta["input_line"]) == (
        "web", "dolma", 1, 7, 8)
    assert {"123456789012345678901234567890", "123456789012345678901234567891",
            "0.100000000000000000001", "0.100000000000000000002"} <= set(docs)
    assert docs["d_gen.jsonl:2"]["text"] == "explicit" and docs["d_gen.jsonl:2#1"]["text"] == "generated"
    assert {f"f{i}" for i in range(20)} <= set(docs) and {"crlf1", "crlf2", "g0", "g1", "g2"} <= set(docs)
    assert len(docs) == result.stats["records"] == 3 + 1 + 4 + 2 + 20 + 2 + 3
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


# ---- snapshot folders with odd names ------------------------------------------------------------
def test_snapshot_folders_with_odd_names_are_partitions_or_refused_naming_the_folder(tmp_path):
    from mix_pipeline.defs.partitions import discovered_keys
    from mix_pipeline.names import split_partition_key

    names = ["2024:05", "a b", "ünï", "2024[06]"]  # `2024:05` holds the separator: keys split at the first `:`
    for i, name in enumerate(names):
        write_jsonl(tmp_path / "crawl" / name / "part.jsonl", [{"id": f"{i}-{j}", "text": f"doc {j}"} for j in range(20)])
    body = 'name: t\nsources:\n  web: {path: "crawl/{snapshot}/*.jsonl"}\n'
    env = _env(tmp_path, body)
    keys = discovered_keys(env.recipe)
    assert sorted(split_partition_key(k) for k in keys) == sorted(("web", n) for n in names)
    read = sum(run_raw(env, *split_partition_key(k)).stats["documents"] for k in keys)
    assert read == 20 * len(names)  # every record of every folder, none skipped

    # A name that cannot be a partition key is refused at load, in one line naming the folder; `|`
    # because the UI's Materialize… dialog splits a key at it (its multi-partition delimiter).
    for bad in ("default", "2024...05", "2024|05"):
        folder = tmp_path / "crawl" / bad
        write_jsonl(folder / "part.jsonl", [{"id": "x", "text": "x"}])
        with pytest.raises(RecipeError, match=r"snapshot folder .*" + re.escape(bad) + r".* rename the folder") as err:
            load_recipe(write_recipe(tmp_path, body))
        assert "\n" not in str(err.value)
        shutil.rmtree(folder)
    # An empty folder is not a snapshot (a drop still being copied), whatever its name.
    (tmp_path / "crawl" / "default").mkdir()
    load_recipe(write_recipe(tmp_path, body))


# ---- files that are not regular, files reached twice ------------------------------------------
def test_a_named_pipe_matching_a_source_is_refused_at_load_and_quarantined_at_run_time(tmp_path):
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "1", "text": "one"}])
    os.mkfifo(tmp_path / "web" / "b.jsonl")
    body = f'name: t\nsources:\n  web: {{path: "web/*.jsonl", {LOOSE}}}\n'
    with pytest.raises(RecipeError, match=r"sources.web.path: .*b.jsonl is a named pipe \(FIFO\), not a regular file"):
        load_recipe(write_recipe(tmp_path, body))
    # Appeared after validation: one quarantine record, never an open() that blocks.
    os.remove(tmp_path / "web" / "b.jsonl")
    env = _env(tmp_path, body)
    os.mkfifo(tmp_path / "web" / "b.jsonl")
    result = run_raw(env, "web")
    assert result.stats["documents"] == 1 and result.stats["quarantined"] == 1
    assert _fates(tmp_path, "web") == [("b.jsonl:0", "unreadable_file", "a named pipe (FIFO), not a regular file")]


def test_each_file_is_read_once_however_globs_symlinks_and_hard_links_meet(tmp_path):
    web = tmp_path / "web"
    write_jsonl(web / "a.jsonl", [{"id": "1", "text": "one"}, {"id": "2", "text": "two"}])
    (web / "sub").mkdir()
    os.symlink("..", web / "sub" / "up")  # a link back to a parent: `**` loops through it
    os.link(web / "a.jsonl", web / "sub" / "hard.jsonl")
    os.symlink("../a.jsonl", web / "sub" / "soft.jsonl")
    recipe = load_recipe(write_recipe(tmp_path, 'name: t\nsources:\n  web: {path: "web/**/*.jsonl"}\n'))
    assert source_files(recipe, "web") == [str(web / "a.jsonl")]
    result = run_raw(StageEnv(recipe, runner=local_runner(1), log=lambda m: None), "web")
    assert result.stats == {"input_files": 1, "documents": 2, "quarantined": 0, "duplicate_ids": 0, "removed": 0,
                            "records": 2}


# ---- data_root overlapping a source -------------------------------------------------------------
@pytest.mark.parametrize("data_root, path, ok", [
    ("web", "web/*.jsonl", False),                  # the same folder
    ("web/out", "web", False),                      # inside a text folder, which is read recursively
    ("web/out", "web/**/*.jsonl", False),           # inside, reachable through **
    ("crawl/out", "crawl/{snapshot}/*.jsonl", False),  # would become a snapshot
    (".", "web/*.jsonl", True),                     # containing, but web/ is not a folder the pipeline writes
    ("data", "data/raw/*.jsonl", False),            # a source inside the pipeline's own output
    ("web/out", "web/*.jsonl", True),               # inside, but the pattern cannot reach it
    ("data", "data/sample/*.jsonl", True),          # the demo's layout
])
def test_a_data_root_overlapping_a_source_folder_is_refused_at_load(tmp_path, data_root, path, ok):
    base = path.split("/")[0]
    write_jsonl(tmp_path / path.replace("{snapshot}", "s1").replace("**/", "").replace("*", "a").replace("/a.jsonl", "") / "a.jsonl"
                if path.endswith(".jsonl") else tmp_path / path / "a.txt", [{"id": "1", "text": "x"}])
    body = f'name: t\ndata_root: {data_root}\nsources:\n  s: {{path: "{path}"}}\n'
    if ok:
        load_recipe(write_recipe(tmp_path, body))
        return
    with pytest.raises(RecipeError, match=r"data_root: .* \(sources.s.path\); put data_root and the sources in separate folders") as err:
        load_recipe(write_recipe(tmp_path, body))
    assert "\n" not in str(err.value) and base


# ---- published shards are checked before anything downstream reads them -----------------------


def _build(env: StageEnv, stages=("raw", "filtered", "dedup", "deduplicated")) -> None:
    from mix_pipeline.core.stages import run_dedup_index, run_deduplicated, run_filtered

    for source in ("books", "web"):
        if "raw" in stages:
            run_raw(env, source)
        if "filtered" in stages:
            run_filtered(env, source)
    if "dedup" in stages:
        run_dedup_index(env)
    for source in ("books", "web"):
        if "deduplicated" in stages:
            run_deduplicated(env, source)


def test_a_deleted_or_altered_published_shard_is_named_before_anything_reads_it(tmp_path):
    from mix_pipeline.core.io.integrity import DamagedPartition, verify_partition
    from mix_pipeline.core.stages import run_dedup_index, run_deduplicated, run_filtered, run_mixture
    from mix_pipeline.names import DEDUPLICATED, FILTERED, RAW

    write_two_sources(tmp_path)
    env = _env(tmp_path, TWO_SOURCES_RECIPE)
    _build(env)
    root = tmp_path / "data"
    assert all(verify_partition(str(root), stage, s, "default") is None
               for stage in (RAW, FILTERED, DEDUPLICATED) for s in ("books", "web"))
    fix = r"rebuild it with `mix-pipeline run` .* or `mix-pipeline run --full`"

    # A deleted deduplicated shard: the mixture refuses, naming it, instead of planning from half the books.
    shard = root / "deduplicated" / "books" / "default" / "part-00001.parquet"
    rows = pq.read_metadata(shard).num_rows
    shard.unlink()
    assert verify_partition(str(root), DEDUPLICATED, "books", "default") == f"{shard} ({rows:,} rows) is missing"
    with pytest.raises(DamagedPartition, match=re.escape(f"deduplicated[books:default]: {shard}") + ".*" + fix) as err:
        run_mixture(env, "m")
    assert "\n" not in str(err.value)
    run_deduplicated(env, "books")  # rebuilding the partition is the fix
    assert run_mixture(env, "m").stats["sources"]["books"]["available_documents"] == 120

    # A filtered shard altered in place (same size): dedup_index and deduplicated refuse before reading.
    shard = root / "filtered" / "books" / "default" / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert "changed since it was published (its sha256 differs)" in verify_partition(str(root), FILTERED, "books", "default")
    for stage in (run_dedup_index, lambda e: run_deduplicated(e, "books")):
        with pytest.raises(DamagedPartition, match=re.escape(f"filtered[books:default]: {shard} changed")):
            stage(env)
    # An extra shard dropped into a raw partition: filtered refuses to read it.
    extra = root / "raw" / "web" / "default" / "part-00009.parquet"
    shutil.copy(root / "raw" / "web" / "default" / "part-00000.parquet", extra)
    with pytest.raises(DamagedPartition, match=re.escape(f"{extra} was not published by the stage")):
        run_filtered(env, "web")
    extra.unlink()
    # Rebuilt from the same input, a partition is byte-identical, its seal included.
    seal = (root / "filtered" / "books" / "default" / "_published.json").read_bytes()
    run_filtered(env, "books")
    assert (root / "filtered" / "books" / "default" / "_published.json").read_bytes() == seal
    assert verify_partition(str(root), FILTERED, "books", "default") is None


def test_text_files_with_a_byte_order_mark_and_parquet_rows_with_null_text(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.py").write_bytes(b"\xef\xbb\xbfprint('hi')\n")
    (code / "b.py").write_bytes(b"")  # empty: one record, counted
    pq.write_table(pa.table({"id": ["1", "2", "3"], "text": ["one", None, ""]}), tmp_path / "t.parquet")
    body = (f'name: t\nsources:\n  code: {{path: code, format: text, {LOOSE}}}\n'
            f'  tab: {{path: "t.parquet", format: parquet, {LOOSE}}}\n')
    env = _env(tmp_path, body)
    assert run_raw(env, "code").stats["records"] == 2
    assert [d["text"] for d in _rows(tmp_path / "data" / "raw" / "code" / "default")] == ["print('hi')\n"]
    assert run_raw(env, "tab").stats == {"input_files": 1, "documents": 1, "quarantined": 2, "duplicate_ids": 0,
                                         "removed": 0, "records": 3}
    assert [(i, r) for i, r, _ in _fates(tmp_path, "tab")] == [("t.parquet:2", "missing_text"), ("t.parquet:3", "empty_text")]


def test_an_input_file_beside_the_snapshot_folders_is_refused_not_skipped(tmp_path):
    write_jsonl(tmp_path / "crawl" / "2024-05" / "a.jsonl", [{"id": "1", "text": "x"}])
    write_jsonl(tmp_path / "crawl" / "b.jsonl", [{"id": "2", "text": "y"}])
    (tmp_path / "crawl" / "README.md").write_text("not input")
    body = 'name: t\nsources:\n  web: {path: "crawl/{snapshot}/*.jsonl"}\n'
    with pytest.raises(RecipeError, match=r"sources.web.path: .*crawl/b.jsonl sits beside the snapshot folders"):
        load_recipe(write_recipe(tmp_path, body))
    (tmp_path / "crawl" / "b.jsonl").unlink()
    assert snapshots(load_recipe(write_recipe(tmp_path, body)), "web") == ["2024-05"]


def test_deeply_nested_json_with_a_long_number_is_quarantined_not_a_crash(tmp_path):
    line = "[" * 1010 + "1234567890123456789" + "]" * 1010
    write_jsonl(tmp_path / "web" / "a.jsonl", [{"id": "1", "text": "fine"}, '{"id": "2", "text": "x", "deep": ' + line + "}"])
    result = run_raw(_env(tmp_path, f'name: t\nsources:\n  web: {{path: "web/*.jsonl", {LOOSE}}}\n'), "web")
    assert (result.stats["documents"], result.stats["quarantined"]) == (1, 1)
    assert _fates(tmp_path, "web")[0][:2] == ("a.jsonl:2", "malformed_json")


def test_a_file_name_that_is_not_utf8_is_refused_naming_it_and_odd_names_are_read(tmp_path):
    write_jsonl(tmp_path / "web" / "line\nbreak.jsonl", [{"text": "a newline in the file name"}])
    (tmp_path / "web" / "a b ünï.jsonl").write_text('{"text": "spaces and accents"}\n')
    body = 'name: t\nsources:\n  web: {path: "web/*.jsonl"}\n'
    result = run_raw(_env(tmp_path, body), "web")
    assert sorted(d["id"] for d in _rows(tmp_path / "data" / "raw" / "web" / "default")) == ["a b ünï.jsonl:1", "line\nbreak.jsonl:1"]
    assert result.stats["records"] == 2
    with open(os.fsencode(tmp_path / "web") + b"/bad\xff.jsonl", "wb") as f:
        f.write(b'{"text": "x"}\n')
    with pytest.raises(RecipeError, match=r"sources.web.path: the file name '.*/web/bad\\xff.jsonl' is not valid UTF-8; rename the file"):
        load_recipe(write_recipe(tmp_path, body))
