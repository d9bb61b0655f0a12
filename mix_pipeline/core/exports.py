"""The same mixture in trainers' terms: a Megatron `--data-path` string and an OLMo-core mix.

Both replay the mixture that was built rather than re-deciding it: their paths are the
per-source tokenized files of a split (`outputs: {tokenized: true}` writes them; Megatron's
indexed-dataset `.bin`/`.idx`, via datatrove's MegatronDocumentTokenizer) and each source's
weight is its share of that split's tokens. Repeats are already inside those files, so the
OLMo config allows no further repetition. Without tokenized output the same files are named
(where `outputs.tokenized` would write them) and the weights come from the token counts of the
selected documents.
"""

from __future__ import annotations

import os
import struct

import yaml

from mix_pipeline.core.mixing import SPLITS

MEGATRON_FILE = "megatron_data_path.txt"
OLMO_FILE = "olmo_mix.yaml"
TOKENIZED_DIR = "tokenized"
_IDX_HEADER = b"MMIDIDX\x00\x00"
# Megatron's dtype codes in the .idx header → (bytes per token, the dtype OLMo calls it).
_IDX_DTYPES = {8: (2, "uint16"), 4: (4, "uint32")}


def tokenized_prefix(split: str, source: str) -> str:
    """Where the tokenized tokens of one (split, source) live, relative to the mixture folder."""
    return f"{TOKENIZED_DIR}/{split}/{source}"


def read_idx(path: str) -> dict:
    """Document count, token count and token dtype of a Megatron `.idx` file (header only)."""
    with open(path, "rb") as f:
        head = f.read(len(_IDX_HEADER) + 8 + 1 + 8)
    if not head.startswith(_IDX_HEADER):
        raise ValueError(f"{path}: not a Megatron index file")
    code = head[len(_IDX_HEADER) + 8]
    (documents,) = struct.unpack_from("<Q", head, len(_IDX_HEADER) + 9)
    size, dtype = _IDX_DTYPES[code]
    tokens = os.path.getsize(path.removesuffix(".idx") + ".bin") // size
    return {"documents": int(documents), "tokens": int(tokens), "dtype": dtype}


def _split_tokens(info: dict) -> dict[str, int]:
    """Tokens per source of one split: counted in the tokenized files when there are any."""
    if "tokenized" in info:
        return {s: entry["tokens"] for s, entry in info["tokenized"].items()}
    return {s: row["tokens"] for s, row in info["sources"].items() if row["tokens"] > 0}


def megatron_data_path(info: dict) -> str:
    tokens = _split_tokens(info)
    total = sum(tokens.values())
    return " ".join(f"{n / total:.6f} {tokenized_prefix_of(info, s)}" for s, n in sorted(tokens.items()) if n) if total else ""


def tokenized_prefix_of(info: dict, source: str) -> str:
    entry = info.get("tokenized", {}).get(source)
    return entry["prefix"] if entry else tokenized_prefix(info["split"], source)


def olmo_mix(name: str, seed: int, info: dict, dtype: str | None) -> dict:
    tokens = _split_tokens(info)
    total = sum(tokens.values())
    return {
        "mixture": name,
        "seed": seed,
        "dtype": dtype,
        "requested_tokens": total,
        "sources": [
            {
                "source_name": s,
                "target_ratio": round(n / total, 6),
                "paths": [tokenized_prefix_of(info, s) + ".bin"],
                "max_repetition_ratio": 1.0,
                "max_source_fraction": 1.0,
            }
            for s, n in sorted(tokens.items())
            if n
        ],
    }


_OLMO_HEADER = """\
# OLMo-core source mixture replaying mix_pipeline mixture '{name}' (train split).
# Build it with olmo_core.data.source_mixture:
#   SourceMixtureDatasetConfig(
#       source_list=SourceMixtureList(sources=[SourceMixtureConfig(**s) for s in cfg["sources"]]),
#       requested_tokens=cfg["requested_tokens"], global_batch_size=<your batch size in tokens>)
# and read the paths with dtype `dtype`. They are relative to this file's folder: raw token ids
# (Megatron .bin, one EOS after each document when tokenizer.eos_token is set). Repeats are
# already in the files, hence max_repetition_ratio 1.0.
"""


def write_exports(out_dir: str, name: str, seed: int, splits: dict[str, dict], dtype: str | None) -> dict:
    """Write both exports next to the manifest; return what the manifest records about them."""
    per_split = {split: dict(splits[split], split=split) for split in SPLITS}
    strings = {split: megatron_data_path(per_split[split]) for split in SPLITS}
    with open(os.path.join(out_dir, MEGATRON_FILE), "w") as f:
        f.write(strings["train"] + "\n")
    with open(os.path.join(out_dir, OLMO_FILE), "w") as f:
        f.write(_OLMO_HEADER.format(name=name))
        f.write(yaml.safe_dump(olmo_mix(name, seed, per_split["train"], dtype), sort_keys=False))
    return {
        "megatron_data_path": {"file": MEGATRON_FILE, **{f"{s}_data_path": strings[s] for s in SPLITS}},
        "olmo_mix": {"file": OLMO_FILE},
        "tokenized": any("tokenized" in splits[s] for s in SPLITS),
    }
