"""Quality gates: a bad stage fails its blocking check, downstream does not run, and what was
published before stays byte-identical."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from mix_pipeline.core.sample_data import build_sample_corpus
from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.partitions import register
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline.names import DEDUP_INDEX, DEDUPLICATED, FILTERED, MIXTURE, RAW
from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline_tests.conftest import write_jsonl
from mix_pipeline_tests.helpers import demo_like_recipe


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A good sample corpus run end to end once; each test works on its own copy."""
    sample = tmp_path_factory.mktemp("gate_sample")
    build_sample_corpus(sample, size_mb=1, seed=3)
    work = tmp_path_factory.mktemp("gate_base")
    (work / "recipe.yaml").write_text(demo_like_recipe(sample, work / "data", total=120_000, chat=False))
    with dg.instance_for_test() as instance:
        run_recipe(str(work / "recipe.yaml"), instance=instance)
    return work


@pytest.fixture
def copy(baseline, tmp_path):
    """The baseline's data under a new root, with a recipe pointing at it and a fresh instance."""
    shutil.copytree(baseline / "data", tmp_path / "data")
    text = (baseline / "recipe.yaml").read_text().replace(str(baseline / "data"), str(tmp_path / "data"))
    (tmp_path / "recipe.yaml").write_text(text)
    with dg.instance_for_test() as instance:
        yield tmp_path, instance


def materialize(recipe_path: Path, instance, selection: list[str], partition: str | None):
    recipe = load_recipe(recipe_path)
    defs = build_definitions(recipe)
    register(instance, recipe)
    return dg.materialize(
        list(defs.assets), selection=selection, partition_key=partition, instance=instance,
        resources=defs.resources, raise_on_error=False,
    )


def evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}.{e.asset_check_key.name}": e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_good_run_passes_every_check(baseline):
    with dg.instance_for_test() as instance:
        recipe_path = baseline / "recipe.yaml"
        result = materialize(recipe_path, instance, [RAW, FILTERED], "web|default")
        assert result.success
        evals = evaluations(result)
        assert {k for k in evals} >= {f"{RAW}.raw_quarantine_rate", f"{FILTERED}.filter_drop_rate", f"{FILTERED}.language_share"}
        assert all(e.passed for e in evals.values()), [k for k, e in evals.items() if not e.passed]


def test_raw_gate_stops_empty_texts(copy):
    root, instance = copy
    recipe = load_recipe(root / "recipe.yaml")
    bad_input = root / "bad_web"
    write_jsonl(bad_input / "a.jsonl", [{"id": str(i), "text": "   "} for i in range(50)])
    text = (root / "recipe.yaml").read_text()
    web_glob = recipe.sources["web"].path
    (root / "recipe.yaml").write_text(text.replace(web_glob, str(bad_input / "*.jsonl")))
    before = tree_digest(root / "data" / "raw" / "web")
    result = materialize(root / "recipe.yaml", instance, [RAW, FILTERED], "web|default")
    assert not result.success
    evals = evaluations(result)
    # Empty records lose no text, so the quarantine rate does not count them; a source with
    # nothing but empty records is stopped for having no documents, the reason in the message.
    failed = evals[f"{RAW}.raw_text_not_empty"]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert "all 50 record(s) were quarantined (empty_text: 50)" in failed.description
    assert evals[f"{RAW}.raw_quarantine_rate"].passed
    assert materialized(result) == set()
    assert tree_digest(root / "data" / "raw" / "web") == before


def test_filter_gate_stops_a_filter_that_drops_everything(copy):
    root, instance = copy
    text = (root / "recipe.yaml").read_text()
    (root / "recipe.yaml").write_text(text.replace("gopher_quality, c4", "{gopher_quality: {min_doc_words: 100000}}, c4"))
    before = tree_digest(root / "data" / "filtered" / "web")
    mixture_before = tree_digest(root / "data" / "mixtures")
    result = materialize(root / "recipe.yaml", instance, [FILTERED, DEDUPLICATED], "web|default")
    evals = evaluations(result)
    drop = evals[f"{FILTERED}.filter_drop_rate"]
    assert not drop.passed and "gopher_quality dropped 100.0%" in drop.description
    assert "gopher_short_doc" in drop.metadata["examples"].value
    assert not evals[f"{FILTERED}.kept_volume"].passed
    assert materialized(result) == set()  # deduplicated never ran
    assert tree_digest(root / "data" / "filtered" / "web") == before
    assert tree_digest(root / "data" / "mixtures") == mixture_before


def _giant_cluster(root: Path) -> None:
    """Replace the web source with 150 copies of one page, each with one word changed."""
    base = " ".join(f"word{i % 97} line{i}" for i in range(400))
    docs = [{"id": f"copy-{i:03d}", "text": base.replace(f"line{i}", f"edit{i}") } for i in range(150)]
    write_jsonl(root / "giant" / "a.jsonl", docs)
    text = (root / "recipe.yaml").read_text()
    recipe = load_recipe(root / "recipe.yaml")
    text = text.replace(recipe.sources["web"].path, str(root / "giant" / "*.jsonl"))
    # Only the dedup gate is under test: let these synthetic pages through the prose filters.
    web_filters = "filters: [{language: {languages: [en]}}, safety, gopher_repetition, gopher_quality, c4, fineweb, pii]"
    assert web_filters in text
    text = text.replace(web_filters, "filters: []")
    (root / "recipe.yaml").write_text(text)


def test_dedup_gate_stops_a_runaway_cluster(copy):
    root, instance = copy
    _giant_cluster(root)
    assert materialize(root / "recipe.yaml", instance, [RAW, FILTERED], "web|default").success
    before = tree_digest(root / "data" / "dedup_index")
    result = materialize(root / "recipe.yaml", instance, [DEDUP_INDEX], None)
    check = evaluations(result)[f"{DEDUP_INDEX}.max_cluster_size"]
    assert not check.passed and "of web's documents), expected ≤ 100 documents or ≤ 0.5 of a source" in check.description
    assert int(check.metadata["observed"].value) >= 140  # nearly all 150 copies in one cluster
    assert "copy-" in check.metadata["examples"].value
    assert materialized(result) == set()
    assert tree_digest(root / "data" / "dedup_index") == before


def test_recipe_can_loosen_a_threshold_or_demote_a_check_to_warn(copy):
    root, instance = copy
    _giant_cluster(root)
    assert materialize(root / "recipe.yaml", instance, [RAW, FILTERED], "web|default").success
    text = (root / "recipe.yaml").read_text()
    warn = text.replace("priority: [books, papers, code, web]",
                        "priority: [books, papers, code, web]\n  checks: {max_cluster_size: {severity: warn}}")
    (root / "recipe.yaml").write_text(warn)
    result = materialize(root / "recipe.yaml", instance, [DEDUP_INDEX], None)
    check = evaluations(result)[f"{DEDUP_INDEX}.max_cluster_size"]
    assert result.success and not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    loose = text.replace("priority: [books, papers, code, web]",
                         "priority: [books, papers, code, web]\n  checks: {max_cluster_size: {max_size: 200}}")
    (root / "recipe.yaml").write_text(loose)
    result = materialize(root / "recipe.yaml", instance, [DEDUP_INDEX], None)
    assert result.success and evaluations(result)[f"{DEDUP_INDEX}.max_cluster_size"].passed


def test_mixture_gate_keeps_the_previous_mixture(copy):
    root, instance = copy
    before = tree_digest(root / "data" / "mixtures" / "general")
    text = (root / "recipe.yaml").read_text()
    (root / "recipe.yaml").write_text(text.replace("total: 120000", "total: 50000000"))
    result = materialize(root / "recipe.yaml", instance, [MIXTURE], "general")
    assert not result.success
    check = evaluations(result)[f"{MIXTURE}.weights_within_tolerance"]
    assert not check.passed and "is short: the target needs" in check.description
    assert materialized(result) == set()
    assert tree_digest(root / "data" / "mixtures" / "general") == before
    assert json.loads((root / "data" / "mixtures" / "general" / "manifest.json").read_text())["total_target"] == 120000


def test_unknown_check_names_are_recipe_errors(copy):
    root, _ = copy
    text = (root / "recipe.yaml").read_text()
    (root / "recipe.yaml").write_text(text.replace("seed: 1234", "seed: 1234\n    checks: {weights_within_tolerence: {}}"))
    with pytest.raises(RecipeError, match="mixtures.general.checks: weights_within_tolerence: unknown check"):
        load_recipe(root / "recipe.yaml")
    (root / "recipe.yaml").write_text(text.replace("seed: 1234", "seed: 1234\n    checks: {conservation: {severity: loud}}"))
    with pytest.raises(RecipeError, match="conservation.severity: must be 'error' or 'warn'"):
        load_recipe(root / "recipe.yaml")
