"""Quality gates: a bad stage fails its blocking check, downstream does not run, and what was
published before stays byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mix_pipeline.core.gates.checks import CheckOutcome
from mix_pipeline.sample.corpus import build_sample_corpus
from mix_pipeline.defs import build_definitions
from mix_pipeline.defs.checks import to_result
from mix_pipeline.defs.partitions import register
from mix_pipeline.defs.runner import run_recipe
from mix_pipeline.names import DEDUP_INDEX, DEDUPLICATED, FILTERED, MIXTURE, RAW
from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline_tests.conftest import prose_doc, write_jsonl, write_recipe
from mix_pipeline_tests.helpers import check_statuses, demo_like_recipe


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
        result = materialize(recipe_path, instance, [RAW, FILTERED], "web:default")
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
    result = materialize(root / "recipe.yaml", instance, [RAW, FILTERED], "web:default")
    # A refused gate publishes nothing and the run succeeds: `filtered` was skipped, so its checks
    # read "Skipped" on the partition, not "Execution failed" (what a failed run makes of them).
    assert result.success
    statuses = check_statuses(instance, RAW, "web:default")
    assert statuses["raw_text_not_empty"] == "FAILED" and statuses["raw_quarantine_rate"] == "SUCCEEDED"
    assert set(check_statuses(instance, FILTERED, "web:default").values()) == {"SKIPPED"}
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
    result = materialize(root / "recipe.yaml", instance, [FILTERED, DEDUPLICATED], "web:default")
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
    assert materialize(root / "recipe.yaml", instance, [RAW, FILTERED], "web:default").success
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
    assert materialize(root / "recipe.yaml", instance, [RAW, FILTERED], "web:default").success
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
    assert result.success  # refused: nothing published, the failed check is the record of it
    check = evaluations(result)[f"{MIXTURE}.weights_within_tolerance"]
    assert not check.passed and "is short: the target needs" in check.description
    # It cannot be planned, so only its weights were checked: the other checks did not run.
    statuses = check_statuses(instance, MIXTURE, "general")
    assert statuses.pop("weights_within_tolerance") == "FAILED" and set(statuses.values()) == {"SKIPPED"}
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


def test_a_refused_gate_in_a_cli_run_prints_one_line_and_skips_the_checks_after_it(tmp_path):
    """`mix-pipeline run` with a snapshot of half broken lines: raw's gate refuses it; the console
    says so in one line per failed check and one for the stage, with no stack trace (no Dagster
    internals, no `nanobind: leaked …` at exit); on that partition raw's check is failed and
    `filtered`'s checks, which never ran, are skipped."""
    inputs = tmp_path / "inputs"
    for snapshot, offset in (("2024-01-01", 0), ("2024-01-08", 50)):
        lines = [json.dumps({"id": f"{snapshot}-{i}", "text": prose_doc(offset + i)}) for i in range(30)]
        if offset:  # every other line is not JSON: quarantined as unreadable, half the records
            lines = [line if i % 2 == 0 else "{broken" for i, line in enumerate(lines)]
        (inputs / "web" / snapshot).mkdir(parents=True)
        (inputs / "web" / snapshot / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    write_jsonl(inputs / "books" / "part-0.jsonl", [{"id": f"b{i}", "text": prose_doc(100 + i, 20)} for i in range(12)])
    recipe = write_recipe(tmp_path, f"""
        name: refused
        data_root: {tmp_path / 'data'}
        allowed_roots: [{inputs}]
        executor: {{kind: local, tasks: 1, workers: 1}}
        sources:
          web: {{path: "{inputs}/web/{{snapshot}}/*.jsonl", filters: []}}
          books: {{path: "{inputs}/books/*.jsonl", filters: []}}
        mixtures:
          general: {{unit: documents, total: 40, weights: {{web: 0.6, books: 0.4}}, max_epochs: 4, seed: 1}}
        """)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    done = subprocess.run([str(Path(sys.executable).parent / "mix-pipeline"), "run", "--recipe", str(recipe)],
                          capture_output=True, text=True, env={**os.environ, "DAGSTER_HOME": str(home)}, timeout=600)
    out, err = done.stdout, done.stderr
    assert done.returncode == 1, out[-3000:] + err[-3000:]
    assert [line.strip() for line in out.splitlines() if "check FAILED" in line] == [
        "check FAILED: raw.raw_quarantine_rate: quarantined share of 30 records = 0.5, expected ≤ 0.05"]
    assert "raw: quality gate failed (raw_quarantine_rate), output not published" in out
    errors = [line for line in err.splitlines() if " - ERROR - " in line]
    assert len(errors) == 1 and "raw[web:2024-01-08]: quality gate failed, output not published" in errors[0], err[-3000:]
    for noise in ("Traceback", "Stack Trace", "dagster._core", "nanobind", "leaked"):
        assert noise not in err, err[-3000:]
    assert (tmp_path / "data" / "mixtures" / "general" / "manifest.json").exists()  # the rest went on
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert check_statuses(instance, RAW, "web:2024-01-08")["raw_quarantine_rate"] == "FAILED"
        skipped = check_statuses(instance, FILTERED, "web:2024-01-08")
        assert skipped and set(skipped.values()) == {"SKIPPED"}, skipped
        assert set(check_statuses(instance, FILTERED, "web:2024-01-01").values()) == {"SUCCEEDED"}


def test_observed_values_read_as_text_with_a_plottable_entry_per_number():
    per_filter = to_result(CheckOutcome("filter_drop_rate", True, "error", {"language": 0.5123456, "c4": 0.02},
                                        "language ≤ 0.95; c4 ≤ 0.95", "ok"))
    assert per_filter.metadata["observed"] == dg.MetadataValue.text("language: 0.5123; c4: 0.02")
    assert per_filter.metadata["observed/language"] == dg.MetadataValue.float(0.5123456)
    assert per_filter.metadata["observed/c4"] == dg.MetadataValue.float(0.02)
    conservation = to_result(CheckOutcome("conservation", False, "error", {"books": "balanced", "web": "not balanced"},
                                          "records = kept + dropped + duplicate + quarantined", "web: 5 records but 1+1+1+1"))
    assert conservation.metadata["observed"] == dg.MetadataValue.text("books: balanced; web: not balanced")
    assert not [k for k in conservation.metadata if k.startswith("observed/")]
    assert to_result(CheckOutcome("splits_disjoint", True, "error", 0, "= 0", "ok")).metadata["observed"] == dg.MetadataValue.int(0)
