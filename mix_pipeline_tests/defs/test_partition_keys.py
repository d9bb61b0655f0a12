"""Source×snapshot partition keys are `<source>:<snapshot>`, no longer `<source>|<snapshot>`
(the UI's Materialize… dialog splits a key at `|`; the browser test is defs/test_ui_browser.py).
An instance that holds the old keys: the first run rebuilds each partition once under its new key,
with the same bytes, and drops the old keys from the partition list."""

from __future__ import annotations

import dagster as dg

from mix_pipeline.defs.partitions import source_snapshots
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline.names import DEDUPLICATED, FILTERED, RAW, partition_key, split_partition_key
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.conftest import write_recipe
from mix_pipeline_tests.helpers import TWO_SOURCES_RECIPE, write_two_sources


def test_keys_split_at_the_first_separator():
    assert partition_key("web", "2024-05-13") == "web:2024-05-13"
    assert split_partition_key("web:2024:05") == ("web", "2024:05")


def test_an_instance_with_old_bar_keys_rebuilds_each_partition_once_under_its_new_key(tmp_path):
    write_two_sources(tmp_path)
    recipe_path = write_recipe(tmp_path, TWO_SOURCES_RECIPE)
    name = source_snapshots(load_recipe(recipe_path)).name
    new = ["books:default", "web:default"]
    with dg.instance_for_test() as fresh:
        built = run_recipe(str(recipe_path), instance=fresh)["m"]["output_sha256"]
    # The same data root, and an instance as the old version left it: its keys, its materializations.
    old = ["books|default", "web|default"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(name, old)
        for key in old:
            for asset in (RAW, FILTERED, DEDUPLICATED):
                instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=key))
        assert run_recipe(str(recipe_path), instance=instance)["m"]["output_sha256"] == built
        assert sorted(instance.get_dynamic_partitions(name)) == new
        ingested = sorted(r.tags["dagster/partition"] for r in instance.get_runs() if r.job_name == "ingest")
        assert ingested == new  # each partition rebuilt once, under its new key
        for key in new:
            record = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(FILTERED), asset_partitions=[key]), limit=1).records[0]
            assert record.run_id in {r.run_id for r in instance.get_runs() if r.job_name == "ingest"}
        runs = instance.get_runs_count()
        run_recipe(str(recipe_path), instance=instance)  # and then nothing is stale
        assert instance.get_runs_count() == runs
