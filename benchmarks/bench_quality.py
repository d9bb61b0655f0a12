"""Quality classifier benchmark: training time, ROC AUC on the planted low-quality pages, and the
`quality_classifier` filter's throughput in MB/s per core.

    python benchmarks/bench_quality.py --size-mb 20 [--out benchmarks/out]

Builds the sample corpus (reused when present), trains the model from a recipe whose references
are books and papers and whose scored source is web, then runs the filter (the datatrove step the
filtered stage runs, threshold 0.3) over every web document in this one process. Throughput is
the documents' UTF-8 bytes over the process's CPU seconds spent in the filter (one core), so other
load on a shared machine skews it less than wall time. Last line, machine-readable:

    quality_mb_per_s_per_core=… roc_auc=… train_s=… documents=… mb=…
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datatrove.data import Document  # noqa: E402

from mix_pipeline.core.filters import quality_model as qm  # noqa: E402
from mix_pipeline.core.filters import quality_reports  # noqa: E402
from mix_pipeline.core.filters import quality_training  # noqa: E402
from mix_pipeline.sample.corpus import build_sample_corpus  # noqa: E402
from mix_pipeline.recipe import load_recipe  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--threshold", type=float, default=0.3)
    args = parser.parse_args()

    out = Path(args.out).resolve()
    corpus = out / f"corpus-{args.size_mb:g}mb"
    if not (corpus / "ground_truth.json").exists():
        build_sample_corpus(corpus, size_mb=args.size_mb, seed=0)
    work = out / f"quality-{args.size_mb:g}mb"
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.yaml").write_text(textwrap.dedent(f"""
        name: bench_quality
        data_root: data
        allowed_roots: ["{corpus}"]
        sources:
          web: {{path: "{corpus}/web/*.jsonl.gz", filters: [{{quality_classifier: {{threshold: {args.threshold}}}}}]}}
          books: {{path: "{corpus}/books/*.parquet", format: parquet}}
          papers: {{path: "{corpus}/papers/*.jsonl.zst"}}
        quality_model: {{references: [books, papers]}}
    """))
    recipe = load_recipe(work / "recipe.yaml")

    t0 = time.perf_counter()
    model = quality_training.train(recipe)
    train_s = time.perf_counter() - t0
    qm.write_model(model, qm.model_path(recipe))
    truth = json.loads((corpus / "ground_truth.json").read_text())
    auc = quality_reports.score_against_truth(recipe, truth, model)["sources"]["web"]

    docs = [Document(text=d.text, id=d.id, metadata={}) for d in quality_training.source_documents(recipe, "web")]
    nbytes = sum(len(d.text.encode("utf-8")) for d in docs)
    step = qm.QualityClassifierFilter(threshold=args.threshold, model=qm.model_path(recipe))
    step.filter(Document(text="warm up", id="0", metadata={}))  # load the model outside the timing
    cpu0, wall0 = time.process_time(), time.perf_counter()
    kept = sum(1 for _ in step.run(iter(docs)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    mb = nbytes / 2**20
    result = {"documents": len(docs), "mb": round(mb, 2), "kept": kept, "filter_cpu_s": round(cpu, 3),
              "filter_wall_s": round(wall, 3), "quality_mb_per_s_per_core": round(mb / cpu, 2),
              "train_s": round(train_s, 2), "roc_auc": auc["roc_auc"], "by_kind": auc["by_kind"],
              "positives": model.info["positives"], "negatives": model.info["negatives"]}
    (work / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(" ".join(f"{k}={result[k]}" for k in ("quality_mb_per_s_per_core", "roc_auc", "train_s", "documents", "mb")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
