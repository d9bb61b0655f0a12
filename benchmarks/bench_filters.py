"""Before/after of the filter changes of issue 15, in one process, on the same web documents.

    python benchmarks/bench_filters.py [--corpus benchmarks/out/corpus-20mb] [--files 2]

Language ID: py3langid's own `classify` on 10,000 characters (what the filter did before), the
array walk of core.fastlang on 10,000, and on 3,000 (the filter's `max_chars`), one document at a time
and 64 per walk (what the filter does now). Prose filters:
datatrove's four classes sharing the warm spaCy tokenizer (SharedSpaCyTokenizer, what build_filter
used before) against core.prose's subclasses. PII redaction: every pattern over every document
against the prechecks that skip a kind's regex where it cannot match. Prints CPU seconds and MB/s
per core, and whether the decisions (texts, counts) are the same. Build the corpus first (`make bench` does, or
`mix-pipeline sample-data --out benchmarks/out/corpus-20mb --size-mb 20`).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO_ROOT / "benchmarks" / "out" / "corpus-20mb"))
    parser.add_argument("--files", type=int, default=2, help="web files to read (default 2)")
    args = parser.parse_args(argv)

    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from mix_pipeline.core.filters.language import fast_language_identifier, language_identifier
    from mix_pipeline.core.filters.tokenizer import SharedSpaCyTokenizer
    from mix_pipeline.core.filters.prose import (
        FastC4QualityFilter,
        FastFineWebQualityFilter,
        FastGopherQualityFilter,
        FastGopherRepetitionFilter,
    )

    files = sorted(glob.glob(f"{args.corpus}/web/*.jsonl.gz"))[: args.files]
    if not files:
        raise SystemExit(f"no web/*.jsonl.gz under {args.corpus}: build the sample corpus first")
    docs = [json.loads(line)["text"] for f in files for line in gzip.open(f, "rt", encoding="utf-8")]
    mb = sum(len(d.encode()) for d in docs) / 1e6
    clock = time.process_time
    print(f"{len(docs)} web documents, {mb:.2f} MB")

    stock, fast = language_identifier(), fast_language_identifier()
    answers = {}
    for name, classify in [
        ("py3langid, 10,000 chars", lambda d: stock.classify(d[:10_000])),
        ("core.fastlang, 10,000 chars", lambda d: fast.classify(d[:10_000])),
        ("core.fastlang, 3,000 chars", lambda d: fast.classify(d[:3_000])),
    ]:
        t0 = clock()
        answers[name] = [classify(d) for d in docs]
        t = clock() - t0
        print(f"language ID, {name}: {t:.2f} CPU s, {mb / t:.1f} MB/s per core")
    t0 = clock()
    batched = [a for i in range(0, len(docs), 64) for a in fast.classify_batch([d[:3_000] for d in docs[i:i + 64]])]
    t = clock() - t0
    print(f"language ID, core.fastlang, 3,000 chars, 64 documents per walk (the filter now): {t:.2f} CPU s, "
          f"{mb / t:.1f} MB/s per core")
    names = list(answers)
    print(f"  fastlang = py3langid on 10,000 chars: {answers[names[0]] == answers[names[1]]}; "
          f"batched = one by one: {batched == answers[names[2]]}")

    def run(steps) -> tuple[list[float], list]:
        seconds, verdicts = [0.0] * len(steps), []
        for text in docs:
            doc = Document(text=text, id="x", metadata={})
            verdict = "kept"
            for i, step in enumerate(steps):
                t0 = clock()
                result = step.filter(doc)
                seconds[i] += clock() - t0
                if result is not True:
                    verdict = result[1] if isinstance(result, tuple) else "dropped"
                    break
            verdicts.append((verdict, doc.text))
        return seconds, verdicts

    shared = SharedSpaCyTokenizer("en")
    before = [GopherRepetitionFilter(language=shared), GopherQualityFilter(language=shared),
              C4QualityFilter(language=shared), FineWebQualityFilter(language=shared)]
    after = [FastGopherRepetitionFilter(), FastGopherQualityFilter(), FastC4QualityFilter(), FastFineWebQualityFilter()]
    run(before[:1])  # warm both caches: steady state, as in a long-running worker
    run(after[:1])
    results = {}
    for name, steps in [("datatrove + shared spaCy tokenizer (before)", before), ("core.prose (after)", after)]:
        seconds, results[name] = run(steps)
        parts = ", ".join(f"{type(s).__name__} {t:.2f}" for s, t in zip(steps, seconds))
        print(f"prose filters, {name}: {sum(seconds):.2f} CPU s, {mb / sum(seconds):.1f} MB/s per core ({parts})")
    a, b = results.values()
    print(f"  same decisions and texts: {sum(x == y for x, y in zip(a, b))} of {len(docs)}")

    # PII redaction: the bare patterns (each regex over every document, as before) against the
    # prechecks that skip a kind's regex where it cannot match (core.filters.pii.PIIKind.may_match).
    import dataclasses

    from mix_pipeline.core.filters import pii as filters

    redacted = {}
    for name, table in [
        ("bare patterns (before)", {k: dataclasses.replace(v, may_match=None) for k, v in filters.PII.items()}),
        ("with prechecks (after)", dict(filters.PII)),
    ]:
        original = dict(filters.PII)
        filters.PII.update(table)
        try:
            t0 = clock()
            redacted[name] = [filters.redact_pii(d) for d in docs]
            t = clock() - t0
        finally:
            filters.PII.update(original)
        print(f"PII redaction, {name}: {t:.2f} CPU s, {mb / t:.1f} MB/s per core")
    a, b = redacted.values()
    print(f"  same texts and counts: {sum(x == y for x, y in zip(a, b))} of {len(docs)} "
          f"({sum(bool(c) for _, c in a)} documents with PII)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
