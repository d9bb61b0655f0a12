"""The same mixture in trainers' terms: a Megatron `--data-path` string and an OLMo-core mix.

Their paths are the per-source tokenized files of a split (`outputs: {tokenized: true}` writes
them; Megatron's indexed-dataset `.bin`/`.idx`, via datatrove's MegatronDocumentTokenizer) and
each source's weight is the mixture's target weight (the recipe's weight, after `max_fraction`
caps and rebalancing; in tokens: times the source's tokens per unit when the mixture counts
documents or examples), renormalised over the sources the split holds: the trainer samples the
proportions that were asked for, not the rounding of one split. Splits are stratified by source,
so the files hold close to those proportions already. Repeats are already inside the files, so
the OLMo config allows no further repetition. Without tokenized output the same files are named
(where `outputs.tokenized` would write them).

The OLMo file is an OLMo-core `SourceMixtureList` as written (`SourceMixtureList.from_yaml`): a
top-level `sources` list of `SourceMixtureConfig` fields only, with absolute paths; the numbers
OLMo-core takes elsewhere (requested tokens, dtype) are in its header comment and the manifest.
"""

from __future__ import annotations

import os
import struct

import yaml

from mix_pipeline.core.mixing.splits import SPLITS

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


def split_weights(info: dict, weights: dict[str, float] | None) -> dict[str, float]:
    """Per source present in the split (it has tokens): the target weight, renormalised over them.
    Without weights (library use), each source's share of the split's tokens."""
    tokens = {s: n for s, n in _split_tokens(info).items() if n > 0}
    raw = {s: (weights or {}).get(s, 0.0) for s in tokens} if weights is not None else {s: float(n) for s, n in tokens.items()}
    total = sum(raw.values())
    return {s: w / total for s, w in sorted(raw.items()) if w > 0} if total else {}


def megatron_data_path(info: dict, weights: dict[str, float] | None = None) -> str:
    return " ".join(f"{w:.6f} {tokenized_prefix_of(info, s)}" for s, w in split_weights(info, weights).items())


def tokenized_prefix_of(info: dict, source: str) -> str:
    entry = info.get("tokenized", {}).get(source)
    return entry["prefix"] if entry else tokenized_prefix(info["split"], source)


def olmo_requested_tokens(info: dict, ratios: dict[str, float]) -> int:
    """The most tokens OLMo-core can draw at exactly `ratios` without repeating any file: it takes
    int(requested × ratio) tokens of each source and refuses a source that has fewer."""
    tokens = _split_tokens(info)
    return int(min((tokens[s] / r for s, r in ratios.items() if r > 0), default=0))


def olmo_mix(info: dict, weights: dict[str, float] | None = None, root: str | None = None) -> dict:
    """A SourceMixtureList: `sources` of SourceMixtureConfig fields, paths absolute under `root`."""
    ratios = {s: round(w, 6) for s, w in split_weights(info, weights).items()}
    # target_ratios must sum to 1 (np.allclose); put the rounding remainder on the largest.
    if ratios:
        top = max(ratios, key=lambda s: (ratios[s], s))
        ratios[top] = round(ratios[top] + 1.0 - sum(ratios.values()), 6)
    return {
        "sources": [
            {
                "source_name": s,
                "target_ratio": r,
                "paths": [os.path.join(root, tokenized_prefix_of(info, s) + ".bin") if root else tokenized_prefix_of(info, s) + ".bin"],
                "max_repetition_ratio": 1.0,
                "max_source_fraction": 1.0,
            }
            for s, r in ratios.items()
        ],
    }


_OLMO_HEADER = """\
# OLMo-core source list for mix_pipeline mixture '{name}' (seed {seed}), train split, at the
# mixture's target weights. Load it as written:
#   source_list = SourceMixtureList.from_yaml("{file}")   # olmo_core.data.source_mixture
#   SourceMixtureDatasetConfig(source_list=source_list, requested_tokens={requested},
#                              global_batch_size=<your batch size in tokens>)
# requested_tokens {requested} is the most the files give at exactly these ratios without
# repeating one (the manifest's exports.olmo_mix.requested_tokens). Read the paths with dtype
# {dtype}: raw token ids (Megatron .bin, one EOS after each document when tokenizer.eos_token is
# set). Repeats are already in the files, hence max_repetition_ratio 1.0.
"""


def write_exports(out_dir: str, name: str, seed: int, splits: dict[str, dict], dtype: str | None,
                  weights: dict[str, float] | None = None, root: str | None = None) -> dict:
    """Write both exports next to the manifest; return what the manifest records about them.
    `weights`: the mixture's target weight per source; `root`: the folder the mixture is published
    to (the OLMo paths are absolute under it; relative without it)."""
    per_split = {split: dict(splits[split], split=split) for split in SPLITS}
    strings = {split: megatron_data_path(per_split[split], weights) for split in SPLITS}
    with open(os.path.join(out_dir, MEGATRON_FILE), "w") as f:
        f.write(strings["train"] + "\n")
    mix = olmo_mix(per_split["train"], weights, root)
    requested = olmo_requested_tokens(per_split["train"], {e["source_name"]: e["target_ratio"] for e in mix["sources"]})
    with open(os.path.join(out_dir, OLMO_FILE), "w") as f:
        f.write(_OLMO_HEADER.format(name=name, seed=seed, requested=requested, dtype=dtype,
                                    file=os.path.join(root, OLMO_FILE) if root else OLMO_FILE))
        f.write(yaml.safe_dump(mix, sort_keys=False))
    return {
        "megatron_data_path": {"file": MEGATRON_FILE, **{f"{s}_data_path": strings[s] for s in SPLITS}},
        "olmo_mix": {"file": OLMO_FILE, "requested_tokens": requested, "dtype": dtype},
        "tokenized": any("tokenized" in splits[s] for s in SPLITS),
    }
