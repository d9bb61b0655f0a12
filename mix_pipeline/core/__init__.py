"""The pipeline's logic, free of Dagster: one package per concern, each building only on those
below it (mix_pipeline_tests/test_house.py keeps the order). From the floor up: `io` (bytes on
disk and in buckets), `filters`, `dedup`, `gates`, `mixing`, `provenance`, then `stages` (one
module per Dagster asset, running the rest) and the mixture `lab`. See docs/architecture.md."""
