"""Provenance and compliance on a small pipeline run: trace, licenses, dataset cards, forget."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

import mix_pipeline.defs.runner as runner
from mix_pipeline.cli import main
from mix_pipeline.core.io.documents import list_parts
from mix_pipeline.core.mixing.dataset_card import parse_card
from mix_pipeline.core.provenance import catalog, fates
from mix_pipeline.core.provenance.forget import resolve_request
from mix_pipeline.core.provenance.outputs import find_in_outputs
from mix_pipeline.core.provenance.trace import format_trace, trace
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.conftest import prose_doc, write_jsonl, write_recipe
from mix_pipeline_tests.helpers import assert_card_matches

RECIPE = """
name: provenance
data_root: data
executor: {kind: local, tasks: 1, workers: 1}
sources:
  web:
    path: "in/web/*.jsonl"
    filters: [{gopher_quality: {max_non_alpha_words_ratio: 0.6}}]
  books:
    path: "in/books/*.jsonl"
    license: CC0-1.0
  code:
    path: "in/code"
    format: text
    detect_license: true
    license: PSF-2.0
dedup: {minhash: null}
mixtures:
  general:
    unit: documents
    total: 40
    weights: {web: 0.6, code: 0.4}
    max_epochs: 3
    splits: {validation: 0.1}
    seed: 1
  open_web:
    unit: documents
    total: 12
    weights: {web: 1}
    max_epochs: 2
    allowed_licenses: [CC-BY-4.0]
    seed: 2
  books_only:
    unit: documents
    total: 8
    weights: {books: 1}
    seed: 3
"""

# Stdlib files whose headers name their licenses.
CODE = {"tomllib/_re.py": "MIT", "profile.py": "PSF-2.0 AND Apache-2.0", "optparse.py": "BSD-3-Clause",
        "logging/config.py": "HPND", "lib2to3/pgen2/__init__.py": "PSF-2.0", "fileinput.py": "PSF-2.0"}


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_work"))]
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("provenance")
    web = [{"id": f"w{i:02d}", "text": prose_doc(i), "url": f"https://site{i % 3}.example/{i}",
            "license": "CC-BY-4.0" if i % 2 else "proprietary"} for i in range(24)]
    web.append({"id": "w-short", "text": "Too short to keep.", "license": "CC-BY-4.0"})
    web.append({"id": "w-copy", "text": web[3]["text"], "license": "CC-BY-4.0"})
    write_jsonl(folder / "in/web/a.jsonl", web[:13])
    write_jsonl(folder / "in/web/b.jsonl", web[13:] + ['{"id": "w-broken", "text": '])  # line 14: quarantined
    write_jsonl(folder / "in/books/a.jsonl", [{"id": f"b{i}", "text": prose_doc(100 + i, 20)} for i in range(8)])
    stdlib = sysconfig.get_paths()["stdlib"]
    for rel in CODE:
        (folder / "in/code" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(stdlib, rel), folder / "in/code" / rel)
    recipe_path = write_recipe(folder, RECIPE)
    instance = dg.DagsterInstance.ephemeral()
    manifests = run_recipe(str(recipe_path), instance=instance)
    return folder, recipe_path, instance, manifests


def _con(folder: Path, read_only: bool = True):
    return duckdb.connect(str(folder / "data" / "catalog.duckdb"), read_only=read_only)


def test_trace_mixture_row_shows_raw_file_line_and_every_stage(built, capsys):
    folder, recipe_path, _, _ = built
    recipe = load_recipe(recipe_path)
    shard = folder / "data/mixtures/general/train/part-00000.parquet"
    rows = pq.read_table(shard, columns=["id", "source"]).to_pylist()
    k = next(i for i, r in enumerate(rows) if r["source"] == "web")
    ref = f"general/train/part-00000.parquet:{k}"
    con = _con(folder)
    [h] = trace(con, recipe, ref)
    con.close()
    doc_id = rows[k]["id"]
    n = int(doc_id[1:])
    assert h["id"] == doc_id and h["fate"] == "kept" and h["mixture_row"] == ref
    assert h["origin"]["file"] == ("a.jsonl" if n < 13 else "b.jsonl")
    assert h["origin"]["line"] == (n + 1 if n < 13 else n - 12)
    assert h["origin"]["url"] == f"https://site{n % 3}.example/{n}"
    assert [s["stage"] for s in h["stages"]] == ["raw", "filtered", "dedup", "deduplicated"]
    assert [(f["filter"], f["result"]) for f in h["stages"][1]["filters"]] == [("gopher_quality", "passed")]
    assert h["dedup"]["survivor"]["id"] == doc_id
    assert h["license"] == {"license": "CC-BY-4.0" if n % 2 else "proprietary", "origin": "field"}
    assert any(m["row"] == ref for m in h["mixtures"])
    assert {m["mixture"] for m in h["mixtures"]} <= {"general", "open_web"}
    # The CLI prints the same history.
    assert main(["trace", "--recipe", str(recipe_path), ref]) == 0
    out = capsys.readouterr().out
    assert f"origin: {h['origin']['file']}, line {h['origin']['line']}" in out and f"general/train/part-00000.parquet:{k}" in out


def test_trace_dropped_and_duplicate_documents_end_at_their_stage(built):
    folder, recipe_path, _, _ = built
    recipe = load_recipe(recipe_path)
    con = _con(folder)
    [short] = trace(con, recipe, "w-short")
    pair = [trace(con, recipe, i)[0] for i in ("w03", "w-copy")]
    [broken] = trace(con, recipe, "b.jsonl:14")
    con.close()
    assert short["fate"] == "dropped" and short["ended_at"] == "filtered"
    assert short["reason"].startswith("gopher_quality:") and short["mixtures"] == []
    gq = short["stages"][1]["filters"][0]
    assert gq["result"] == "dropped" and gq["reason"] == short["reason"]
    assert short["origin"]["file"] == "b.jsonl" and short["origin"]["line"] == 12
    assert "dedup" not in short and "history ends at filtered" in format_trace([short])
    assert broken["fate"] == "quarantined" and broken["ended_at"] == "raw" and broken["reason"] == "malformed_json"
    assert (broken["origin"]["file"], broken["origin"]["line"]) == ("b.jsonl", 14) and broken["mixtures"] == []
    # Exact copies: one survives, the other's history ends at dedup naming the survivor.
    [copy] = [h for h in pair if h["fate"] == "duplicate"]
    [original] = [h for h in pair if h["fate"] == "kept"]
    assert copy["ended_at"] == "dedup" and copy["mixtures"] == [] and copy["dedup"]["match"] == "exact"
    assert copy["dedup"]["survivor"] == {"source": "web", "snapshot": "default", "id": original["id"]}
    assert [c["id"] for c in original["dedup"]["copies"]] == [copy["id"]]
    assert original["dedup"]["cluster_size"] == copy["dedup"]["cluster_size"] == 2
    assert "history ends at dedup: duplicate" in format_trace([copy])


def test_stdlib_code_licenses_and_allowed_licenses(built):
    folder, recipe_path, _, manifests = built
    recipe = load_recipe(recipe_path)
    con = _con(folder)
    for rel, expected in CODE.items():
        [h] = trace(con, recipe, rel, source="code")
        assert h["license"]["license"] == expected, rel
        assert h["license"]["origin"] == ("source" if rel == "fileinput.py" else "header")
    con.close()
    general = manifests["general"]["licenses"]
    assert {"MIT", "HPND", "BSD-3-Clause", "CC-BY-4.0", "proprietary"} <= set(general)
    assert abs(sum(v["share"] for v in general.values()) - 1) < 1e-5
    assert sum(v["rows"] for v in general.values()) == sum(s["documents"] for s in manifests["general"]["splits"].values())
    open_web = manifests["open_web"]
    assert set(open_web["licenses"]) == {"CC-BY-4.0"}
    lf = open_web["license_filter"]
    # 12 web documents are `proprietary`; w-short was dropped and w-copy is a duplicate.
    assert lf["excluded"] == {"web": {"proprietary": {"documents": 12, "tokens": lf["excluded_tokens"]}}}
    assert lf["excluded_documents"] == 12 and lf["available_documents"] == 24
    assert lf["excluded_share_of_documents"] == 0.5


def test_dataset_cards_parse_and_match_the_manifests(built):
    folder, _, instance, manifests = built
    for name, manifest in manifests.items():
        assert_card_matches(folder / "data/mixtures" / name, manifest)
    assert "license_filter" in parse_card((folder / "data/mixtures/open_web/README.md").read_text()).data.to_dict()[
        "mix_pipeline"]
    # The mixture asset shows the card and its first rows traced to their origin in the UI.
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mixture"), asset_partitions=["general"]), limit=1).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["dataset_card"].value.endswith("general/README.md")
    assert "general/train/part-00000.parquet:0" in metadata["provenance"].value


def test_forget_refuses_a_request_naming_no_known_document(built, tmp_path, capsys):
    _, recipe_path, _, _ = built
    ids = tmp_path / "ids.txt"
    ids.write_text("no-such-id\n")
    assert main(["forget", "--recipe", str(recipe_path), "--ids", str(ids)]) == 2
    err = capsys.readouterr().err
    assert "no document 'no-such-id' in the catalog" in err and "names no document the catalog knows" in err
    assert main(["forget", "--recipe", str(recipe_path)]) == 2


def test_a_request_by_file_or_url_names_every_document_read_from_it(built):
    folder, _, _, _ = built
    con = _con(folder, read_only=False)
    by_file, _ = resolve_request(con, str(folder / "data"), file_pattern="b.*", with_copies=False)
    by_url, _ = resolve_request(con, str(folder / "data"), url_pattern="https://site1.example/*", with_copies=False)
    [(kept,)] = con.execute("SELECT id FROM document_fates WHERE id IN ('w03', 'w-copy') AND fate = 'kept'").fetchall()
    copy = ({"w03", "w-copy"} - {kept}).pop()
    listed, unknown = resolve_request(con, str(folder / "data"), ids=[(None, kept), ("books", kept), (None, "nope")])
    only, _ = resolve_request(con, str(folder / "data"), ids=[(None, kept)], with_copies=False)
    con.close()
    assert {e["id"] for e in by_file} == {f"w{i:02d}" for i in range(13, 24)} | {"w-short", "w-copy"}
    assert {e["id"] for e in by_url} == {f"w{i:02d}" for i in range(24) if i % 3 == 1}
    # Naming the survivor of a cluster names its copies too (they would take its place), unless asked not to.
    assert {(e["id"], e["via"]) for e in listed} == {(kept, "listed"), (copy, "copy")}
    assert [e["id"] for e in only] == [kept] and unknown == [f"books\t{kept}", "nope"]


def test_forget_rebuilds_both_mixtures_and_nothing_else(built, monkeypatch, capsys):
    folder, recipe_path, instance, manifests = built
    data = folder / "data"
    general = {r["id"] for r in _mixture_rows(data, "general") if r["source"] == "web"}
    open_web = {r["id"] for r in _mixture_rows(data, "open_web")}
    doc = sorted((general & open_web) - {"w03", "w-copy"})[0]
    before = _hashes(data)
    web_before = pq.read_table(data / "deduplicated/web/default").to_pylist()
    ids = folder / "forget.txt"
    ids.write_text(f"# request 1\nweb\t{doc}\n")
    # The rebuild is the normal run, here against the test's Dagster instance.
    monkeypatch.setattr(runner, "run_recipe", lambda path: run_recipe(path, instance=instance))
    assert main(["forget", "--recipe", str(recipe_path), "--ids", str(ids), "--reason", "takedown 1"]) == 0
    out = capsys.readouterr().out
    assert "forget: 1 of 1 document(s) have the fate 'removed' and sit in no output" in out
    assert "conservation holds" in out
    after = _hashes(data)
    con = _con(folder)
    assert con.execute("SELECT stage, fate, reason FROM document_fates WHERE id = ?", [doc]).fetchall() == [
        ("raw", "removed", "removal request: takedown 1")]
    assert con.execute("SELECT rows_left_in_outputs, verified FROM removal_log WHERE id = ?", [doc]).fetchall() == [(0, True)]
    assert find_in_outputs(con, str(data), [("web", doc)]) == []
    # The removed document keeps no text anywhere.
    assert con.execute(f"SELECT text FROM read_parquet('{data}/quarantine/web/default/*.parquet') WHERE id = ?",
                       [doc]).fetchall() == [("",)]
    con.close()
    assert doc not in {r["id"] for r in _mixture_rows(data, "general")} | {r["id"] for r in _mixture_rows(data, "open_web")}
    # Both mixtures holding it were rebuilt; every output where it did not sit is byte for byte the same.
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert any(p.startswith("mixtures/general/") for p in changed) and any(p.startswith("mixtures/open_web/") for p in changed)
    untouched = [p for p in before if p.startswith(("mixtures/books_only/", "raw/books", "filtered/books", "deduplicated/books",
                                                    "raw/code", "filtered/code", "deduplicated/code"))]
    assert untouched and not changed & set(untouched)
    web_after = pq.read_table(data / "deduplicated/web/default").to_pylist()
    assert web_after == [r for r in web_before if r["id"] != doc]
    # Tracing it now says where and why its history ends.
    con = _con(folder)
    [h] = trace(con, load_recipe(recipe_path), doc)
    # The view reads the removal from the rebuilt partition's quarantine shards, the new one included:
    # the catalog lists those files (not the document), and none of the files it lists is gone.
    quarantine = list_parts(data / "quarantine" / "web" / "default")
    assert sorted(p for (p,) in con.execute(
        "SELECT path FROM fate_files WHERE stage = 'raw' AND source = 'web' AND snapshot = 'default'").fetchall()) == [
        os.path.relpath(p, data) for p in quarantine]
    assert (doc,) in con.execute(f"SELECT id FROM read_parquet('{quarantine[-1]}')").fetchall()
    assert fates.missing_files(con) == []
    con.close()
    assert h["fate"] == "removed" and h["ended_at"] == "raw" and h["origin"]["file"] in ("a.jsonl", "b.jsonl")


def _mixture_rows(data: Path, name: str) -> list[dict]:
    manifest = json.loads((data / "mixtures" / name / "manifest.json").read_text())
    rows = []
    for split in manifest["splits"].values():
        for f in split["files"]:
            rows += pq.read_table(data / "mixtures" / name / f, columns=["id", "source"]).to_pylist()
    return rows


def _copy_of(built, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the built inputs, recipe and data root, for a test that damages or migrates its
    catalog. Its catalog's view still reads the original's files until a writer opens it."""
    folder = built[0]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("_work"))
    path = str(copy / "data" / "catalog.duckdb")
    with catalog.connect(path) as con:
        catalog.ensure_schema(con)  # a writer's open re-creates the view over the copy's files
        [(sql,)] = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'document_fates'").fetchall()
    assert str(copy / "data" / "quarantine") in sql and str(folder / "data") + os.sep not in sql
    return copy, copy / "recipe.yaml"


OLD_FATES_TABLE = """CREATE TABLE document_fates (
    source VARCHAR, snapshot VARCHAR, id VARCHAR, stage VARCHAR, fate VARCHAR,
    reason VARCHAR, duplicate_of_source VARCHAR, duplicate_of VARCHAR, detail VARCHAR)"""


def test_a_catalog_with_the_old_fates_table_migrates_on_first_open(built, tmp_path):
    copy, recipe_path = _copy_of(built, tmp_path)
    path = str(copy / "data" / "catalog.duckdb")
    con = duckdb.connect(path)
    expected = sorted(con.execute("SELECT * FROM document_fates").fetchall())
    # What an older release left: every fate copied into a table and no `fate_files`; web's
    # quarantine rows had been taken out (as retirement did), though its files are still on disk.
    con.execute("CREATE TEMP TABLE copied AS SELECT * FROM document_fates")
    con.execute("DROP VIEW document_fates")
    con.execute("DROP TABLE fate_files")
    con.execute(OLD_FATES_TABLE)
    con.execute("INSERT INTO document_fates SELECT * FROM copied WHERE NOT (source = 'web' AND stage = 'raw')")
    con.close()
    with catalog.connect(path) as con:
        catalog.ensure_schema(con)
    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'document_fates'"
                       ).fetchall() == [("VIEW",)]
    assert sorted(con.execute("SELECT * FROM document_fates").fetchall()) == [
        r for r in expected if not (r[0] == "web" and r[3] == "raw")]
    files = con.execute("SELECT stage, count(*) FROM fate_files GROUP BY stage ORDER BY stage").fetchall()
    assert [s for s, _ in files] == ["dedup", "filtered"] and sum(n for _, n in files) < len(expected) / 4
    assert fates.missing_files(con) == []
    [short] = trace(con, load_recipe(recipe_path), "w-short")
    con.close()
    assert short["fate"] == "dropped" and short["reason"].startswith("gopher_quality:")


def test_a_fate_file_deleted_by_hand_is_named_and_a_run_restores_it(built, tmp_path, capsys):
    copy, recipe_path = _copy_of(built, tmp_path)
    data = copy / "data"
    [dropped] = list_parts(data / "dropped" / "web" / "default" / "gopher_quality")
    os.remove(dropped)
    # `report` still answers: web does not balance, and one line names the file and the fix.
    assert main(["report", "--recipe", str(recipe_path)]) == 0
    out, err = capsys.readouterr()
    assert "NOT BALANCED" in out and "Traceback" not in out + err
    assert f"fate file(s) missing, e.g. {dropped}" in err and "`mix-pipeline run` rebuilds" in err
    # `trace` of a document the file held fails in one line; the others still trace.
    assert main(["trace", "--recipe", str(recipe_path), "w-short"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no document 'w-short'" in err and str(dropped) in err
    assert main(["trace", "--recipe", str(recipe_path), "w00"]) == 0
    # The run rebuilds what no longer matches its seal and records the new files.
    run_recipe(str(recipe_path), instance=dg.DagsterInstance.ephemeral())
    con = _con(copy)
    assert fates.missing_files(con) == [] and all(r["balanced"] for r in catalog.conservation(con))
    [short] = trace(con, load_recipe(recipe_path), "w-short")
    listed = [str(data / p) for (p,) in con.execute("SELECT path FROM fate_files").fetchall()]
    con.close()
    assert short["fate"] == "dropped"
    # Every fate file gone (none of a stage left to bind the view to): still no error, and no fates.
    for p in listed:
        os.remove(p)
    con = _con(copy)
    assert con.execute("SELECT count(*) FROM document_fates").fetchall() == [(0,)]
    assert {r["source"] for r in catalog.conservation(con) if not r["balanced"]} == {"web", "books", "code"}
    assert f"delete {data / 'dedup_index'} and materialize dedup_index again" in fates.missing_note(con)
    con.close()
