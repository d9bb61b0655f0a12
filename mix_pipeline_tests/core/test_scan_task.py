"""A partition's whole-document queries run as one executor task (`StageEnv.scan`, `ScanTask`):
what comes back through the task's JSON result is what the same calls return in the driver."""

from __future__ import annotations

import json
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from mix_pipeline.core.filters.registry import GOPHER_QUALITY, LANGUAGE
from mix_pipeline.core.gates import checks as quality
from mix_pipeline.core.io.documents import DOCUMENT_SCHEMA
from mix_pipeline.core.provenance import catalog
from mix_pipeline.core.stages import StageEnv, local_runner
from mix_pipeline.core.stages.base import SCAN_RESULT
from mix_pipeline.names import FILTERED, META_LANGUAGE, RAW
from mix_pipeline.recipe import load_recipe
from mix_pipeline_tests.conftest import write_jsonl, write_recipe


def _shard(path, rows: list[dict]) -> str:
    full = [{"source": "web", "domain": "web", "metadata": "{}", **r} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=DOCUMENT_SCHEMA), path)
    return str(path)


def _env(folder) -> StageEnv:
    """A one-source recipe in `folder`, its tasks run locally (one task: in this process)."""
    write_jsonl(folder / "web" / "a.jsonl", [{"id": "1", "text": "one"}])
    return StageEnv(load_recipe(write_recipe(folder, 'name: t\nsources:\n  web: {path: "web/*"}\n')),
                    runner=local_runner(1), log=lambda m: None)


def test_raw_scan_in_a_task_returns_the_drivers_checks_and_counts(tmp_path):
    env = _env(tmp_path)
    docs = _shard(tmp_path / "docs.parquet", [{"id": "a", "text": "fine"}, {"id": "a", "text": "again"},
                                              {"id": "b", "text": "caf\ufffd"}, {"id": "c", "text": " "}])
    unread = _shard(tmp_path / "q.parquet", [{"id": "x", "text": "bad", "metadata": '{"reason": "malformed_json"}'}])
    removed = _shard(tmp_path / "r.parquet", [{"id": "y", "text": "gone", "metadata": '{"reason": "removed"}'}])
    overrides = {"raw_unique_ids": {"severity": "warn"}}
    scanned = env.scan((RAW, "web", "default"), "mix_pipeline.core.stages.raw.scan_partition", raw_parts=[docs],
                       unread=[unread], quarantine_parts=[unread, removed], overrides=overrides)
    assert scanned["documents"] == 4 and scanned["quarantined"] == 1
    with duckdb.connect() as con:
        assert scanned["record_counts"] == catalog.raw_counts(con, [docs], [unread, removed])
    assert scanned["record_counts"] == {"documents": 4, "quarantined": 1, "removed": 1}
    rebuilt = [quality.CheckOutcome(**row) for row in scanned["checks"]]
    assert rebuilt == quality.raw_checks([docs], [unread], overrides)
    assert not rebuilt[2].passed and rebuilt[2].examples[0]["id"] == "a"
    logs = env.work_dir("logs", RAW, "web", "default", "scan")
    assert SCAN_RESULT in os.listdir(logs)


def test_filtered_scan_in_a_task_returns_the_drivers_counts_and_checks(tmp_path):
    env = _env(tmp_path)
    inputs = _shard(tmp_path / "in.parquet", [{"id": str(i), "text": "x"} for i in range(10)])
    kept = _shard(tmp_path / "k.parquet", [{"id": str(i), "text": "x", "metadata": json.dumps({META_LANGUAGE: "en"})} for i in range(6)])
    dropped = {LANGUAGE: [_shard(tmp_path / "d.parquet", [{"id": "7", "text": "y"}, {"id": "8", "text": "z"}])],
               GOPHER_QUALITY: []}
    scanned = env.scan((FILTERED, "web", "default"), "mix_pipeline.core.stages.filtered.scan_partition",
                       inputs=[inputs], kept=[kept], dropped_parts=dropped, languages=["en"], overrides={})
    assert (scanned["input_documents"], scanned["documents"]) == (10, 6)
    assert list(scanned["dropped"].items()) == [(LANGUAGE, 2), (GOPHER_QUALITY, 0)]
    with duckdb.connect() as con:
        assert scanned["dropped"] == catalog.dropped_counts(con, dropped)
        assert scanned["filter_counts"] == catalog.filter_counts(con, [kept] + dropped[LANGUAGE])
    rebuilt = [quality.CheckOutcome(**row) for row in scanned["checks"]]
    assert rebuilt == quality.filtered_checks(10, [kept], [(LANGUAGE, 2), (GOPHER_QUALITY, 0)], dropped, ["en"], {})
