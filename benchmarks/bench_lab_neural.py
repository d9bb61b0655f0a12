"""Time the lab's neural proxy (core/lab/neural.py) per candidate at several sizes, on the CPU
or a GPU, and check whether the candidates' ranking holds between sizes.

Self-contained (numpy + torch only, no corpus, no Dagster): three synthetic sources (Markov
chains over made-up words; two share an alphabet, one does not), candidates drawn from a
Dirichlet, each trained from the same initial weights on a byte stream mixed at its weights and
scored on every source's held-out text (objective: the mean). Prints one JSON object.

    python benchmarks/bench_lab_neural.py --device cpu --candidates 6 --sizes 1m
    python benchmarks/bench_lab_neural.py --device cuda --candidates 8 --sizes 1m,15m --steps 400
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mix_pipeline.core.lab.neural import NeuralProxy, encode, eval_windows  # noqa: E402

SIZES = {  # name: (d_model, layers, heads)
    "tiny": (32, 2, 2),
    "1m": (128, 4, 4),
    "4m": (256, 5, 4),
    "15m": (384, 8, 6),
}


def language(rng, letters: str, words: int = 2000):
    vocab = ["".join(rng.choice(list(letters), size=int(rng.integers(2, 8)))) for _ in range(words)]
    return vocab, rng.integers(0, words, size=(words, 3))


def documents(rng, lang, n: int, length: int = 120) -> list[str]:
    vocab, succ = lang
    out = []
    for _ in range(n):
        w, words = int(rng.integers(len(vocab))), []
        for _ in range(length):
            words.append(vocab[w])
            w = int(succ[w, rng.integers(3)]) if rng.random() < 0.85 else int(rng.integers(len(vocab)))
        out.append(" ".join(words))
    return out


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--sizes", default="1m")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--docs", type=int, default=600, help="documents per source")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    langs = {"latin_a": language(rng, "abcdefghijklmnop"), "latin_b": language(rng, "abcdefghijklmnop"),
             "greek": language(rng, "αβγδεζηθικλμνξοπ")}
    docs = {s: documents(rng, lang, args.docs) for s, lang in langs.items()}
    held = {s: d[: max(1, len(d) // 10)] for s, d in docs.items()}
    train = {s: [encode(t) for t in d[len(held[s]):]] for s, d in docs.items()}
    sources = sorted(train)
    budget = sum(len(x) for x in train[sources[0]])  # bytes per candidate: one source's worth
    weights = np.vstack([np.ones(3) / 3, rng.dirichlet(np.ones(3), size=args.candidates - 1)])
    streams = []
    for w in weights:
        parts = []
        for s, share in zip(sources, w):
            need, k = share * budget, 0
            while need > 0:
                doc = train[s][k % len(train[s])]
                parts.append(doc)
                need -= len(doc)
                k += 1
        streams.append(np.concatenate(parts))

    out = {"device": None, "candidates": args.candidates, "bytes_per_candidate": int(budget), "sizes": {}}
    objectives = {}
    for size in args.sizes.split(","):
        d, layers, heads = SIZES[size]
        spec = SimpleNamespace(d_model=d, layers=layers, heads=heads, seq_len=args.seq_len, batch=args.batch,
                               steps=args.steps, lr=3e-3 if d <= 128 else 1e-3, device=args.device,
                               threads=args.threads, eval_windows=64)
        proxy = NeuralProxy(spec, seed=1)
        windows = {s: eval_windows(np.concatenate([encode(t) for t in h]), spec.seq_len, 64) for s, h in held.items()}
        proxy.train(streams[0][:4096])  # warm-up (imports, kernels)
        times, objs = [], []
        for stream in streams:
            t = time.perf_counter()
            model = proxy.train(stream)
            objs.append(float(np.mean([proxy.loss(model, windows[s]) for s in sources])))
            if proxy.device == "cuda":
                proxy.torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        again = float(np.mean([proxy.loss(proxy.train(streams[0]), windows[s]) for s in sources]))
        out["device"] = proxy.device
        objectives[size] = objs
        out["sizes"][size] = {"parameters": proxy.params, "steps": args.steps, "tokens_per_step": args.batch * args.seq_len,
                              "seconds_per_candidate": round(float(np.median(times)), 3),
                              "seconds_total": round(float(np.sum(times)), 2),
                              "objectives": [round(o, 4) for o in objs], "rerun_identical": again == objs[0]}
        print(f"{size}: {proxy.params:,} parameters, {np.median(times):.2f} s per candidate on {proxy.device}",
              file=sys.stderr, flush=True)
    names = list(objectives)
    out["spearman_between_sizes"] = {f"{a} vs {b}": round(spearman(objectives[a], objectives[b]), 3)
                                     for i, a in enumerate(names) for b in names[i + 1:]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
