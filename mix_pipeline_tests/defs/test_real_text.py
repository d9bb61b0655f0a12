"""Real text passes the default gates: `mix-pipeline run` (the CLI, in a subprocess) on a corpus
built from files that ship with Python and the installed packages (see mix_pipeline_tests.real_text)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import duckdb
import pytest

from mix_pipeline import layout
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.io.documents import list_parts
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.real_text import RECIPE, build_real_text_corpus

PER_SOURCE = 300


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_text")
    counts = build_real_text_corpus(root / "corpus", per_source=PER_SOURCE)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=root / "data", corpus=root / "corpus", total=30_000))
    env = {**os.environ, "DAGSTER_HOME": str(root / "home"), "MIX_PIPELINE_LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "mix_pipeline.cli", "run", "--recipe", str(recipe)],
                         capture_output=True, text=True, env=env, timeout=600)
    seconds = time.monotonic() - started
    report = subprocess.run([sys.executable, "-m", "mix_pipeline.cli", "report", "--recipe", str(recipe)],
                            capture_output=True, text=True, env=env, timeout=120)
    print(f"real-text corpus {counts}: run took {seconds:.0f} s\n{report.stdout}")
    return {"root": root, "counts": counts, "run": run, "recipe": load_recipe(recipe), "report": report.stdout}


def test_real_text_runs_with_the_default_gates(real_run):
    run = real_run["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = real_run["counts"]
    assert counts["code"] == counts["docs"] == PER_SOURCE and counts["web"] >= 100
    recipe = real_run["recipe"]
    con = duckdb.connect(os.path.join(recipe.data_root_path, "catalog.duckdb"), read_only=True)
    rows = {s: dict(zip(("records", "kept", "dropped", "duplicate", "quarantined", "balanced"), r)) for s, *r in con.execute(
        "SELECT source, records, kept, dropped, duplicate, quarantined, balanced FROM conservation").fetchall()}
    con.close()
    assert set(rows) == {"code", "docs", "web"} and all(r["balanced"] and r["kept"] for r in rows.values()), rows
    assert rows["code"]["records"] == counts["code"] and rows["docs"]["records"] == counts["docs"]
    with open(os.path.join(recipe.data_root_path, "mixtures", "general", "manifest.json")) as f:
        manifest = json.load(f)
    assert {s: round(r["achieved_weight"], 2) for s, r in manifest["sources"].items()} == {"web": 0.2, "docs": 0.4, "code": 0.4}


def test_documents_quoting_u_fffd_are_kept_and_the_old_band_would_have_refused_them(real_run):
    """Two package READMEs quote U+FFFD (valid UTF-8). Under the old default (max_fraction 0.0)
    the whole docs source was refused; now they are ordinary documents."""
    recipe = real_run["recipe"]
    raw = list_parts(layout.partition_dir(recipe.data_root_path, layout.RAW_DIR, "docs", "default"))
    con = duckdb.connect()
    quoting = con.execute(f"SELECT id FROM read_parquet({raw!r}) WHERE contains(text, '\ufffd')").fetchall()
    con.close()
    assert quoting, "the corpus no longer holds a document quoting U+FFFD"
    old = {o.name: o for o in quality.raw_checks(raw, [], {"raw_valid_utf8": {"max_fraction": 0.0}})}
    assert not old["raw_valid_utf8"].passed
    assert {o.name: o for o in quality.raw_checks(raw, [], {})}["raw_valid_utf8"].passed
