"""The stages run directly (no Dagster) on the sample corpus with near duplicates kept, a local
BPE tokenizer, and every output format on: leak-free splits, token-exact counts, tokenized
Megatron files, trainer exports, JSONL, and shards that `datasets` loads."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from mix_pipeline import layout
from mix_pipeline.core.io.documents import list_parts
from mix_pipeline.core.mixing.exports import read_idx
from mix_pipeline.core.mixing.pools import Pool
from mix_pipeline.core.mixing.splits import SPLITS, split_codes
from mix_pipeline.core.stages import (
    StageEnv,
    local_runner,
    run_mixture,
)
from mix_pipeline.core.mixing.tokens import TokenCounter
from mix_pipeline.recipe import OutputsSpec, load_recipe
from mix_pipeline_tests.conftest import EOS, train_bpe
from mix_pipeline_tests.helpers import document_stages

VALIDATION, TEST = 0.25, 0.25


@pytest.fixture(scope="module")
def built(sample_3mb, tmp_path_factory):
    work = tmp_path_factory.mktemp("outputs")
    truth = json.loads((sample_3mb / "ground_truth.json").read_text())
    books = pq.read_table(next((sample_3mb / "books").glob("*.parquet")), columns=["text"])
    train_bpe(books["text"].to_pylist(), work / "tokenizer.json")
    documents = sum(truth["counts"][s]["documents"] for s in ("web", "books", "papers"))
    (work / "recipe.yaml").write_text(textwrap.dedent(f"""
        name: outputs
        data_root: data
        allowed_roots: ["{sample_3mb}"]
        tokenizer: {{kind: hf, path: tokenizer.json, eos_token: "{EOS}"}}
        executor: {{kind: local, tasks: 2, workers: 1}}
        sources:
          web: {{path: "{sample_3mb}/web/*.jsonl.gz"}}
          books: {{path: "{sample_3mb}/books/*.parquet", format: parquet}}
          papers: {{path: "{sample_3mb}/papers/*.jsonl.zst", checks: {{raw_length_bounds: {{severity: warn}}}}}}
        dedup:
          minhash: {{threshold: 0.7}}
          priority: [books, papers, web]
          remove: false
        mixtures:
          everything:
            unit: documents
            total: {documents}
            temperature: 1.0
            sources: {{web: {{}}, books: {{}}, papers: {{}}}}
            splits: {{validation: {VALIDATION}, test: {TEST}}}
            seed: 5
            shard_rows: 100
            outputs: {{jsonl: true, tokenized: true}}
    """))
    recipe = load_recipe(work / "recipe.yaml")
    env = StageEnv(recipe, runner=local_runner(1), log=lambda m: None)
    document_stages(env)
    manifests = {name: run_mixture(env, name).stats for name in recipe.mixtures}
    return {"env": env, "recipe": recipe, "truth": truth, "manifests": manifests,
            "out": Path(recipe.data_root_path) / "mixtures"}


def split_of_rows(out: Path, manifest: dict) -> dict[tuple[str, str], set[str]]:
    where: dict[tuple[str, str], set[str]] = {}
    for split in SPLITS:
        for rel in manifest["splits"][split]["files"]:
            table = pq.read_table(out / rel, columns=["source", "id"])
            for source, doc_id in zip(table["source"].to_pylist(), table["id"].to_pylist()):
                where.setdefault((source, doc_id), set()).add(split)
    return where


def test_planted_near_duplicates_never_straddle_splits(built):
    truth, out, manifest = built["truth"], built["out"] / "everything", built["manifests"]["everything"]
    pairs = [(p["source"], p["id"], p["of_source"], p["of_id"])
             for key in ("near_duplicates", "exact_duplicates", "cross_source_duplicates") for p in truth[key]]
    assert len(pairs) >= 10
    where = split_of_rows(out, manifest)
    # Dedup kept every copy (remove: false), and the mixture holds every document once.
    assert manifest["total_units"] == sum(truth["counts"][s]["documents"] for s in ("web", "books", "papers"))
    assert all(len(s) == 1 for s in where.values())
    for a_source, a_id, b_source, b_id in pairs:
        assert where[(a_source, a_id)] == where[(b_source, b_id)], (a_source, a_id, b_source, b_id)
    # The pairs were clustered (that is what keys them together) ...
    clusters = [r for f in sorted((Path(built["recipe"].data_root_path) / "dedup_index" / "clusters").rglob("*.parquet"))
                for r in pq.read_table(f).to_pylist()]
    survivor = {(r["source"], r["id"]): (r["duplicate_of_source"] or r["source"], r["duplicate_of"] or r["id"]) for r in clusters}
    assert {r["fate"] for r in clusters} == {"kept"}
    assert all(survivor[(a, i)] == survivor[(b, j)] for a, i, b, j in pairs)
    # ... and keyed on their own ids instead, some would have landed in different splits.
    def own_split(source, doc_id):
        return split_codes(Pool.from_ids(source, [doc_id], [1]).survivors(np.arange(1))[0], VALIDATION, TEST)[0]

    assert any(own_split(a, i) != own_split(b, j) for a, i, b, j in pairs)


def test_token_counts_are_the_local_tokenizers(built):
    env, manifest = built["env"], built["manifests"]["everything"]
    counter = TokenCounter("hf", env.recipe.resolve(env.recipe.tokenizer.path))
    assert manifest["tokenizer"].startswith("hf:sha256=")
    part = list_parts(layout.partition_dir(env.root, layout.DEDUPLICATED_DIR, "papers", "default"))[0]
    table = pq.read_table(part, columns=["text", "n_tokens"]).slice(0, 5)
    assert table["n_tokens"].to_pylist() == counter.count(table["text"].to_pylist())


def test_tokenized_outputs_hold_every_row_and_its_eos(built):
    out, manifest = built["out"] / "everything", built["manifests"]["everything"]
    for split in SPLITS:
        info = manifest["splits"][split]
        for source, entry in info["tokenized"].items():
            assert read_idx(str(out / (entry["prefix"] + ".idx"))) == {k: entry[k] for k in ("documents", "tokens", "dtype")}
            # One EOS after each document on top of its counted tokens.
            assert entry["documents"] == info["sources"][source]["rows"]
            assert entry["tokens"] == info["sources"][source]["tokens"] + entry["documents"]
            assert entry["dtype"] == "uint16"
            tokens = np.fromfile(out / (entry["prefix"] + ".bin"), dtype=np.uint16)
            assert (tokens == 0).sum() == entry["documents"]  # <|endoftext|> is id 0
    assert manifest["exports"]["tokenized"] is True


def test_exports_carry_the_target_weights(built):
    """Megatron and OLMo weights are the mixture's target weights (renormalised over the split's
    sources), not the rounding of one split; the files are the train split's tokenized files."""
    out, manifest = built["out"] / "everything", built["manifests"]["everything"]
    train = manifest["splits"]["train"]
    # The mixture counts documents; trainers weigh tokens: target weight × tokens per document.
    target = {s: row["target_weight"] * row["tokens"] / row["units"] for s, row in manifest["sources"].items()}
    words = (out / "megatron_data_path.txt").read_text().split()
    weights, prefixes = [float(w) for w in words[::2]], words[1::2]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert prefixes == [train["tokenized"][s]["prefix"] for s in sorted(train["tokenized"])]
    assert all((out / (p + ".bin")).exists() and (out / (p + ".idx")).exists() for p in prefixes)
    for w, source in zip(weights, sorted(train["tokenized"])):
        assert w == pytest.approx(target[source] / sum(target.values()), abs=1e-6)
    assert manifest["exports"]["megatron_data_path"]["train_data_path"] == " ".join(words)
    # Stratified splits: each split's shares are the target weights, within whole documents.
    for split in SPLITS:
        shares = manifest["splits"][split]["shares"]
        assert set(shares) == set(target) and sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
        units = manifest["splits"][split]["units"]
        assert shares == {s: round(v["units"] / units, 6) for s, v in manifest["splits"][split]["sources"].items()}
    # With half the mixture held out, each source's train units are half its units within a
    # document or two (whole documents; near-duplicate clusters are kept whole across sources).
    for s, row in manifest["sources"].items():
        got = manifest["splits"]["train"]["sources"][s]["units"]
        assert abs(got - (1 - VALIDATION - TEST) * row["units"]) <= 2, (s, got, row["units"])


# OLMo-core's olmo_core.data.source_mixture.SourceMixtureConfig fields (and nothing else: its
# Config.from_dict decodes strictly), and SourceMixtureList's one field.
OLMO_SOURCE_FIELDS = {"source_name", "target_ratio", "paths", "max_repetition_ratio", "max_source_fraction"}


def test_the_olmo_file_is_a_source_mixture_list_as_written(built):
    out, manifest = built["out"] / "everything", built["manifests"]["everything"]
    train = manifest["splits"]["train"]
    olmo = yaml.safe_load((out / "olmo_mix.yaml").read_text())
    assert set(olmo) == {"sources"}
    ratios = {e["source_name"]: e["target_ratio"] for e in olmo["sources"]}
    for entry in olmo["sources"]:
        assert set(entry) == OLMO_SOURCE_FIELDS
        # SourceMixtureConfig.validate and resolved_paths: ratio in (0, 1], repetition ≥ 1,
        # fraction in (0, 1], every path an existing file (absolute: OLMo-core opens it as given).
        assert 0 < entry["target_ratio"] <= 1 and entry["max_repetition_ratio"] >= 1 and 0 < entry["max_source_fraction"] <= 1
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in entry["paths"])
    assert np.allclose(sum(ratios.values()), 1.0)  # SourceMixtureList.validate
    # SourceMixtureDatasetConfig.build at the requested tokens the header gives: every source has
    # int(requested × ratio) tokens in its file (no repetition needed).
    requested = manifest["exports"]["olmo_mix"]["requested_tokens"]
    assert f"requested_tokens={requested}" in (out / "olmo_mix.yaml").read_text()
    use = []
    for entry in olmo["sources"]:
        dtype = np.dtype(manifest["exports"]["olmo_mix"]["dtype"])
        available = sum(Path(p).stat().st_size // dtype.itemsize for p in entry["paths"])
        assert int(requested * entry["target_ratio"]) <= available == train["tokenized"][entry["source_name"]]["tokens"]
        use.append(requested * entry["target_ratio"] / available)
    assert max(use) > 0.999  # the most the files give: one source is used whole


def test_the_olmo_file_loads_in_olmo_core(built):
    """Where OLMo-core is installed (it needs torch; not a test dependency), load the file with it."""
    source_mixture = pytest.importorskip("olmo_core.data.source_mixture")
    out = built["out"] / "everything"
    source_list = source_mixture.SourceMixtureList.from_yaml(str(out / "olmo_mix.yaml"))
    source_list.validate()
    assert all(cfg.resolved_paths for cfg in source_list.sources)


def test_jsonl_and_datasets_load_the_same_rows_as_the_manifest(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    out, manifest = built["out"] / "everything", built["manifests"]["everything"]
    train = manifest["splits"]["train"]
    parquet = datasets.load_dataset("parquet", data_files=[str(out / f) for f in train["files"]],
                                    split="train", cache_dir=str(tmp_path / "cache"))
    assert parquet.num_rows == train["documents"] == sum(r["rows"] for r in train["sources"].values())
    assert {"id", "text", "source", "domain", "n_tokens", "epoch", "metadata"} <= set(parquet.column_names)
    lines = [json.loads(line) for f in train["jsonl_files"] for line in (out / f).read_text().splitlines()]
    assert len(lines) == train["documents"]
    first = pq.read_table(out / train["files"][0]).slice(0, 1).to_pylist()[0]
    assert lines[0] == {**first, "metadata": json.loads(first["metadata"])}


def test_rebuilding_a_mixture_is_byte_identical(built):
    env, before = built["env"], built["manifests"]["everything"]
    again = run_mixture(env, "everything").stats
    assert again["output_sha256"] == before["output_sha256"]
    assert again == before


def test_a_rebalanced_mixture_records_what_moved(built):
    env, recipe = built["env"], built["recipe"]
    spec = recipe.mixtures["everything"].model_copy(update={
        "temperature": None, "weights": {"web": 0.5, "books": 0.5}, "sources": {}, "total": 200,
        "on_infeasible": "rebalance", "outputs": OutputsSpec(),
    })
    env.recipe = recipe.model_copy(update={"mixtures": {**recipe.mixtures, "rebalanced": spec}})
    try:
        manifest = run_mixture(env, "rebalanced").stats
    finally:
        env.recipe = recipe
    books, web = manifest["sources"]["books"], manifest["sources"]["web"]
    # books has fewer than the 100 documents its weight asks for: all of them, and web takes the rest.
    assert books["units"] == books["available_units"] < 100
    assert manifest["rebalanced"] == {"books": 100 - books["units"]} == {"books": books["shortfall_units"]}
    assert web["units"] == 200 - books["units"] and manifest["total_units"] == 200
    assert web["target_weight"] == pytest.approx(web["units"] / 200, abs=1e-6)


def test_an_eos_token_outside_the_vocabulary_is_a_recipe_error(built, tmp_path):
    from mix_pipeline.recipe import RecipeError

    text = (Path(built["recipe"].base_dir) / "recipe.yaml").read_text()
    bad = tmp_path / "recipe.yaml"
    base = Path(built["recipe"].base_dir)
    bad.write_text(text.replace("tokenizer.json", str(base / "tokenizer.json"))
                   .replace(f'eos_token: "{EOS}"', 'eos_token: "<eos>"')
                   .replace("allowed_roots: [", f'allowed_roots: ["{base}", '))
    with pytest.raises(RecipeError, match="tokenizer.eos_token: '<eos>' is not in the vocabulary"):
        load_recipe(bad)
