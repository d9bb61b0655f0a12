"""The CLI as a client of the planner: two runs at once on one instance, `validate` on dated
snapshots, and the cause of a failed step in its one-line error."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mix_pipeline.cli import main
from mix_pipeline.defs.runner import RunFailed, execute
from mix_pipeline_tests.conftest import prose_doc, write_jsonl, write_recipe

BIN = Path(sys.executable).parent


def small_recipe(tmp: Path, root: Path) -> Path:
    for snap in ("2024-01-01", "2024-01-08"):
        write_jsonl(tmp / "inputs" / "web" / snap / "part-0.jsonl",
                    [{"id": f"{snap}-{i}", "text": prose_doc(i + (50 if snap.endswith("8") else 0))} for i in range(30)])
    write_jsonl(tmp / "inputs" / "books" / "part-0.jsonl", [{"id": f"b{i}", "text": prose_doc(100 + i, 20)} for i in range(12)])
    folder = root.parent
    folder.mkdir(parents=True, exist_ok=True)
    return write_recipe(folder, f"""
        name: cli_runs
        data_root: {root}
        allowed_roots: [{tmp / 'inputs'}]
        executor: {{kind: local, tasks: 1, workers: 1}}
        sources:
          web: {{path: "{tmp / 'inputs'}/web/{{snapshot}}/*.jsonl", filters: []}}
          books: {{path: "{tmp / 'inputs'}/books/*.jsonl", filters: []}}
        mixtures:
          general: {{unit: documents, total: 40, weights: {{web: 0.6, books: 0.4}}, max_epochs: 4, seed: 1}}
        """)


def shards(folder: Path) -> dict[str, bytes]:
    """The data files of the mixtures (the card, manifest and exports name the data root)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def test_two_runs_at_once_one_waits_and_both_give_the_single_run_outputs(tmp_path):
    recipe = small_recipe(tmp_path, tmp_path / "shared" / "data")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    runs = [subprocess.Popen([str(BIN / "mix-pipeline"), "run", "--recipe", str(recipe)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=600)[0] for r in runs]
    for run, out in zip(runs, outputs):
        assert run.returncode == 0, out[-3000:]
        assert "Traceback" not in out
    assert sum("is working on" in out and "waiting for it to finish" in out for out in outputs) == 1
    single = small_recipe(tmp_path, tmp_path / "single" / "data")
    (tmp_path / "home2").mkdir()
    done = subprocess.run([str(BIN / "mix-pipeline"), "run", "--recipe", str(single)], capture_output=True, text=True,
                          env={**env, "DAGSTER_HOME": str(tmp_path / "home2")}, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    mixtures = shards(tmp_path / "shared" / "data" / "mixtures")
    assert mixtures and mixtures == shards(tmp_path / "single" / "data" / "mixtures")
    digest = [json.loads((tmp_path / run / "data" / "mixtures" / "general" / "manifest.json").read_text())["output_sha256"]
              for run in ("shared", "single")]
    assert digest[0] == digest[1]
    leftovers = [p for p in (tmp_path / "shared" / "data").rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_validate_accepts_a_recipe_with_dated_snapshots(tmp_path, capsys):
    recipe = small_recipe(tmp_path, tmp_path / "r" / "data")
    assert main(["validate", "--recipe", str(recipe)]) == 0
    assert "over 3 file(s)" in capsys.readouterr().out


def test_a_failed_step_names_its_cause_not_dagsters_wrapper():
    @dg.asset
    def fills_the_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/filtered/web/part-0.parquet")

    defs = dg.Definitions(assets=[fills_the_disk], jobs=[dg.define_asset_job("fill", selection=[fills_the_disk])])
    with dg.instance_for_test() as instance, pytest.raises(RunFailed) as failure:
        execute(defs, "fill", instance, None, "fill")
    assert "No space left on device" in str(failure.value)
    assert "Error occurred while executing" not in str(failure.value)
