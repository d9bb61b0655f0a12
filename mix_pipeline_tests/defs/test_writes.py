"""Writes never land outside data_root: a whole pipeline run (real Dagster jobs) leaves the
recipe's folder, its inputs, the working directory, HOME and the temp folder exactly as they
were; everything it writes is under data_root or the Dagster instance's home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dagster as dg

from mix_pipeline.defs.runner import run_recipe
from mix_pipeline_tests.conftest import prose_doc, write_jsonl, write_recipe


def _tree(folder: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """path → (size, mtime) of every file and folder below `folder` (except under `skip`)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        if skip is not None and Path(root) == skip.parent:
            dirs[:] = [d for d in dirs if Path(root) / d != skip]
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def test_a_pipeline_run_writes_only_under_data_root_and_the_dagster_home(tmp_path, monkeypatch):
    project, home, cwd, tmp, dagster_home = (tmp_path / n for n in ("project", "home", "cwd", "tmp", "dagster"))
    for folder in (home, cwd, tmp, dagster_home):
        folder.mkdir()
    write_jsonl(project / "in" / "web" / "a.jsonl", [{"id": f"w{i}", "text": prose_doc(i)} for i in range(40)])
    recipe = write_recipe(project, """
        name: contained
        data_root: ./data
        executor: {kind: local, tasks: 2, workers: 1}
        sources:
          web: {path: "in/web/*.jsonl"}
        mixtures:
          m: {unit: documents, total: 40, weights: {web: 1}, max_epochs: 2, seed: 1}
    """)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    before = _tree(project)

    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        manifests = run_recipe(str(recipe), instance=instance)
    assert manifests["m"]["total_units"] == 40

    data = project / "data"
    assert _tree(project, skip=data) == before, "the recipe's folder or its inputs changed"
    assert {p.name for p in data.iterdir()} >= {"raw", "filtered", "deduplicated", "mixtures", "catalog.duckdb"}
    for folder in (cwd, home, tmp):
        assert _tree(folder) == {}, f"{folder.name}: {sorted(_tree(folder))[:5]}"
