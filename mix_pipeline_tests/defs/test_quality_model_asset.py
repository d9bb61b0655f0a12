"""The quality_model asset through a real Dagster run: it trains the model from the recipe,
records the file's sha256 as its data version, and shows the score distribution per source ×
snapshot and the share each threshold would keep."""

from __future__ import annotations

import hashlib

import dagster as dg

from mix_pipeline.core.filters import quality_model as qm
from mix_pipeline.core.filters import quality_training
from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.jobs import QUALITY_MODEL_JOB
from mix_pipeline.names import FILTERED, QUALITY_MODEL
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.helpers import quality_recipe


def test_quality_model_asset_trains_and_shows_the_threshold_trade_off(sample_3mb, tmp_path):
    recipe = load_recipe(quality_recipe(tmp_path, sample_3mb))
    defs = build_definitions(recipe)
    graph = defs.resolve_asset_graph()
    # The filtered stage of a scored source reads the model.
    assert dg.AssetKey(QUALITY_MODEL) in graph.get(dg.AssetKey(FILTERED)).parent_keys
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(QUALITY_MODEL_JOB).execute_in_process(instance=instance)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    materialization = event.materialization
    meta = {k: v.value for k, v in materialization.metadata.items()}
    with open(qm.model_path(recipe), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert meta["model_sha256"] == sha
    assert materialization.tags["dagster/data_version"] == sha
    assert meta["references"] == ["books", "papers"] and meta["negatives_from"] == ["web"]
    assert "| web | default |" in meta["score_distribution"]
    assert "≥0.5" in meta["kept_share_by_threshold"] and "| web | default |" in meta["kept_share_by_threshold"]
    assert 0.0 < meta["mean_score/web:default"] < 1.0
    assert meta["input_fingerprint"] == quality_training.training_fingerprint(recipe)
