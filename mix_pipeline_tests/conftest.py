"""Shared fixtures: tiny corpora written to temp dirs, recipes pointing at them, and a
network guard (in this process and every Python subprocess) so a hidden download fails the
test instead of silently succeeding."""

from __future__ import annotations

import gzip
import json
import os
import textwrap
from pathlib import Path

import pytest

from mix_pipeline_tests.netguard import sitecustomize as netguard

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


# Subprocesses (the dagster CLI, datatrove's forkserver workers) start fresh interpreters that an
# in-process patch cannot reach: they pick the same guard up through sitecustomize (see netguard/).
os.environ[netguard.ENV_VAR] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (netguard.FOLDER, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Refuse outbound connections except to this machine."""
    uninstall = netguard.install()
    yield
    uninstall()


PROSE = [
    "The committee met on Tuesday to review the proposal for the new library building.",
    "Most of the members agreed that the plan was sound, although several raised questions about the cost.",
    "After a long discussion, they decided to ask the architect for a revised estimate.",
    "The revised estimate arrived two weeks later and was lower than the first one.",
    "It was then approved by a clear majority, and work is expected to begin in the spring.",
    "Residents have been invited to share their views at a public meeting next month.",
    "The library will include a reading room, a children's area and space for local history.",
    "Funding comes partly from the city and partly from a long campaign of private donations.",
]


def prose_doc(seed: int, sentences: int = 12) -> str:
    """English text that passes datatrove's quality filters; `seed` varies the wording."""
    lines = []
    for i in range(sentences):
        s = PROSE[(seed + i) % len(PROSE)]
        lines.append(s.replace("The ", f"The {['first', 'second', 'third', 'new', 'old', 'small', 'large'][(seed * 7 + i) % 7]} ", 1) + f" This note is number {seed}-{i}.")
    return "\n".join(lines)


def write_jsonl(path: Path, records: list, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def write_recipe(folder: Path, body: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="session")
def sample_3mb(tmp_path_factory) -> Path:
    """The sample corpus (3 MB, seed 0), built once for every test that needs it."""
    from mix_pipeline.sample.corpus import build_sample_corpus

    out = tmp_path_factory.mktemp("sample")
    build_sample_corpus(out, size_mb=3, seed=0)
    return out


EOS = "<|endoftext|>"


def train_bpe(texts, path: Path, vocab_size: int = 4000) -> Path:
    """A byte-level BPE tokenizer.json trained here, on `texts` (nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(path))
    return path
