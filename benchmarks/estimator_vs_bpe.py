"""How close the offline token estimate (⌈UTF-8 bytes / 4⌉) is to a real BPE tokenizer.

    python benchmarks/estimator_vs_bpe.py [--sample data/sample] [--size-mb 20] [--vocab 32000]

Builds the sample corpus (unless --sample points at one), trains a byte-level BPE tokenizer
with the `tokenizers` library on every other document of it (nothing downloaded), and counts
the remaining documents both ways, per source, rendering chat records the way the reader does.
Prints a Markdown table: the ratio is estimated / BPE tokens, so 1.10 means the estimate
counts 10% more tokens than the tokenizer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mix_pipeline.core.io.readers import render_messages  # noqa: E402
from mix_pipeline.core.mixing.tokens import TokenCounter  # noqa: E402


def read_sources(root: Path) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    texts["web"] = [json.loads(line)["text"] for p in sorted((root / "web").glob("*.jsonl.gz"))
                    for line in gzip.open(p, "rt", encoding="utf-8")]
    texts["books"] = [t for p in sorted((root / "books").glob("*.parquet")) for t in pq.read_table(p)["text"].to_pylist()]
    texts["code"] = [p.read_text(encoding="utf-8") for p in sorted((root / "code").rglob("*.py"))]
    texts["papers"] = [json.loads(line)["text"] for p in sorted((root / "papers").glob("*.jsonl.zst"))
                       for line in zstandard.ZstdDecompressor().stream_reader(p.open("rb")).read().decode().splitlines()]
    for kind in ("qa", "coding", "safety"):
        texts[f"chat_{kind}"] = [render_messages(json.loads(line)["messages"])
                                 for p in sorted((root / "chat" / kind).glob("*.jsonl"))
                                 for line in p.read_text(encoding="utf-8").splitlines()]
    return texts


def train(texts: list[str], vocab: int, path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.save(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", help="an existing sample corpus folder")
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--vocab", type=int, default=32_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.sample) if args.sample else Path(tmp) / "sample"
        if not args.sample:
            from mix_pipeline.sample.corpus import build_sample_corpus

            build_sample_corpus(root, size_mb=args.size_mb, seed=0)
        texts = read_sources(root)
        started = time.perf_counter()
        # Train on even-numbered documents, measure on odd ones: the tokenizer has not seen them.
        path = train([t for ts in texts.values() for t in ts[::2]], args.vocab, Path(tmp) / "tokenizer.json")
        print(f"trained a {args.vocab:,}-token byte-level BPE in {time.perf_counter() - started:.0f}s\n")
        estimate, bpe = TokenCounter("estimate"), TokenCounter("hf", str(path))
        print("| source | documents | MB | estimate | BPE | estimate / BPE | bytes per BPE token |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for source, ts in texts.items():
            held_out = ts[1::2]
            n_bytes = sum(len(t.encode()) for t in held_out)
            est, real = sum(estimate.count(held_out)), sum(bpe.count(held_out))
            print(f"| {source} | {len(held_out):,} | {n_bytes / 1e6:.1f} | {est:,} | {real:,} | {est / real:.2f} | "
                  f"{n_bytes / real:.2f} |")


if __name__ == "__main__":
    main()
