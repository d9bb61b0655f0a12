"""Exact and near-duplicate detection across all sources: MinHash signatures, clusters and the
keeper verdict per cluster."""
