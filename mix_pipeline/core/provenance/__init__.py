"""What happened to every document and every partition: the DuckDB catalog, tracing and forgetting
documents, input fingerprints (lineage) and retiring partitions the recipe no longer discovers."""
