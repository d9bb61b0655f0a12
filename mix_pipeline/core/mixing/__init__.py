"""A mixture from deduplicated documents: token counting, the pools and target weights, the
deterministic selection, the shard writer and manifest, trainers' exports, licenses, the dataset
card and the side-by-side comparison of named mixtures."""
