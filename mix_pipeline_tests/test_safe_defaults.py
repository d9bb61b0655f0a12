"""Safe defaults: recipes are read with yaml.safe_load (no object construction from tags),
and `make ui` binds the Dagster UI to 127.0.0.1 unless HOST says otherwise."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mix_pipeline.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_a_recipe_cannot_construct_python_objects(tmp_path):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nsources: {{}}\n')
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(recipe)
    assert not marker.exists()
    # And nothing in the package loads YAML any other way.
    unsafe = re.compile(r"yaml\.(load|unsafe_load|full_load|load_all)\(|Loader\s*=")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "mix_pipeline").rglob("*.py") if unsafe.search(p.read_text())]
    assert offenders == []


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_ui_binds_to_localhost_by_default():
    out = subprocess.run(["make", "-n", "ui"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000" in out
    exposed = subprocess.run(["make", "-n", "ui", "HOST=0.0.0.0"], cwd=REPO, capture_output=True, text=True).stdout
    assert "-h 0.0.0.0" in exposed
    readme = (REPO / "README.md").read_text()
    assert "It binds to 127.0.0.1 only" in readme
