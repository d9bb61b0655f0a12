"""`mix-pipeline run` rebuilds a partition whose published shards were deleted since, instead of
planning the mixture from what is left: the catalog and the mixture agree again. The
web source's snapshot folder is named `2024:05` (it holds the key separator): a partition like any other."""

from __future__ import annotations

import json

import dagster as dg
import duckdb

from mix_pipeline.core.provenance import catalog
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline_tests.conftest import write_recipe
from mix_pipeline_tests.helpers import TWO_SOURCES_RECIPE, write_two_sources


def test_a_rerun_rebuilds_partitions_whose_published_shards_were_deleted(tmp_path, capsys):
    write_two_sources(tmp_path)
    (tmp_path / "web").rename(tmp_path / "2024:05")
    (tmp_path / "web").mkdir()
    (tmp_path / "2024:05").rename(tmp_path / "web" / "2024:05")
    recipe = write_recipe(tmp_path, TWO_SOURCES_RECIPE.replace('"web/*.jsonl"', '"web/{snapshot}/*.jsonl"'))
    root = tmp_path / "data"
    with dg.instance_for_test() as instance:
        first = run_recipe(str(recipe), instance=instance)["m"]
        assert first["sources"]["books"]["available_documents"] == 120
        capsys.readouterr()

        # One deduplicated shard of books and one filtered shard of web gone: the first partition is
        # deduplicated again (not planned from 60 of 120 books), the second ingested again before
        # dedup_index reads it (not republished short).
        (root / "deduplicated" / "books" / "default" / "part-00001.parquet").unlink()
        (root / "filtered" / "web" / "2024:05" / "part-00000.parquet").unlink()
        again = run_recipe(str(recipe), instance=instance)["m"]
        out = capsys.readouterr().out
        assert "raw → filtered [web:2024:05]: filtered: " in out and "part-00000.parquet (60 rows) is missing: rebuilding it" in out
        assert "ingest: 1 of 2 partition(s)" in out
        assert "deduplicated [books:default]: " in out and "part-00001.parquet (60 rows) is missing: rebuilding it" in out
        assert again["output_sha256"] == first["output_sha256"]
    with duckdb.connect(str(root / "catalog.duckdb"), read_only=True) as con:
        rows = {r["source"]: r for r in catalog.conservation(con)}
    assert all(r["records"] == r["kept"] == 120 and r["balanced"] for r in rows.values())
    assert json.loads((root / "mixtures" / "m" / "manifest.json").read_text())["output_sha256"] == first["output_sha256"]
