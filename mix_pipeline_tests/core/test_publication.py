"""Atomic publication of a partition's folder, and recovery from what a killed run leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mix_pipeline.core.io import documents
from mix_pipeline.core.io.documents import publish_dir, recover, staging_dir, write_text_atomic
from mix_pipeline.core.io.faults import CRASH_AT, CRASH_TRACE


def _fill(folder: str, **files: str) -> None:
    for name, text in files.items():
        Path(folder, name).write_text(text)


def _tree(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_publish_replaces_the_folder_as_a_whole(tmp_path):
    final = tmp_path / "raw" / "web" / "default"
    first = staging_dir(str(final))
    _fill(first, **{"part-00000.parquet": "v1", "part-00001.parquet": "v1"})
    publish_dir(first, str(final))
    second = staging_dir(str(final))
    _fill(second, **{"part-00000.parquet": "v2"})
    publish_dir(second, str(final))
    assert _tree(final) == {"part-00000.parquet": "v2"}
    assert sorted(os.listdir(final.parent)) == ["default"]


def test_the_fallback_without_an_atomic_exchange_publishes_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "_renameat2", False)  # as on a filesystem without RENAME_EXCHANGE
    final = tmp_path / "out"
    for version in ("v1", "v2"):
        staged = staging_dir(str(final))
        _fill(staged, data=version)
        publish_dir(staged, str(final))
    assert _tree(final) == {"data": "v2"} and os.listdir(tmp_path) == ["out"]


def test_recover_restores_the_previous_version_a_killed_publication_moved_aside(tmp_path):
    final = tmp_path / "default"
    aside = tmp_path / ".default.old-0123456789ab"
    aside.mkdir()
    _fill(str(aside), data="previous")
    staged = tmp_path / ".default.tmp-0123456789ab"
    staged.mkdir()
    _fill(str(staged), data="half")
    assert recover(str(final)) == [staged.name]
    assert _tree(final) == {"data": "previous"} and os.listdir(tmp_path) == ["default"]


def test_a_new_staging_folder_clears_leftovers_but_never_the_published_folder(tmp_path):
    final = tmp_path / "default"
    final.mkdir()
    _fill(str(final), data="published")
    for name in (".default.tmp-aaaaaaaaaaaa", ".default.old-bbbbbbbbbbbb", ".other.tmp-cccccccccccc"):
        (tmp_path / name).mkdir()
    staged = staging_dir(str(final))
    assert sorted(os.listdir(tmp_path)) == sorted([".other.tmp-cccccccccccc", "default", os.path.basename(staged)])
    assert _tree(final) == {"data": "published"}


def test_write_text_atomic_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "comparison.json"
    (tmp_path / ".comparison.json.tmp-deadbeef0000").write_text("{half")
    write_text_atomic(str(target), "{}\n")
    assert os.listdir(tmp_path) == ["comparison.json"] and target.read_text() == "{}\n"


@pytest.mark.parametrize(("point", "exchange"), [
    ("publish.staged", True), ("publish.swapped", True),
    ("publish.staged", False), ("publish.moved_aside", False), ("publish.swapped", False),
])
def test_a_kill_during_publication_leaves_one_complete_version(tmp_path, point, exchange):
    """SIGKILL a real process at each crash point of `publish_dir`, with and without the atomic
    exchange: the folder holds the old or the new version, never neither, and the next
    staging folder clears what was left."""
    final = tmp_path / "default"
    final.mkdir()
    _fill(str(final), data="old")
    script = textwrap.dedent(f"""
        from pathlib import Path
        from mix_pipeline.core.io import documents
        if not {exchange}:
            documents._renameat2 = False
        staged = documents.staging_dir({str(final)!r})
        Path(staged, "data").write_text("new")
        documents.publish_dir(staged, {str(final)!r})
    """)
    env = {k: v for k, v in os.environ.items() if k != CRASH_TRACE} | {CRASH_AT: f"{point}#1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, start_new_session=True, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    recover(str(final))
    assert _tree(final) == {"data": "new" if point == "publish.swapped" else "old"}
    assert os.listdir(tmp_path) == ["default"]


def test_stage_queries_spill_under_the_data_root(tmp_path):
    """In-memory DuckDB connections of a stage spill into data_root/_work, not DuckDB's default
    ./.tmp in whatever folder the process happens to run from."""
    from mix_pipeline.core.io.documents import duckdb_scratch, scratch_connection

    scratch = tmp_path / "data" / "_work" / "duckdb"
    with duckdb_scratch(str(scratch)):
        with scratch_connection() as con:
            assert con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0] == str(scratch)
    with scratch_connection() as con:
        assert con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0] != str(scratch)
