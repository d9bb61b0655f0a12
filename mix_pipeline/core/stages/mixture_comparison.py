"""The `mixture_comparison` stage: every built mixture of the recipe side by side, written to
`mixtures/comparison.{json,md}`."""

from __future__ import annotations

import os

from mix_pipeline import layout
from mix_pipeline.core.mixing.comparison import read_manifests, write_comparison
from mix_pipeline.core.stages.base import StageEnv


def run_comparison(env: StageEnv) -> dict:
    """comparison.{json,md} over every mixture of the recipe that has been built."""
    folder = layout.mixtures_dir(env.root)
    manifests, missing = read_manifests(folder, sorted(env.recipe.mixtures))
    doc = write_comparison(folder, manifests, missing)
    env.log(f"comparison: {len(manifests)} mixture(s) in {os.path.join(folder, 'comparison.md')}"
            + (f"; not built: {missing}" if missing else ""))
    return doc
