"""The quality classifier on the sample corpus: trained only from the recipe, it separates the
planted low-quality pages; training is deterministic; the filter stamps and drops; quality
buckets are mixture sources that hit their weights; bad settings are one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mix_pipeline import layout
from mix_pipeline.core.filters import quality_model as qm
from mix_pipeline.core.filters import quality_reports
from mix_pipeline.core.filters import quality_training
from mix_pipeline.core.io.documents import list_parts
from mix_pipeline.core.stages import (
    StageEnv,
    local_runner,
    run_dedup_index,
    run_deduplicated,
    run_filtered,
    run_mixture,
    run_raw,
)
from mix_pipeline.names import META_FILTER_REASON, META_FILTER_VALUE, META_QUALITY_SCORE
from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline_tests.helpers import THRESHOLD, quality_recipe


@pytest.fixture(scope="module")
def trained(sample_3mb, tmp_path_factory):
    work = tmp_path_factory.mktemp("quality")
    recipe = load_recipe(quality_recipe(work, sample_3mb))
    model = quality_training.train(recipe)
    qm.write_model(model, qm.model_path(recipe))
    return {"recipe": recipe, "model": model, "truth": json.loads((sample_3mb / "ground_truth.json").read_text())}


def test_classifier_trained_from_the_recipe_separates_planted_low_quality(trained):
    report = quality_reports.score_against_truth(trained["recipe"], trained["truth"])
    web = report["sources"]["web"]
    assert web["low_quality"] >= 8 and web["clean"] > 100
    assert web["roc_auc"] >= 0.9
    assert set(web["by_kind"]) == {"boilerplate", "spam", "filler"}
    assert all(k["roc_auc"] >= 0.9 for k in web["by_kind"].values())
    # It was trained on the references and a sample of the scored source, nothing else.
    assert trained["model"].info["references"] == ["books", "papers"]
    assert trained["model"].info["negatives_from"] == ["web"]


def test_retraining_gives_a_byte_identical_model_and_identical_scores(trained, tmp_path):
    recipe, first = trained["recipe"], trained["model"]
    again = quality_training.train(recipe)
    assert again.to_bytes() == first.to_bytes()
    path = tmp_path / "copy.bin"
    qm.write_model(again, str(path))
    texts = [d.text for d in quality_training.source_documents(recipe, "web")][:50]
    assert np.array_equal(qm.load_model(str(path)).score_many(texts), first.score_many(texts))
    # Another seed samples other negatives where it can (the references here are all used).
    other = recipe.model_copy(update={"quality_model": recipe.quality_model.model_copy(update={"max_documents": 100, "seed": 1})})
    base = recipe.model_copy(update={"quality_model": recipe.quality_model.model_copy(update={"max_documents": 100})})
    assert quality_training.train(other).to_bytes() != quality_training.train(base).to_bytes()


def test_filter_stamps_every_score_and_records_it_for_the_dropped(trained):
    from datatrove.data import Document

    path = qm.model_path(trained["recipe"])
    spam = {e["id"] for e in trained["truth"]["low_quality"]}
    docs = [Document(text=d.text, id=d.id, metadata={}) for d in quality_training.source_documents(trained["recipe"], "web")]
    kept = {d.id for d in qm.QualityClassifierFilter(threshold=THRESHOLD, model=path).run(iter(docs))}
    assert all(isinstance(d.metadata[META_QUALITY_SCORE], float) for d in docs)
    dropped = [d for d in docs if d.id not in kept]
    assert spam <= {d.id for d in dropped}
    for d in dropped:
        assert json.loads(d.metadata[META_FILTER_VALUE]) == {"score": d.metadata[META_QUALITY_SCORE], "threshold": THRESHOLD}
    assert len(dropped) < len(docs) * 0.2
    # Scored in batches, each document gets the score it gets alone.
    model = qm.load_model(path)
    assert all(d.metadata[META_QUALITY_SCORE] == round(model.score(d.text), 6) for d in docs[::25])
    # Threshold 0: scores only (for buckets), nothing dropped.
    fresh = [Document(text=d.text, id=d.id, metadata={}) for d in docs[:30]]
    assert len(list(qm.QualityClassifierFilter(threshold=0.0, model=path).run(iter(fresh)))) == 30


def test_a_corrupt_or_foreign_model_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a model")
    with pytest.raises(qm.QualityModelError, match=r"model.bin: not a mix_pipeline quality model"):
        qm.load_model(str(bad))
    bad.write_bytes(qm.MAGIC + b'{"hash_bits": 10, "ngrams": 2}\n' + b"\0" * 12)
    with pytest.raises(qm.QualityModelError, match="corrupt quality model file"):
        qm.load_model(str(bad))


@pytest.mark.parametrize(
    ("extra", "quality", "web_filters", "message"),
    [
        ("", "{references: [books], bogus: 1}", None, "quality_model.bogus: unknown key"),
        ("", "{references: [nope]}", None, "quality_model.references: unknown source 'nope'"),
        ("", "{references: [books, web]}", None, "web cannot be both a reference and a scored source"),
        ("", "{references: [books], buckets: {a: 0.2, b: 0.5}}", None, "one of them 0"),
        ("", None, "[{quality_classifier: {threshold: 1.5}}]", r"threshold must be within \[0, 1\]"),
        ("mixtures: {m: {total: 10, weights: {web@top: 1}}}", None, None, "mixtures.m.weights.web@top: unknown bucket 'top'"),
        ("mixtures: {m: {total: 10, weights: {books@high: 1}}}", None, None, "source 'books' has no quality_classifier filter"),
        ("mixtures: {m: {total: 10, weights: {web: 0.5, web@high: 0.5}}}", None, None, "weight the whole source or its buckets"),
    ],
)
def test_bad_quality_settings_name_the_key(sample_3mb, tmp_path, extra, quality, web_filters, message):
    kwargs = {"web_filters": web_filters} if web_filters else {}
    with pytest.raises(RecipeError, match=message):
        load_recipe(quality_recipe(tmp_path, sample_3mb, extra, quality=quality, **kwargs))


def test_a_classifier_without_a_model_is_refused(sample_3mb, tmp_path):
    path = quality_recipe(tmp_path, sample_3mb)
    text = path.read_text()
    path.write_text(text[: text.index("quality_model:")])
    with pytest.raises(RecipeError, match="quality_classifier: needs a top-level quality_model section"):
        load_recipe(path)


def test_a_named_model_file_is_used_instead_of_training(trained, sample_3mb, tmp_path):
    (tmp_path / "mine.bin").write_bytes(trained["model"].to_bytes())
    recipe = load_recipe(quality_recipe(tmp_path, sample_3mb, quality="{model: mine.bin}"))
    assert not quality_training.needs_training(recipe)
    assert qm.model_path(recipe) == str(tmp_path / "mine.bin")
    assert recipe.sources["web"].filters[0].params["model"] == str(tmp_path / "mine.bin")
    with pytest.raises(RecipeError, match="quality_model.model: no such file"):
        load_recipe(quality_recipe(tmp_path, sample_3mb, quality="{model: missing.bin}"))


def test_bucket_mixture_hits_its_weights_and_the_manifest_lists_the_buckets(trained, sample_3mb, tmp_path):
    weights = {"web@high": 0.5, "web@mid": 0.3, "books": 0.2}
    mixture = f"""
        mixtures:
          best:
            unit: tokens
            total: 150000
            weights: {json.dumps(weights)}
            max_epochs: 8
            seed: 3
    """
    recipe = load_recipe(quality_recipe(tmp_path, sample_3mb, mixture))
    qm.write_model(trained["model"], qm.model_path(recipe))
    env = StageEnv(recipe, runner=local_runner(1), log=lambda m: None)
    for source in ("web", "books"):
        run_raw(env, source)
        run_filtered(env, source)
    run_dedup_index(env)
    for source in ("web", "books"):
        run_deduplicated(env, source)
    # The planted spam left at the filter, its score recorded next to the reason.
    dropped = [r for p in list_parts(os.path.join(layout.partition_dir(env.root, layout.DROPPED_DIR, "web", "default"), "quality_classifier"))
               for r in pq.read_table(p, columns=["id", "metadata"]).to_pylist()]
    assert {e["id"] for e in trained["truth"]["low_quality"]} <= {r["id"] for r in dropped}
    for r in dropped:
        meta = json.loads(r["metadata"])
        assert meta[META_FILTER_REASON] == "quality_below_threshold"
        assert json.loads(meta[META_FILTER_VALUE])["score"] == meta[META_QUALITY_SCORE] < THRESHOLD

    manifest = run_mixture(env, "best").stats
    assert manifest["quality_buckets"] == {
        "web@high": {"source": "web", "bucket": "high", "min_score": 0.49, "max_score": None},
        "web@mid": {"source": "web", "bucket": "mid", "min_score": 0.3, "max_score": 0.49},
    }
    for name, weight in weights.items():
        assert manifest["sources"][name]["achieved_weight"] == pytest.approx(weight, rel=0.01)
    # Every row drawn for a bucket has a score in the bucket's range, and keeps its source's name.
    out = Path(recipe.data_root_path) / "mixtures" / "best"
    rows = [r for rel in manifest["splits"]["train"]["files"] for r in pq.read_table(out / rel).to_pylist()]
    assert {r["source"] for r in rows} == {"web", "books"}
    scores = [json.loads(r["metadata"])[META_QUALITY_SCORE] for r in rows if r["source"] == "web"]
    assert min(scores) >= 0.3 and any(s >= 0.49 for s in scores) and any(s < 0.49 for s in scores)
