"""What both variants run: sources, filters, dedup and mixture settings, and the notes the
report prints about where they differ."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: this file is benchmarks/pipeline/settings.py


# Sources both variants read (code is dropped: see bench_pipeline.py's docstring), with their input
# glob inside the corpus folder and their format.
SOURCES = {
    "web": ("web/*.jsonl.gz", "jsonl"),
    "books": ("books/*.parquet", "parquet"),
    "papers": ("papers/*.jsonl.zst", "jsonl"),
}
# Filters per source, in order, as recipes/demo.yaml lists them except web's `safety` (left out
# of both variants, see README): (name, params).
FILTERS = {
    "web": [
        ("language", {"languages": ["en"]}),
        ("gopher_repetition", {}),
        ("gopher_quality", {}),
        ("c4", {}),
        ("fineweb", {}),
        ("pii", {}),
    ],
    "books": [("language", {"languages": ["en"]}), ("gopher_repetition", {})],
    "papers": [("language", {"languages": ["en"]}), ("gopher_repetition", {}), ("pii", {})],
}
DEDUP_PRIORITY = ["books", "papers", "web"]  # demo.yaml's order, without code
# Our MinHash settings (the recipe defaults, written out so both variants visibly share them).
NUM_PERM, BANDS, NGRAM, THRESHOLD, MINHASH_SEED = 128, 32, 5, 0.8, 1
# datatrove: the same 128 hashes in the same 32 bands of 4. datatrove keeps every band match
# (no check against the full signature), so its effective threshold is about (1/32)^(1/4) ≈ 0.42,
# where ours verifies candidates at THRESHOLD.
DT_NUM_BUCKETS, DT_HASHES_PER_BUCKET = BANDS, NUM_PERM // BANDS
TASKS = 2
# The demo mixes 2M tokens out of a 20 MB corpus; keep that ratio so the mixture stays feasible
# at any size. Weights are demo.yaml's with code's share spread over the rest.
MIX_TOKENS_PER_MB = 100_000
MIX_WEIGHTS = {"web": 0.625, "books": 0.25, "papers": 0.125}

NOTES = [
    "code source dropped from both variants: datatrove 0.10 has no text-directory reader",
    "language filter: py3langid in both (datatrove's LanguageFilter downloads a fastText model at run time); "
    "the script classifies 10,000 characters with py3langid's classify, ours 3,000 with core.fastlang",
    "prose filters: datatrove's classes in the script, core.prose's subclasses in ours (filter_agreement compares them)",
    "pii in both: mix_pipeline.core.filters.pii.PIIRedactor (datatrove's PIIFormatter has no phone numbers)",
    f"datatrove MinHash: {DT_NUM_BUCKETS} buckets x {DT_HASHES_PER_BUCKET} hashes, {NGRAM}-grams, "
    f"no signature verification; ours: {NUM_PERM} perms / {BANDS} bands, verified at {THRESHOLD}, plus exact hashes",
    "datatrove MinHash shingles hashed with sha1: its default xxhash fails under xxhash 4.1 (str input)",
    "ours also runs a mixture stage and writes raw/dropped/quarantine copies and a DuckDB catalog",
]


def size_label(size_mb: float) -> str:
    return f"{size_mb:g}"
