"""Decontamination inside the filtered stage, and the catalog's record of every drop: real
datatrove runs on tiny corpora, no Dagster."""

from __future__ import annotations

import json
import re

import duckdb
import pyarrow.parquet as pq
import pytest

from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.filters.decontamination import EvalIndex
from mix_pipeline.core.io.documents import list_parts
from mix_pipeline.core.stages import StageEnv, dropped_files, kept_files, local_runner, run_filtered, run_raw
from mix_pipeline.recipe import RecipeError, load_recipe
from mix_pipeline_tests.conftest import prose_doc, write_jsonl, write_recipe

QA = [
    {"id": "qa-1", "question": "Which river did the surveyors follow north past the old granite quarry at dawn?",
     "answer": "They followed the silver river until it met the northern lake beside the quarry road."},
    {"id": "qa-2", "question": "Short one?", "answer": "Yes."},
]
READING = [{"id": "r-1", "text": "Nine lanterns hung from the bridge while the ferryman counted coins beneath "
                                 "a patient violet sky and the harbour bells rang twice for the evening tide."}]
# qa-1 as the QA set indexes it: question and answer are separate texts (text_field: [question, answer]).
QA1_ANSWER = QA[0]["answer"]

RECIPE = """
name: t
data_root: ./data
executor: {{kind: local, tasks: 1, workers: 1}}
sources:
  web:
    path: "web/*.jsonl"
    filters: [{{language: {{languages: [en]}}}}, {{safety: {{word_lists: [lists/extra.txt]}}}}, pii]
    # A tiny corpus salted with copies: far above the built-in decontamination band.
    checks: {{filter_drop_rate: {{per_filter: {{decontamination: {{max_rate: 0.5}}}}}}}}
decontamination: {{eval_sets: ["evals/*.jsonl"], ngram: 13, mode: {mode}, text_field: [text, question, answer]}}
"""


def corpus(folder):
    docs = [{"id": f"clean-{i:02d}", "text": prose_doc(i)} for i in range(20)]
    docs += [
        # The answer inside a longer page, with different case and punctuation.
        {"id": "copy-qa", "text": prose_doc(30) + "\n" + QA1_ANSWER.upper().replace(" ", ", ", 3) + "\n" + prose_doc(31)},
        {"id": "copy-reading", "text": prose_doc(32) + "\n" + READING[0]["text"] + "\n" + prose_doc(33)},
        # Twelve words of the passage are not a 13-gram: kept.
        {"id": "near-miss", "text": prose_doc(34) + "\n" + " ".join(READING[0]["text"].split()[:12]) + "\n" + prose_doc(35)},
        # Nothing but the eval text: in remove_span mode nothing is left, so it is dropped.
        {"id": "only-eval", "text": READING[0]["text"]},
        {"id": "german", "text": "Die Regierung präsentiert ein neues Projekt. Die Kinder bauen alte Häuser im Zentrum der Stadt."},
        {"id": "rude", "text": prose_doc(36) + " Zorblax zorblax zorblax, the whole zorblax plan."},
        {"id": "card", "text": prose_doc(37) + " Pay with 4111 1111 1111 1111 today."},
    ]
    write_jsonl(folder / "web" / "a.jsonl", docs)
    write_jsonl(folder / "evals" / "qa.jsonl", QA)
    write_jsonl(folder / "evals" / "reading.jsonl", READING)
    (folder / "lists").mkdir()
    (folder / "lists" / "extra.txt").write_text("zorblax\n")


def run(folder, mode: str):
    corpus(folder)
    recipe = load_recipe(write_recipe(folder, RECIPE.format(mode=mode)))
    env = StageEnv(recipe, runner=local_runner(1), log=lambda m: None)
    run_raw(env, "web")
    result = run_filtered(env, "web")
    con = duckdb.connect(str(folder / "catalog.duckdb"))
    per_filter = catalog.record_filtered(con, "web", "default", kept_files(env, "web"), dropped_files(env, "web"))
    return env, result, con, per_filter


@pytest.fixture(scope="module")
def drop_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("drop"), "drop")


def kept_texts(env) -> dict[str, str]:
    return {r["id"]: r["text"] for f in kept_files(env, "web") for r in pq.read_table(f).to_pylist()}


def test_drop_mode_removes_contaminated_documents_with_provenance(drop_run):
    env, result, con, per_filter = drop_run
    fates = {i: (r, d) for i, r, d in con.execute(
        "SELECT id, reason, detail FROM document_fates WHERE fate = 'dropped'").fetchall()}
    assert fates["copy-qa"][0] == "decontamination:qa" and fates["copy-reading"][0] == "decontamination:reading"
    detail = json.loads(fates["copy-qa"][1])
    assert detail["eval_id"] == "qa-1" and len(detail["ngram"].split()) == 13 and detail["matched_ngrams"] >= 1
    assert detail["ngram"] in " ".join(re.findall(r"\w+", QA1_ANSWER.lower()))
    assert fates["only-eval"][0] == "decontamination:reading"
    assert "near-miss" in kept_texts(env)
    # The other filters' drops carry what they measured, too.
    assert fates["german"][0] == "language:language_de" and json.loads(fates["german"][1])["language"] == "de"
    assert fates["rude"][0] == "safety:offensive_words" and json.loads(fates["rude"][1])["flagged_words"] == 4
    # Counted per eval set, in the stats and the catalog.
    assert result.stats["dropped_by_decontamination"] == 3 == per_filter["decontamination"]
    assert result.stats["contaminated_qa"] == 1 and result.stats["contaminated_reading"] == 2
    assert result.stats["pii_credit_card"] == 1 and "4111" not in kept_texts(env)["card"]
    counts = {(f, k): (d, m) for f, k, d, m in con.execute(
        "SELECT filter, kind, documents, matches FROM filter_counts WHERE source = 'web'").fetchall()}
    assert counts[("decontamination", "reading")][0] == 2 and counts[("pii", "credit_card")] == (1, 1)
    assert counts[("safety", "flagged")] == (1, 4)
    shares = dict(con.execute("SELECT language, share FROM language_shares").fetchall())
    assert shares["en"] > 0.9 and "de" in shares


def test_per_filter_drops_add_up_to_the_stage_and_every_drop_has_a_reason(drop_run):
    env, result, con, per_filter = drop_run
    stats = result.stats
    by_filter = dict(con.execute("SELECT filter, documents FROM filter_drops WHERE source = 'web'").fetchall())
    assert sum(by_filter.values()) == stats["dropped"] == sum(per_filter.values())
    assert by_filter == {f: n for f, n in per_filter.items() if n} == {
        k.removeprefix("dropped_by_"): v for k, v in stats.items() if k.startswith("dropped_by_") and v}
    assert stats["input_documents"] == stats["documents"] + stats["dropped"]
    assert con.execute("SELECT count(*) FROM document_fates WHERE fate = 'dropped' AND "
                       "(reason IS NULL OR reason NOT LIKE '%:%')").fetchall()[0][0] == 0
    samples = catalog.dropped_samples(con, dropped_files(env, "web"), per_filter=1)
    assert {s["filter"] for s in samples} == set(by_filter) and all(s["reason"] and s["text"] for s in samples)


def test_remove_span_mode_cuts_the_copy_and_keeps_the_rest(tmp_path):
    env, result, con, _ = run(tmp_path, "remove_span")
    texts = kept_texts(env)
    index = EvalIndex(sorted(str(p) for p in (tmp_path / "evals").glob("*.jsonl")), 13, ["text", "question", "answer"])
    for doc_id in ("copy-qa", "copy-reading"):
        assert doc_id in texts and not index.matches(texts[doc_id])[1], doc_id
        assert prose_doc(30 if doc_id == "copy-qa" else 32).splitlines()[0] in texts[doc_id]
    reasons = dict(con.execute("SELECT id, reason FROM document_fates WHERE fate = 'dropped'").fetchall())
    assert reasons["only-eval"] == "decontamination:reading"
    assert result.stats["contaminated_reading"] == 2 and result.stats["dropped_by_decontamination"] == 1
    assert index.too_short == {"qa": 2, "reading": 0}  # qa-2's question and answer are under 13 words


def test_recipe_errors_name_the_decontamination_and_word_list_keys(tmp_path):
    corpus(tmp_path)
    body = RECIPE.format(mode="drop")
    with pytest.raises(RecipeError, match=r"decontamination.eval_sets\[0\]: 'nope/\*.jsonl' matches no file"):
        load_recipe(write_recipe(tmp_path, body.replace("evals/*.jsonl", "nope/*.jsonl")))
    with pytest.raises(RecipeError, match=r"decontamination.text_field: name at least one field"):
        load_recipe(write_recipe(tmp_path, body.replace("text_field: [text, question, answer]", "text_field: []")))
    with pytest.raises(RecipeError, match=r"decontamination.mode: Input should be 'drop' or 'remove_span'"):
        load_recipe(write_recipe(tmp_path, body.replace("mode: drop", "mode: cut")))
    with pytest.raises(RecipeError, match=r"sources.web.filters\[1\].safety.word_lists: no such file .*missing.txt"):
        load_recipe(write_recipe(tmp_path, body.replace("lists/extra.txt", "lists/missing.txt")))
    with pytest.raises(RecipeError, match="code_quality replaces the prose filters"):
        load_recipe(write_recipe(tmp_path, body.replace("pii]", "pii, code_quality, c4]")))
    with pytest.raises(RecipeError, match="per_filter.decontaminaton: unknown filter"):
        load_recipe(write_recipe(tmp_path, body.replace("{decontamination: {max_rate", "{decontaminaton: {max_rate")))
    (tmp_path / "more").mkdir()
    write_jsonl(tmp_path / "more" / "qa.jsonl", QA)
    with pytest.raises(RecipeError, match="two eval sets are named 'qa'"):
        load_recipe(write_recipe(tmp_path, body.replace('["evals/*.jsonl"]', '["evals/*.jsonl", "more/*.jsonl"]')))
    assert list_parts(str(tmp_path / "nothing")) == []
