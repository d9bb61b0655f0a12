"""The fast near-dup path (batched rensa signatures over shards, one launch per generation, a
streaming deduplicated pass) against the per-document implementation it replaced, on the
sample corpus with its planted duplicates; and its outputs with 1 and 2 workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document
from rensa import RMinHash

from mix_pipeline import layout
from mix_pipeline.core.dedup import signatures, verdicts
from mix_pipeline.core.dedup.clusters import UnionFind
from mix_pipeline.core.dedup.generation import dedup_generation
from mix_pipeline.core.dedup.signatures import SignatureWriter, content_hash, signature_batch
from mix_pipeline.core.dedup.verdicts import DropDuplicates
from mix_pipeline.core.io.documents import (
    DEDUPLICATED_SCHEMA,
    file_sha256,
    list_parts,
    normalise_shard_names,
    parquet_writer,
)
from mix_pipeline.core.stages import (
    ShardReader,
    StageEnv,
    dedup_index,
    local_runner,
    run_dedup_index,
    run_deduplicated,
    run_filtered,
    run_raw,
)
from mix_pipeline.core.mixing.tokens import CountTokens, TokenCounter
from mix_pipeline.recipe import load_recipe

SOURCES = ("web", "books", "papers")
PRIORITY = {"books": 0, "papers": 1, "web": 2}
_FOLD = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], dtype=np.uint64)


# ---- one document at a time, written plainly: the reference for the batched signatures --------
def reference_row(text: str, num_perm: int = 128, bands: int = 32, ngram: int = 5, seed: int = 1):
    """Word hashes from rensa, each shingle's hash rolled over its words in Python integers
    (mod 2**64), one RMinHash over the document's shingle hashes."""
    words = re.findall(r"\w+", text.lower())
    word_hashes = RMinHash.hash_token_sets([words])[0]
    windows = [word_hashes] if len(words) <= ngram else [
        word_hashes[i : i + ngram] for i in range(len(words) - ngram + 1)
    ]
    shingle_hashes = []
    for window in windows:
        h = window[0] if window else 0
        for w in window[1:]:
            h = (h * 0x9E3779B97F4A7C15 + w) % 2**64
        shingle_hashes.append(h)
    sig = np.asarray(RMinHash.digest_matrix_from_token_hash_sets([shingle_hashes], num_perm, seed).to_rows()[0],
                     dtype=np.uint32)
    rows = sig.astype(np.uint64).reshape(bands, -1)
    with np.errstate(over="ignore"):
        folded = (rows * np.resize(_FOLD, rows.shape[1])).sum(axis=1, dtype=np.uint64).view(np.int64)
    return sig.tolist(), folded.tolist()


@pytest.mark.parametrize("words_per_call", [100_000, 50])
def test_batch_signatures_are_the_per_document_ones(words_per_call, monkeypatch):
    monkeypatch.setattr(signatures, "WORDS_PER_CALL", words_per_call)
    texts = [
        "", "one", "Just four words here", "exactly five words are here", "Six words, with punctuation: yes!",
        "Ünïcödé wörds — ß and 東京 too, mixed_with under_scores 42 times 42",
        " ".join(f"w{i % 37}" for i in range(500)),
    ]
    table = signature_batch("web", [str(i) for i in range(len(texts))], texts, 128, 32, 5, 1)
    assert table.column("id").to_pylist() == [str(i) for i in range(len(texts))]
    for i, text in enumerate(texts):
        sig, bands = reference_row(text)
        assert table.column("signature")[i].as_py() == sig
        assert table.column("bands")[i].as_py() == bands
        assert table.column("content_hash")[i].as_py() == content_hash(text)
        assert table.column("n_chars")[i].as_py() == len(text)
    # Different text, different signature: the comparison above is not vacuous.
    assert table.column("signature")[3].as_py() != table.column("signature")[4].as_py()


# ---- stage level ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ingested(sample_3mb, tmp_path_factory):
    """raw + filtered partitions of the sample corpus (no filters: dedup sees every document)."""
    work = tmp_path_factory.mktemp("dedup_paths")
    (work / "recipe.yaml").write_text(textwrap.dedent(f"""
        name: dedup_paths
        data_root: data
        allowed_roots: ["{sample_3mb}"]
        tokenizer: {{kind: estimate}}
        executor: {{kind: local, tasks: 2, workers: 1}}
        sources:
          web: {{path: "{sample_3mb}/web/*.jsonl.gz"}}
          books: {{path: "{sample_3mb}/books/*.parquet", format: parquet}}
          papers: {{path: "{sample_3mb}/papers/*.jsonl.zst", checks: {{raw_length_bounds: {{severity: warn}}}}}}
        dedup:
          exact: true
          minhash: {{threshold: 0.8, num_perm: 128, bands: 32, ngram: 5, seed: 1}}
          priority: [books, papers, web]
        mixtures:
          all:
            unit: documents
            total: 10
            temperature: 1.0
            sources: {{web: {{}}, books: {{}}, papers: {{}}}}
    """))
    recipe = load_recipe(work / "recipe.yaml")
    env = StageEnv(recipe, runner=local_runner(1), log=lambda m: None)
    for source in SOURCES:
        run_raw(env, source)
        run_filtered(env, source)
    truth = json.loads((sample_3mb / "ground_truth.json").read_text())
    return work, truth


def _dedup_root(ingested, name: str, workers: int, monkeypatch, task_bytes: int | None = None) -> StageEnv:
    work, _ = ingested
    root = work / name
    shutil.rmtree(root, ignore_errors=True)
    for stage in ("raw", "filtered"):
        shutil.copytree(work / "data" / stage, root / stage)
    recipe = load_recipe(work / "recipe.yaml").model_copy(update={"data_root": str(root)})
    env = StageEnv(recipe, runner=local_runner(workers), log=lambda m: None)
    assert env.root == str(root)
    if task_bytes is not None:
        monkeypatch.setattr(dedup_index, "SIGNATURE_TASK_TEXT_BYTES", task_bytes)
    run_dedup_index(env)
    for source in SOURCES:
        run_deduplicated(env, source)
    return env


def _tree(folder: str) -> dict[str, str]:
    return {os.path.relpath(os.path.join(r, f), folder): file_sha256(os.path.join(r, f))
            for r, _, names in os.walk(folder) for f in names if f.endswith(".parquet")}


def _clusters(env: StageEnv) -> pa.Table:
    files = sorted(Path(env.dir("dedup_index", "clusters")).rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_verdicts_are_those_of_the_per_document_signatures(ingested, monkeypatch, tmp_path):
    env = _dedup_root(ingested, "fast", 1, monkeypatch)
    _, truth = ingested

    # Every stored signature row is the per-document implementation's.
    rows = 0
    for f in sorted(Path(env.dir("dedup_index", "signatures")).rglob("*.parquet")):
        table = pq.read_table(f)
        for source, doc_id, sig, bands, h in zip(*(table.column(c).to_pylist() for c in
                                                   ("source", "id", "signature", "bands", "content_hash"))):
            rows += 1
            text = _texts(env, source)[doc_id]
            assert (sig, bands) == reference_row(text), (source, doc_id)
            assert h == content_hash(text)
    assert rows == sum(len(_texts(env, s)) for s in SOURCES)

    # Clustering the reference signatures (written per source by the old step) gives the same verdicts.
    reference_files = []
    for source in SOURCES:
        out = tmp_path / "sigs" / source

        class Reference(SignatureWriter):
            def run(self, data, rank=0, world_size=1):
                os.makedirs(self.output_folder, exist_ok=True)
                docs = list(data)
                table = pa.table({"source": [self.source] * len(docs), "id": [d.id for d in docs],
                                  "content_hash": [content_hash(d.text) for d in docs],
                                  "n_chars": [len(d.text) for d in docs],
                                  "signature": [reference_row(d.text)[0] for d in docs],
                                  "bands": [reference_row(d.text)[1] for d in docs]}, schema=self.schema())
                pq.write_table(table, os.path.join(self.output_folder, f"{rank:05d}.parquet"))
                return
                yield

        step = Reference(str(out), source=source, num_perm=128, bands=32, ngram=5, seed=1)
        inputs = list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, source, "default"))
        list(step.run(ShardReader(inputs).run()))
        reference_files += sorted(str(p) for p in out.glob("*.parquet"))
    dedup_generation("default", reference_files, [], PRIORITY, str(tmp_path / "clusters"), str(tmp_path / "index"),
                     threshold=0.8, exact=True, duckdb_temp_dir=str(tmp_path / "duckdb"))
    reference = pa.concat_tables([pq.read_table(f) for f in sorted((tmp_path / "clusters").rglob("*.parquet"))])
    assert _clusters(env).equals(reference)

    # And those verdicts catch the planted near duplicates (so the comparison is not of two empty sets).
    fates = {(r["source"], r["id"]): r for r in _clusters(env).to_pylist()}
    near = [p for p in truth["near_duplicates"] if (p["source"], p["id"]) in fates and (p["of_source"], p["of_id"]) in fates]
    assert len(near) >= 5
    caught = [p for p in near if "duplicate" in (fates[(p["source"], p["id"])]["fate"], fates[(p["of_source"], p["of_id"])]["fate"])]
    assert len(caught) >= 0.9 * len(near)
    assert sum(r["match"] == "near" for r in fates.values()) >= len(caught) * 0.9


def _texts(env: StageEnv, source: str, cache: dict = {}) -> dict[str, str]:  # noqa: B006 (per-run cache)
    key = (env.root, source)
    if key not in cache:
        table = pa.concat_tables(pq.read_table(p, columns=["id", "text"])
                                 for p in list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, source, "default")))
        cache[key] = dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    return cache[key]


def test_deduplicated_shards_are_the_datatrove_pipelines(ingested, monkeypatch, tmp_path):
    """The streaming pass writes what ShardReader → DropDuplicates → CountTokens → parquet_writer wrote."""
    env = _dedup_root(ingested, "fast", 1, monkeypatch)
    for source in SOURCES:
        inputs = list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, source, "default"))
        out = tmp_path / "datatrove" / source
        steps = [ShardReader(inputs), DropDuplicates(layout.clusters_file(env.root, source, "default")),
                 CountTokens("estimate"), parquet_writer(str(out), schema=DEDUPLICATED_SCHEMA)]
        local_runner(1)(steps, str(tmp_path / "logs" / source), env.tasks_for(len(inputs)))
        expected = normalise_shard_names(str(out))
        got = list_parts(layout.partition_dir(env.root, layout.DEDUPLICATED_DIR, source, "default"))
        assert [os.path.basename(p) for p in got] == [os.path.basename(p) for p in expected]
        for a, b in zip(got, expected):
            ta, tb = pq.read_table(a), pq.read_table(b)
            assert ta.schema == tb.schema == DEDUPLICATED_SCHEMA
            assert ta.equals(tb), (source, a)
        assert sum(pq.read_metadata(p).num_rows for p in got) < len(_texts(env, source)) or source == "books"


def test_outputs_are_identical_with_one_and_two_workers(ingested, monkeypatch):
    one = _dedup_root(ingested, "one", 1, monkeypatch)
    # Tiny tasks force two signature tasks on a pool of two worker processes.
    two = _dedup_root(ingested, "two", 2, monkeypatch, task_bytes=1)
    assert len(list(Path(two.dir("dedup_index", "signatures", "web", "default")).glob("*.parquet"))) == 2
    for stage in ("dedup_index/clusters", "dedup_index/index", "deduplicated"):
        a, b = _tree(one.dir(stage)), _tree(two.dir(stage))
        assert a and a == b, stage


def test_estimated_token_counts_match_the_per_document_count():
    texts = ["", "a", "abcd", "abcde", "ünï", "x" * 1001]
    counter = TokenCounter("estimate")
    assert counter.count_array(pa.array(texts)).to_pylist() == counter.count(texts)


def test_one_signature_task_for_a_small_generation(ingested, monkeypatch):
    work, _ = ingested
    env = StageEnv(load_recipe(work / "recipe.yaml"), runner=local_runner(2), log=lambda m: None)
    files = [p for s in SOURCES for p in list_parts(layout.partition_dir(env.root, layout.FILTERED_DIR, s, "default"))]
    assert dedup_index.text_bytes(files) > 1_000_000
    assert dedup_index.signature_tasks(env, files) == 1
    monkeypatch.setattr(dedup_index, "SIGNATURE_TASK_TEXT_BYTES", 1)
    assert dedup_index.signature_tasks(env, files) == 2  # capped by the recipe's tasks


def test_signature_writer_on_documents_writes_the_batched_rows(tmp_path):
    docs = [Document(text=f"some words number {i} and then more words {i % 3}", id=f"d{i}", metadata={}) for i in range(7)]
    step = SignatureWriter(str(tmp_path), source="web", num_perm=128, bands=32, ngram=5, seed=1, batch_rows=3)
    list(step.run(iter(docs)))
    table = pq.read_table(tmp_path / "00000.parquet")
    assert table.num_rows == 7
    assert [tuple(r) for r in zip(table.column("signature").to_pylist(), table.column("bands").to_pylist())] == [
        reference_row(d.text) for d in docs
    ]


def test_union_find_roots_are_each_nodes_smallest_member():
    rng = np.random.default_rng(3)
    uf = UnionFind(500)
    for a, b in rng.integers(0, 500, size=(300, 2)).tolist():
        uf.union(a, b)
    roots = uf.roots()
    assert roots.tolist() == [uf.find(i) for i in range(500)]
    groups: dict[int, list[int]] = {}
    for node, root in enumerate(roots.tolist()):
        groups.setdefault(root, []).append(node)
    assert all(root == min(members) for root, members in groups.items())
    assert len(groups) < 500


def test_cluster_and_index_files_stream_in_fixed_row_groups(tmp_path, monkeypatch):
    """Outputs stream from DuckDB in row groups of ROW_GROUP_ROWS rows, so reruns write the same bytes."""
    rng = np.random.default_rng(0)
    base = [" ".join(f"w{x}" for x in rng.integers(0, 5000, 200)) for _ in range(40)]
    docs = [(f"d{i:02d}", t) for i, t in enumerate(base)] + [(f"x{i:02d}", t + " tail") for i, t in enumerate(base[:9])]
    files = []
    for source in ("web", "books"):
        out = tmp_path / "sigs" / source
        step = SignatureWriter(str(out), source=source, num_perm=128, bands=32, ngram=5, seed=1)
        list(step.run(iter(Document(text=t, id=i, metadata={}) for i, t in docs)))
        files += sorted(str(p) for p in out.glob("*.parquet"))
    monkeypatch.setattr(verdicts, "ROW_GROUP_ROWS", 7)
    trees = []
    for run in ("a", "b"):
        dedup_generation("default", files, [], {"books": 0, "web": 1}, str(tmp_path / run / "clusters"),
                         str(tmp_path / run / "index"), threshold=0.8, exact=True, duckdb_temp_dir=str(tmp_path / "t"))
        trees.append(_tree(str(tmp_path / run)))
    assert trees[0] == trees[1] and len(trees[0]) == 4
    clusters = pq.ParquetFile(tmp_path / "a" / "clusters" / "web" / "default.parquet")
    sizes = [clusters.metadata.row_group(g).num_rows for g in range(clusters.metadata.num_row_groups)]
    assert sizes == [7] * 7 and sum(sizes) == len(docs)
    table = clusters.read()
    assert table.column("id").to_pylist() == sorted(i for i, _ in docs)  # ordered by id across row groups
    assert set(table.column("fate").to_pylist()) == {"duplicate"}  # books outranks every web copy
    index = pq.read_table(tmp_path / "a" / "index" / "books" / "default.parquet")
    assert index.num_rows == len(base)  # the near copies ("x..") are duplicates of their originals


def test_signatures_made_another_way_are_never_reused(ingested, tmp_path):
    """The dedup state records how shingles are hashed: a build whose state lacks it (made
    before shingles were hashed from word hashes) or names another way reuses nothing."""
    from mix_pipeline import layout
    from mix_pipeline.core.stages.dedup_index import dedup_config, reusable_generations

    config = dedup_config(load_recipe(ingested[0] / "recipe.yaml"))
    assert config["shingle_hash"] == signatures.SHINGLE_HASH
    generations = [{"snapshot": "default", "partitions": [("web", "abc")]}]
    state = tmp_path / layout.DEDUP_STATE_FILE
    for stored, reused in [(config, 1), ({k: v for k, v in config.items() if k != "shingle_hash"}, 0),
                           (config | {"shingle_hash": "joined-strings"}, 0)]:
        state.write_text(json.dumps({"config": stored, "generations": generations}))
        assert reusable_generations(str(tmp_path), config, generations)[0] == reused
