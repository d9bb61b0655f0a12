"""The mixture lab through Dagster and the CLI: the asset's metadata, and materializing the
recommendation through the normal mixture stage."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import numpy as np
import yaml

from mix_pipeline.cli import main
from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.jobs import LAB_JOB
from mix_pipeline.defs.runner import run_lab_experiment
from mix_pipeline.names import MIXTURE_LAB
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.conftest import write_recipe
from mix_pipeline_tests.helpers import markov_documents, markov_language, write_deduplicated_source


def _setup(tmp_path):
    rng = np.random.default_rng(11)
    common, alien = markov_language(rng, "w"), markov_language(rng, "zq")
    for source, language in (("news", common), ("forum", common), ("alien", alien)):
        write_deduplicated_source(tmp_path / "data", source, markov_documents(rng, language, 200))
        (tmp_path / "in" / source).mkdir(parents=True)
        (tmp_path / "in" / source / "a.jsonl").write_text('{"id": "1", "text": "x"}\n')
    return write_recipe(tmp_path, f"""
        name: lab_cli
        data_root: {tmp_path / 'data'}
        sources:
          news: {{path: "in/news/*.jsonl"}}
          forum: {{path: "in/forum/*.jsonl"}}
          alien: {{path: "in/alien/*.jsonl"}}
        mixtures:
          base:
            total: 40_000
            weights: {{news: 0.45, forum: 0.45, alien: 0.1}}
            max_epochs: 3
            seed: 5
        experiments:
          small: {{prior: base, candidates: 8, total: 20_000, search_samples: 2000, seed: 1}}
        """)


def test_lab_asset_and_materialized_recommendation(tmp_path):
    path = _setup(tmp_path)
    recipe = load_recipe(path)
    defs = build_definitions(recipe)
    assert defs.resolve_job_def(LAB_JOB) is not None
    with dg.instance_for_test() as instance:
        results = run_lab_experiment(str(path), "small", materialize=True, instance=instance)
        event = instance.get_latest_materialization_event(dg.AssetKey(MIXTURE_LAB))
        meta = event.asset_materialization.metadata
        assert event.asset_materialization.partition == "small"
        assert "small_recommended" in meta["candidates"].value
        assert meta["spearman_loo"].value == results["spearman_loo"]
        assert meta["recommended_weights"].value == results["recommended_weights"]
        assert meta["proxies_trained"].value == results["proxies_trained"]
    manifest = json.loads((tmp_path / "data" / "mixtures" / "small_recommended" / "manifest.json").read_text())
    for source, weight in results["recommended_weights"].items():
        assert abs(manifest["sources"][source]["achieved_weight"] - weight) <= 0.01 * weight + 1e-3
    assert manifest["seed"] == 5 and manifest["total_target"] == 40_000
    block = yaml.safe_load((tmp_path / "data" / "lab" / "small" / "recommended.yaml").read_text())
    assert block["small_recommended"]["weights"] == results["recommended_weights"]
    # The mixture stage records its own ledger, whoever calls it: the lab's mixture is in the catalog
    # like any other, and its dataset card sits beside the manifest.
    con = duckdb.connect(str(tmp_path / "data" / "catalog.duckdb"), read_only=True)
    ledger = dict(con.execute("SELECT source, units FROM mixture_ledger WHERE mixture = 'small_recommended'").fetchall())
    con.close()
    assert ledger == {s: row["units"] for s, row in manifest["sources"].items()} and sum(ledger.values()) > 0
    assert results["materialized"]["output_sha256"] == manifest["output_sha256"]
    assert (tmp_path / "data" / "mixtures" / "small_recommended" / "README.md").exists()


def test_lab_cli_names_an_unknown_experiment(tmp_path, capsys):
    path = _setup(tmp_path)
    assert main(["lab", "--recipe", str(path), "--experiment", "nope"]) == 2
    assert "recipe has no experiment 'nope' (experiments: small)" in capsys.readouterr().err
