"""The sample corpus both variants read, built once per size."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.pipeline.settings import SOURCES, size_label


def ensure_corpus(out: Path, size_mb: float) -> tuple[Path, dict]:
    """Build the sample corpus once per size; building takes a while and it is deterministic."""
    from mix_pipeline.sample.corpus import build_sample_corpus

    corpus = out / f"corpus-{size_label(size_mb)}mb"
    truth_path = corpus / "ground_truth.json"
    if not truth_path.exists():
        print(f"building a {size_label(size_mb)} MB sample corpus in {corpus}", flush=True)
        build_sample_corpus(str(corpus), size_mb=size_mb, log=lambda msg: print(f"  {msg}", flush=True))
    return corpus, json.loads(truth_path.read_text())


def corpus_text_mb(truth: dict) -> float:
    return sum(truth["counts"][s]["bytes"] for s in SOURCES) / 1e6
