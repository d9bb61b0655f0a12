"""Sources, eval sets and data_root on s3:// against a real S3-compatible server (moto's server
mode on 127.0.0.1): the pipeline reads the corpus through s3fs and publishes its outputs as a
generation (core/io/remote_root.py); what it publishes is byte-identical to a run on local disk, also
after SIGKILLs mid-pipeline and mid-publish and a rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("s3fs", reason="the s3 extra is not installed (make install installs it)")
pytest.importorskip("moto.server", reason="moto[server] is not installed (make install installs it)")

from mix_pipeline.cli import main  # noqa: E402
from mix_pipeline.core.io import remote_root, storage  # noqa: E402
from mix_pipeline.core.io.faults import CRASH_AT  # noqa: E402
from mix_pipeline.sample.corpus import build_sample_corpus  # noqa: E402
from mix_pipeline_tests.helpers import local_tree, moto_s3, normalised, s3_tree  # noqa: E402

RECIPE = """
name: on_s3
data_root: {data_root}
allowed_roots: [{allowed}]
executor: {{kind: local, tasks: 2, workers: 1}}
sources:
  web:
    path: "{inputs}/web/*.jsonl.gz"
    filters: [{{language: {{languages: [en]}}}}, gopher_repetition]
  books:
    path: "{inputs}/books"
    format: parquet
    filters: []
decontamination:
  eval_sets: ["{inputs}/evals/*.jsonl"]
dedup: {{priority: [books, web]}}
mixtures:
  general:
    total: 60000
    weights: {{web: 0.6, books: 0.4}}
    max_epochs: 4
    shard_rows: 20
    seed: 5
    outputs: {{jsonl: true}}
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 holding the corpus under s3://corpus/sample/."""
    sample = tmp_path_factory.mktemp("s3_inputs") / "sample"
    build_sample_corpus(sample, size_mb=0.5, seed=17)
    with moto_s3(sample) as url:
        yield {"local": sample, "url": url}


def write(work: Path, inputs: str, data_root: str, allowed: str) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(inputs=inputs, data_root=data_root, allowed=allowed))
    return recipe


def cli(recipe: Path, work: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """`mix-pipeline run` in its own session (a crash point SIGKILLs its whole process group)."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_AT}
    env |= {"DAGSTER_HOME": str(work / "dagster_home"), "MIX_PIPELINE_LOG_LEVEL": "WARNING",
            remote_root.WORK_DIR_ENV: str(work / "mirror")}
    if crash_at:
        env[CRASH_AT] = crash_at
    exe = Path(sys.executable).parent / "mix-pipeline"
    return subprocess.run([str(exe), "run", "--recipe", str(recipe)], env=env, capture_output=True, text=True,
                          timeout=600, start_new_session=True)


def test_sources_eval_sets_and_data_root_on_s3_publish_the_local_runs_bytes_through_kills(s3, tmp_path, monkeypatch):
    local_work = tmp_path / "local"
    recipe = write(local_work, str(s3["local"]), "data", str(s3["local"]))
    monkeypatch.setenv("DAGSTER_HOME", str(local_work / "dagster_home"))
    monkeypatch.setenv("MIX_PIPELINE_LOG_LEVEL", "WARNING")
    assert main(["run", "--recipe", str(recipe)]) == 0
    expected = normalised(local_tree(local_work / "data"), str((local_work / "data").resolve()))
    assert any(p.startswith("mixtures/general/") and p.endswith(".parquet") for p in expected)

    out = "s3://out/mix"
    work = tmp_path / "s3"
    recipe = write(work, s3["url"], out, f"{s3['url']}, {out}")
    fs = storage.filesystem(out)
    # Killed mid-pipeline (a deduplicated shard half written), then mid-publish (two objects of the
    # generation uploaded): a reader sees no generation at all.
    for point in ("deduplicated.batch#1", "storage.upload#2"):
        killed = cli(recipe, work, point)
        assert killed.returncode == -9, killed.stdout + killed.stderr
        assert not fs.exists(f"{out}/{remote_root.CURRENT}")
    done = cli(recipe, work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "now at generation" in done.stdout
    mirror = next((work / "mirror").iterdir())
    published = s3_tree(out)
    assert normalised(published, str(mirror.resolve())) == expected
    # Inputs were read from the object store: provenance names the files as on local disk.
    rows = json.loads(published["mixtures/general/manifest.json"])
    assert rows["splits"]["train"]["documents"] > 0
    # A rerun with nothing changed publishes nothing new.
    again = cli(recipe, work)
    assert again.returncode == 0 and "already holds generation" in again.stdout, again.stdout + again.stderr


def test_a_missing_filesystem_package_an_empty_pattern_or_no_server_fails_in_one_line(s3, tmp_path, monkeypatch,
                                                                                        capsys):
    # gs:// needs gcsfs, which the project does not install.
    recipe = write(tmp_path, "gs://corpus/sample", "data", "gs://corpus/sample")
    assert main(["validate", "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "(gcsfs) is not installed: pip install gcsfs" in err, err
    recipe = write(tmp_path, "s3://corpus/missing", "data", "s3://corpus/missing")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert main(["validate", "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "matches no file" in err, err
    # No server at the endpoint: one line naming the settings to check, not a botocore traceback.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main(["validate", "--recipe", str(write(tmp_path, s3["url"], "data", s3["url"]))]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "AWS_ENDPOINT_URL" in err, err
