"""The mixture lab's neural proxy: a small decoder-only transformer trained from scratch on one
candidate's documents and scored on the per-domain held-out sets.

Byte-level: token ids are the UTF-8 bytes 0..255 and 256 marks a document boundary, so nothing is
downloaded and any text (code, chat, made-up languages) tokenizes. Every candidate starts from the
same initial weights (the experiment's seed) and sees its training windows in an order drawn from
the same seed, so the differences between candidates' losses come from their data alone.

Deterministic on the CPU: a fixed thread count and `torch.use_deterministic_algorithms` make the
same candidate give the same bits; on a GPU (`device: auto` picks CUDA when there is one) the
cuBLAS workspace is pinned for the same reason. torch is an optional dependency (the `lab` extra);
`require_torch` refuses with one line when it is missing. Nothing here imports Dagster.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np

BOUNDARY = 256
VOCAB = 257


class NeuralUnavailable(RuntimeError):
    """torch is not installed (the `lab` extra)."""


def require_torch():
    try:
        import torch
    except ImportError:
        raise NeuralUnavailable("the neural lab proxy needs torch: pip install -e '.[lab]' "
                                "(or set experiments.<name>.proxy.kind: bigram)")
    return torch


def encode(text: str) -> np.ndarray:
    """A document as byte ids preceded by the boundary id."""
    body = np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8).astype(np.int16)
    return np.concatenate([np.array([BOUNDARY], np.int16), body])


def parameter_count(d_model: int, layers: int, seq_len: int) -> int:
    """Parameters of `TinyGPT` (tied input/output embeddings)."""
    per_layer = 12 * d_model * d_model + 13 * d_model  # two layer norms, qkv, proj, 4x MLP
    return VOCAB * d_model + seq_len * d_model + layers * per_layer + 2 * d_model


def _model(torch, d_model: int, layers: int, heads: int, seq_len: int):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d_model)
            self.qkv = nn.Linear(d_model, 3 * d_model)
            self.proj = nn.Linear(d_model, d_model)
            self.ln2 = nn.LayerNorm(d_model)
            self.up = nn.Linear(d_model, 4 * d_model)
            self.down = nn.Linear(4 * d_model, d_model)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, c))
            return x + self.down(F.gelu(self.up(self.ln2(x))))

    class TinyGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, d_model)
            self.pos = nn.Embedding(seq_len, d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln = nn.LayerNorm(d_model)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, std=0.02)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx):
            x = self.tok(idx) + self.pos.weight[: idx.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.ln(x) @ self.tok.weight.T  # tied output embedding

    return TinyGPT()


@contextlib.contextmanager
def deterministic(torch, threads: int):
    """Fixed threads and deterministic kernels for the duration; the previous settings after.
    On a GPU, attention uses the plain (math) kernel: the fused ones' backward passes are not
    deterministic."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    stack = contextlib.ExitStack()
    if torch.cuda.is_available():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    try:
        with stack:
            yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def pick_device(torch, device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise NeuralUnavailable("proxy.device: cuda asked for, but torch sees no GPU (use auto or cpu)")
    return device


def eval_windows(stream: np.ndarray, seq_len: int, max_windows: int) -> np.ndarray:
    """Non-overlapping (seq_len + 1)-id windows of a held-out stream, evenly spaced, at most max_windows."""
    n = (len(stream) - 1) // seq_len
    if n <= 0:
        # Shorter than one window: pad with boundaries (their targets are not scored).
        padded = np.full(seq_len + 1, -1, np.int64)
        padded[: len(stream)] = stream
        return padded[None, :]
    starts = np.arange(n) * seq_len
    if n > max_windows:
        starts = starts[np.linspace(0, n - 1, max_windows).round().astype(np.int64)]
    return np.stack([stream[s: s + seq_len + 1].astype(np.int64) for s in starts])


class NeuralProxy:
    """Trains and scores one model per candidate with fixed hyper-parameters (`spec`: ProxySpec)."""

    def __init__(self, spec, seed: int, steps_scale: float = 1.0):
        self.torch = require_torch()
        self.spec = spec
        self.seed = seed
        self.steps = max(1, int(round(spec.steps * steps_scale)))
        self.device = pick_device(self.torch, spec.device)
        self.params = parameter_count(spec.d_model, spec.layers, spec.seq_len)

    def describe(self) -> dict:
        s = self.spec
        return {"kind": "neural", "parameters": self.params, "d_model": s.d_model, "layers": s.layers,
                "heads": s.heads, "seq_len": s.seq_len, "batch": s.batch, "steps": self.steps, "lr": s.lr,
                "device": self.device, "tokenizer": "bytes"}

    def train(self, stream: np.ndarray):
        """A model trained for `steps` batches of windows drawn (seeded) from the candidate's stream."""
        torch, s = self.torch, self.spec
        with deterministic(torch, s.threads):
            torch.manual_seed(self.seed)
            model = _model(torch, s.d_model, s.layers, s.heads, s.seq_len).to(self.device)
            opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.95), weight_decay=0.1)
            data = torch.from_numpy(stream.astype(np.int64))
            rng = np.random.default_rng(self.seed)
            span = max(1, len(stream) - s.seq_len - 1)
            warm = max(1, self.steps // 10)
            model.train()
            for step in range(self.steps):
                lr = s.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / self.steps))
                for group in opt.param_groups:
                    group["lr"] = lr
                starts = rng.integers(0, span, size=s.batch)
                batch = _windows(torch, data, starts, s.seq_len).to(self.device)
                logits = model(batch[:, :-1])
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1),
                                                         ignore_index=-1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
        return model

    def loss(self, model, windows: np.ndarray) -> float:
        """Mean negative log-likelihood, nats per byte, of a held-out set's windows."""
        torch, s = self.torch, self.spec
        if len(windows) == 0:
            return float("nan")
        total, count = 0.0, 0
        with deterministic(torch, s.threads), torch.no_grad():
            model.eval()
            for start in range(0, len(windows), 64):
                batch = torch.from_numpy(windows[start: start + 64]).to(self.device)
                inp = batch[:, :-1].clamp(min=0)
                logits = model(inp)
                nll = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1),
                                                        ignore_index=-1, reduction="sum")
                total += float(nll)
                count += int((batch[:, 1:] >= 0).sum())
        return total / max(count, 1)


def _windows(torch, data, starts, seq_len):
    idx = torch.from_numpy(np.asarray(starts, np.int64))[:, None] + torch.arange(seq_len + 1)[None, :]
    idx = idx.clamp(max=len(data) - 1)
    return data[idx]
