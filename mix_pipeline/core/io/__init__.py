"""Bytes on disk and in buckets: the document format and atomic publication (`documents`), reading
raw sources and quarantining what cannot be read (`readers`), object storage (`storage`, and a
data_root there published as generations: `remote_root`), the seals published partitions carry
(`integrity`), the one-run-per-data-root lock (`locks`), named crash points (`faults`) and
datatrove's per-task logs (`logs`). Everything else builds on this package; it imports nothing of
the pipeline's own but `errors`, `names` and `layout`."""
