"""mix_pipeline: quality-filtered, deduplicated, decontaminated training mixtures (see README)."""

import os

# Arrow's default allocator (mimalloc) takes fresh memory in huge pages that the kernel zeroes
# 2 MB at a time; with shards written batch by batch in short-lived workers, that zeroing was
# ~5% of the 100 MB benchmark's CPU (perf: clear_page_erms). The C library's malloc reuses freed
# memory instead: the same bytes, less CPU, a lower peak. Arrow reads the variable when it first
# allocates, so it is set before anything imports pyarrow; child processes (forkserver and Ray
# workers, daemon runs) inherit it. A value the user set is kept.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
