"""Running it for real, on the command line: a refused partition holds nothing else, a changed
source layout retires the old partitions, a refresh rewrites only what changed, and a damaged
mixture is rebuilt to the same bytes. (The same through a live daemon: test_daemon.py; kills:
test_kills.py.)"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mix_pipeline.core.provenance.fates import missing_files
from mix_pipeline.defs.jobs import DEDUPLICATE_JOB, MIX_JOB
from mix_pipeline.defs.partitions import source_snapshots
from mix_pipeline.defs.plan import HELD_TAG, next_wave
from mix_pipeline.defs.runner import RunFailed, run_recipe
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.conftest import EOS, train_bpe
from mix_pipeline_tests.helpers import snapshot_corpus, write_snapshot

RECIPE = """
name: ops
data_root: {root}
allowed_roots: [{inputs}]
executor: {{kind: local, tasks: 2, workers: 1}}
{tokenizer}
sources:
  web:
    path: "{web_path}"
    filters: [{{language: {{languages: [en]}}}}, gopher_repetition]
  books:
    path: "{inputs}/books/*.parquet"
    format: parquet
    filters: [gopher_repetition]
dedup: {{priority: [books, web]}}
mixtures:
  general: {{total: 10000, weights: {{web: 0.7, books: 0.3}}, max_epochs: 4, seed: 3, tolerance: 0.05, {outputs}}}
  bookish: {{total: 5000, weights: {{books: 1.0}}, max_epochs: 4, seed: 4, tolerance: 0.05}}
"""
DATED = "{inputs}/web/{{snapshot}}/*.jsonl.gz"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops_corpus")
    corpus = snapshot_corpus(tmp / "sample", size_mb=1.2, seed=5)
    return corpus


def setup(tmp: Path, corpus: dict, snapshots: list[str], web_path: str = DATED, tokenized: bool = False) -> Path:
    inputs = tmp / "inputs"
    if not (inputs / "books").exists():
        shutil.copytree(corpus["sample"] / "books", inputs / "books")
    for snap in snapshots:
        write_snapshot(inputs / "web" / snap, corpus["snapshots"][snap])
    tokenizer, outputs = "", ""
    if tokenized:
        import pyarrow.parquet as pq

        texts = [t for f in sorted((inputs / "books").glob("*.parquet")) for t in pq.read_table(f)["text"].to_pylist()]
        train_bpe(texts, tmp / "tokenizer.json", vocab_size=1000)
        tokenizer = f'tokenizer: {{kind: hf, path: {tmp / "tokenizer.json"}, eos_token: "{EOS}"}}'
        outputs = "outputs: {jsonl: true, tokenized: true}"
    path = tmp / "recipe.yaml"
    path.write_text(RECIPE.format(root=tmp / "data", inputs=inputs, web_path=web_path.format(inputs=inputs),
                                  tokenizer=tokenizer, outputs=outputs))
    return path


def hashes(root: Path, *folders: str) -> dict[str, str]:
    """sha256 of every file under the given folders of a data root, by relative path (seals included)."""
    out = {}
    for folder in folders:
        for f in sorted((root / folder).rglob("*")):
            if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts):
                out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def outputs(root: Path) -> dict[str, str]:
    """What must equal between two data roots: deduplicated shards, mixture shards and each
    mixture's output_sha256 (manifests, cards and exports also name the recipe and its paths)."""
    out = {k: v for k, v in hashes(root, "deduplicated", "mixtures").items()
           if k.startswith("deduplicated") or Path(k).parts[2:3] in (("train",), ("validation",), ("test",))}
    for manifest in sorted(root.glob("mixtures/*/manifest.json")):
        out[str(manifest.relative_to(root))] = json.loads(manifest.read_text())["output_sha256"]
    return out


def identities(root: Path, folder: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file under a folder: a rewritten file gets a new one (publishing swaps folders)."""
    return {str(f.relative_to(root)): (f.stat().st_ino, f.stat().st_mtime_ns)
            for f in sorted((root / folder).rglob("*")) if f.is_file()}


def fresh(tmp: Path, corpus: dict, snapshots: list[str], **kw) -> dict[str, str]:
    """Hashes of the outputs of a from-scratch `mix-pipeline run` on these snapshots."""
    path = setup(tmp, corpus, snapshots, **kw)
    with dg.instance_for_test() as instance:
        run_recipe(str(path), instance=instance)
    return outputs(tmp / "data")


def test_a_refused_partition_is_held_and_the_rest_is_built(corpus, tmp_path, capsys):
    path = setup(tmp_path / "a", corpus, ["2024-01-01"])
    with dg.instance_for_test() as instance:
        run_recipe(str(path), instance=instance)
        # A bad drop (half of its lines are not JSON) and a good one after it.
        records = corpus["snapshots"]["2024-01-08"][:20]
        write_snapshot(tmp_path / "a" / "inputs" / "web" / "2024-01-05",
                       [r if i % 2 else "{not json" for i, r in enumerate(records)])
        write_snapshot(tmp_path / "a" / "inputs" / "web" / "2024-01-08", corpus["snapshots"]["2024-01-08"])
        with pytest.raises(RunFailed, match="raw_quarantine_rate"):  # asked to build it, and it failed
            run_recipe(str(path), instance=instance)
        out = capsys.readouterr().out
        assert "held: raw → filtered [web:2024-01-05]: raw.raw_quarantine_rate failed" in out
        # ... and the rest was built all the same: the good snapshot reached both mixtures' inputs.
        steps, held = next_wave(instance, load_recipe(path))
        assert steps == [] and [h.step.partition for h in held] == ["web:2024-01-05"]
        refused = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "web:2024-01-05"}))
        assert len(refused) == 1 and HELD_TAG in refused[0].tags  # the Runs list says it is held
        # Asked again: nothing it was asked to build failed (the held partition is not retried), exit 0.
        run_recipe(str(path), instance=instance)
        assert "held: raw → filtered [web:2024-01-05]" in capsys.readouterr().out
        assert len(instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "web:2024-01-05"}))) == 1
        # A backfill of the source retries it (and it fails again).
        with pytest.raises(RunFailed, match="raw_quarantine_rate"):
            run_recipe(str(path), instance=instance, backfill_sources=["web"])
    assert outputs(tmp_path / "a" / "data") == fresh(tmp_path / "b", corpus, ["2024-01-01", "2024-01-08"])


def test_a_changed_layout_retires_the_old_partition(corpus, tmp_path, capsys):
    """web first lies in one folder (one `default` partition), then is moved to dated folders."""
    tmp = tmp_path / "a"
    path = setup(tmp, corpus, [], web_path="{inputs}/flat/*.jsonl.gz")
    write_snapshot(tmp / "inputs" / "flat", corpus["snapshots"]["2024-01-01"])
    with dg.instance_for_test() as instance:
        run_recipe(str(path), instance=instance)
        name = source_snapshots(load_recipe(path)).name
        assert "web:default" in instance.get_dynamic_partitions(name)
        shutil.rmtree(tmp / "inputs" / "flat")
        path = setup(tmp, corpus, ["2024-01-01", "2024-01-08"])
        run_recipe(str(path), instance=instance)
        assert "retired web:default" in capsys.readouterr().out
        assert sorted(instance.get_dynamic_partitions(name)) == ["books:default", "web:2024-01-01", "web:2024-01-08"]
    data = tmp / "data"
    assert not (data / "filtered" / "web" / "default").exists()
    assert list(data.glob("_retired/*/filtered/web/default"))  # moved aside, not deleted
    state = json.loads((data / "dedup_index" / "state.json").read_text())
    assert [g["snapshot"] for g in state["generations"]] == ["default", "2024-01-01", "2024-01-08"]
    assert all(s == "books" for s, _ in state["generations"][0]["partitions"])  # nothing of web:default is read
    with duckdb.connect(str(data / "catalog.duckdb"), read_only=True) as con:
        conservation = con.execute("SELECT * FROM conservation ORDER BY source").fetchall()
        assert con.execute("SELECT source, snapshot FROM retired_partitions").fetchall() == [("web", "default")]
        assert con.execute("SELECT count(*) FROM document_fates WHERE snapshot = 'default' AND source = 'web'").fetchone()[0] == 0
        # The view no longer lists the retired partition's files (moved to _retired), and every file it lists is there.
        assert con.execute("SELECT count(*) FROM fate_files WHERE snapshot = 'default' AND source = 'web'").fetchall() == [(0,)]
        assert missing_files(con) == []
    # The same outputs (and the same conservation table) as a fresh run with the new layout.
    assert outputs(data) == fresh(tmp_path / "b", corpus, ["2024-01-01", "2024-01-08"])
    with duckdb.connect(str(tmp_path / "b" / "data" / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT * FROM conservation ORDER BY source").fetchall() == conservation


def test_a_refresh_rewrites_only_what_changed(corpus, tmp_path):
    """A new web snapshot changes no verdict of the earlier ones and nothing `bookish` draws from."""
    path = setup(tmp_path, corpus, ["2024-01-01", "2024-01-08"])
    data = tmp_path / "data"
    with dg.instance_for_test() as instance:
        run_recipe(str(path), instance=instance)
        before = {**identities(data, "deduplicated"), **identities(data, "mixtures")}
        runs_before = {job: len(instance.get_runs(dg.RunsFilter(job_name=job))) for job in (DEDUPLICATE_JOB, MIX_JOB)}
        setup(tmp_path, corpus, ["2024-01-15"])
        run_recipe(str(path), instance=instance)
        after = {**identities(data, "deduplicated"), **identities(data, "mixtures")}
        runs = {job: len(instance.get_runs(dg.RunsFilter(job_name=job))) - n for job, n in runs_before.items()}
    rewritten = sorted(f for f in after if before.get(f) != after[f])
    removed = sorted(set(before) - set(after))
    tops = {"/".join(Path(f).parts[:3]) for f in rewritten + removed}
    print(f"rewritten: {len(rewritten)} file(s) under {sorted(tops)}; runs: {runs}")
    # Only the new partition and the mixture that draws from web (and the comparison) were written.
    assert all(t.startswith(("deduplicated/web/2024-01-15", "mixtures/general", "mixtures/comparison")) for t in tops), tops
    assert any(t.startswith("deduplicated/web/2024-01-15") for t in tops)
    assert any(t.startswith("mixtures/general") for t in tops)
    assert runs == {DEDUPLICATE_JOB: 1, MIX_JOB: 1}


def test_a_damaged_mixture_is_rebuilt_to_the_same_bytes(corpus, tmp_path, capsys):
    path = setup(tmp_path, corpus, ["2024-01-01"], tokenized=True)
    mixture = tmp_path / "data" / "mixtures" / "general"
    with dg.instance_for_test() as instance:
        run_recipe(str(path), instance=instance)
        reference = hashes(tmp_path / "data", "mixtures")
        damages = {
            "train/part-00000.parquet": "delete",
            "train/part-00000.jsonl": "alter",
            "manifest.json": "delete",
            "megatron_data_path.txt": "alter",
        }
        tokenized = sorted(p.relative_to(mixture) for p in (mixture / "tokenized").rglob("*.bin"))
        assert tokenized
        damages[str(tokenized[0])] = "alter"
        for rel, how in damages.items():
            target = mixture / rel
            assert target.exists(), rel
            if how == "delete":
                target.unlink()
            else:
                with open(target, "r+b") as f:  # same size, one byte changed
                    first = f.read(1)
                    f.seek(0)
                    f.write(bytes([first[0] ^ 1]))
            run_recipe(str(path), instance=instance)
            said = capsys.readouterr().out
            assert f"mixture [general]: {target}" in said and "rebuilding it" in said, said[-2000:]
            assert hashes(tmp_path / "data", "mixtures") == reference, rel


def test_a_step_killed_again_and_again_is_held_at_last():
    """Killed runs are retried (the process died: nothing was refused), but not for ever: a worker
    the machine kills every time (out of memory) would otherwise be restarted on every tick."""
    from dagster._core.storage.dagster_run import DagsterRun

    from mix_pipeline.defs.jobs import INGEST_JOB
    from mix_pipeline.defs.orphans import ORPHANED_TAG
    from mix_pipeline.defs.plan import MAX_ATTEMPTS, STEP_TAG, Step, held_reason

    step = Step(INGEST_JOB, "web:2024-01-01", "input changed or never built", "f" * 64)
    with dg.instance_for_test() as instance:
        for n in range(MAX_ATTEMPTS):
            assert held_reason(instance, step) is None, n
            instance.add_run(DagsterRun(job_name=INGEST_JOB, run_id=f"{n:08d}-0000-0000-0000-000000000000",
                                        status=dg.DagsterRunStatus.FAILURE,
                                        tags={STEP_TAG: step.run_key, ORPHANED_TAG: "1",
                                              "dagster/partition": step.partition}))
        why, run_id = held_reason(instance, step)
        assert f"its last {MAX_ATTEMPTS} runs for the same inputs died" in why and run_id.startswith(f"{MAX_ATTEMPTS - 1:08d}")
