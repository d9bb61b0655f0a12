"""The pipeline benchmark (benchmarks/bench_pipeline.py): its settings, the corpus, the two
variants, the measurement of their process trees, the scoring of their outputs and the report."""
