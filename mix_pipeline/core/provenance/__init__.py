"""What happened to every document and every partition: the DuckDB catalog, tracing (`trace`) and
forgetting (`forget`) documents, both over where they sit in the outputs (`outputs`), input
fingerprints (lineage) and retiring partitions the recipe no longer discovers."""
