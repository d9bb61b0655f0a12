"""Drift profiles the filtered stage's input as well as what it kept."""

from __future__ import annotations

from random import Random

from mix_pipeline.core.gates import drift
from mix_pipeline.core.stages import StageEnv, local_runner, run_filtered, run_raw
from mix_pipeline.recipe import load_recipe
from mix_pipeline.sample.english import english_model
from mix_pipeline.sample.languages import LANGUAGES, foreign_doc
from mix_pipeline_tests.conftest import write_jsonl, write_recipe


def test_a_snapshot_turning_one_third_non_english_drifts_in_its_language_component(tmp_path):
    rng, model = Random(5), english_model()
    english = [{"id": f"en-{i}", "text": model.body(rng, 1500, (3, 6), "\n")} for i in range(120)]
    foreign = [{"id": f"xx-{i}", "text": foreign_doc(LANGUAGES[i % len(LANGUAGES)], rng)} for i in range(30)]
    write_jsonl(tmp_path / "crawl" / "2024-01" / "a.jsonl", english[:60])
    write_jsonl(tmp_path / "crawl" / "2024-02" / "a.jsonl", english[60:90] + foreign[:15])  # one third foreign
    recipe_path = write_recipe(tmp_path, """
        name: drift
        sources:
          web:
            path: "crawl/{snapshot}/*.jsonl"
            filters: [{language: {languages: [en]}}]
    """)
    env = StageEnv(load_recipe(recipe_path), runner=local_runner(1), log=lambda m: None)
    profiles = {}
    for snapshot in ("2024-01", "2024-02"):
        run_raw(env, "web", snapshot)
        result = run_filtered(env, "web", snapshot, profiles=profiles)
        profiles[snapshot] = result.profile
    base, shifted = profiles["2024-01"], profiles["2024-02"]
    # What was kept is English in both: the kept-language distribution cannot see the shift ...
    assert base["language"] == shifted["language"] == {"en": 1.0}
    # ... the stage input can.
    assert abs(shifted["input_language"]["en"] - 2 / 3) < 1e-5 and base["input_language"] == {"en": 1.0}
    scores = drift.drift(shifted, base)
    assert scores["language"] > 0.2 and scores["input_language_distance"] == scores["language"], scores
    check = next(c for c in result.checks if c.name == "drift")
    assert f"language {scores['language']:.3f}" in check.message and check.observed >= scores["language"]
    assert not check.passed and not check.blocks  # warns (and the sensor re-mixes); never blocks


def test_profiles_stored_before_input_distributions_still_compare():
    old = {"length": {"10": 1.0}, "language": {"en": 1.0}, "fates": {"kept": 1.0}}
    new = {**old, "input_length": {"10": 0.5, "11": 0.5}, "input_language": {"en": 0.5, "fr": 0.5}}
    assert drift.drift(new, old) == {"length": 0.0, "language": 0.0, "fates": 0.0, "score": 0.0}
    assert drift.drift(new, new)["score"] == 0.0
    assert drift.js_distance({"a": 1.0}, {"b": 1.0}) == 1.0
