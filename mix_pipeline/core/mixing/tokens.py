"""Counting tokens, the unit most mixtures are specified in.

`estimate` needs no files: one token per 4 UTF-8 bytes, rounded up. That is the usual
rule of thumb for English BPE vocabularies (GPT-2/Llama-class tokenizers average roughly
4 characters per token on English prose; code and non-Latin scripts run denser). It is exact
enough to hit relative mixture weights, which is what it is for; configure `kind: hf` with a
local tokenizer.json when absolute token counts must match a trainer.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

BYTES_PER_TOKEN = 4


class TokenCounter:
    def __init__(self, kind: str = "estimate", path: str | None = None):
        self.kind = kind
        self.path = path
        self._tokenizer = None
        if kind == "hf":
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(path)

    @property
    def description(self) -> str:
        if self.kind == "estimate":
            return f"estimate:utf8_bytes/{BYTES_PER_TOKEN}"
        with open(self.path, "rb") as f:
            return f"hf:sha256={hashlib.sha256(f.read()).hexdigest()[:16]}"

    @property
    def token_dtype(self) -> str | None:
        """How token ids are stored in tokenized outputs (datatrove's rule: 2 bytes unless the
        vocabulary needs more)."""
        if self._tokenizer is None:
            return None
        return "uint32" if self._tokenizer.get_vocab_size() > 2**16 else "uint16"

    def count(self, texts: list[str]) -> list[int]:
        if self._tokenizer is None:
            return [max(1, -(-len(t.encode("utf-8")) // BYTES_PER_TOKEN)) for t in texts]
        return [len(enc.ids) for enc in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def count_array(self, texts: pa.Array | pa.ChunkedArray) -> pa.Array:
        """`count` over an Arrow string column, as int64; the estimate never leaves Arrow/numpy."""
        if self._tokenizer is None:
            n = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
            return pa.array(np.maximum(1, -(-n // BYTES_PER_TOKEN)), pa.int64())
        return pa.array(self.count(texts.to_pylist()), pa.int64())


class CountTokens(PipelineStep):
    """Stores each document's token count in `metadata["n_tokens"]` (batched for HF tokenizers)."""

    type = "🔢 - TOKENIZER"
    name = "🔢 Count tokens"

    def __init__(self, kind: str = "estimate", path: str | None = None, batch_size: int = 256):
        super().__init__()
        self.kind = kind
        self.path = path
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.batching import batched

        counter = TokenCounter(self.kind, self.path)
        for batch in batched(data, self.batch_size):
            for doc, n in zip(batch, counter.count([d.text for d in batch])):
                doc.metadata["n_tokens"] = n
                self.stat_update("tokens", value=n)
                yield doc
