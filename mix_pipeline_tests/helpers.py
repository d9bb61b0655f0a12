"""Shared by the refresh tests (in-process), the live daemon tests and the unattended benchmark:
web in weekly snapshots with duplicates planted across them, a drifted drop and books; a live
`dagster-daemon`, and waiting for it to settle."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from mix_pipeline.core.sample_data import build_sample_corpus
from mix_pipeline.defs.plan import next_wave, runs_in_flight
from mix_pipeline.names import MIXTURE_COMPARISON

REPO = Path(__file__).resolve().parents[1]


def edit(text: str) -> str:
    words = text.split(" ")
    return " ".join("changed" if i % 70 == 9 else w for i, w in enumerate(words))


def write_snapshot(folder: Path, records: list) -> None:
    """One gzipped JSONL shard; a str record is written as the line it is."""
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    (folder / "part-0.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))


def snapshot_corpus(sample: Path, size_mb: float = 1.2, seed: int = 5) -> dict:
    """{"sample": folder with books/, "snapshots": {date: records}, "shifted": records}: three
    weekly web drops with exact and near copies of earlier weeks under new ids, and a shifted drop
    close to half in other languages (it passes the gates, but drifts)."""
    truth = build_sample_corpus(sample, size_mb=size_mb, seed=seed)
    planted = {p["id"] for k in ("exact_duplicates", "near_duplicates", "non_english", "spam", "short", "long",
                                 "cross_source_duplicates") for p in truth[k]}
    non_english = {p["id"] for p in truth["non_english"]}
    web, foreign = [], []
    for f in sorted((sample / "web").glob("*.jsonl.gz")):
        for r in map(json.loads, gzip.decompress(f.read_bytes()).splitlines()):
            if r["id"] in non_english:
                foreign.append(r)
            elif r["id"] not in planted:
                web.append(r)
    fresh, web = web[-22:], web[:-22]  # held back for the shifted drop, so it is not all duplicates
    third = len(web) // 3
    s1, s2, s3 = web[:third], web[third:2 * third], web[2 * third:]
    s2 = s2 + [{"id": f"s2-exact-{r['id']}", "text": r["text"]} for r in s1[:4]]
    s2 = s2 + [{"id": f"s2-near-{r['id']}", "text": edit(r["text"])} for r in s1[4:8]]
    s3 = s3 + [{"id": f"s3-exact-{r['id']}", "text": r["text"]} for r in s2[:3]]
    s3 = s3 + [{"id": f"s3-near-{r['id']}", "text": edit(r["text"])} for r in s1[8:11]]
    shifted = fresh + [{"id": f"fx-{i}-{r['id']}", "text": r["text"] + f" {i}"} for i in range(3) for r in foreign]
    assert 0.35 < (len(shifted) - 22) / len(shifted) < 0.55
    return {"sample": sample, "snapshots": {"2024-01-01": s1, "2024-01-08": s2, "2024-01-15": s3}, "shifted": shifted}


@contextlib.contextmanager
def daemon(home: Path, recipe: Path, interval_s: int = 2):
    """A live `dagster-daemon run` on DAGSTER_HOME `home`, loading mix_pipeline.definitions for `recipe`
    (its log in `home/daemon.log`)."""
    workspace = home / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: mix_pipeline.definitions\n"
                         f"      location_name: mix_pipeline\n      working_directory: {REPO}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "MIX_PIPELINE_RECIPE": str(recipe),
           "MIX_PIPELINE_SENSOR_SECONDS": str(interval_s)}
    log = open(home / "daemon.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def latest_sid(instance, asset: str, partition: str | None = None) -> int:
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                                           asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(records_filter, limit=1).records
    return records[0].storage_id if records else -1


def settle(instance, recipe, home: Path, after: int, timeout: float) -> float:
    """Wait until the daemon rebuilt the comparison after storage id `after` and nothing is stale
    or in flight; returns the seconds it took. Fails early, with the run's error, if a run fails."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        failed = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        if failed:
            raise AssertionError(f"daemon run {failed[0].run_id} ({failed[0].job_name}) failed; "
                                 f"daemon log:\n{(home / 'daemon.log').read_text()[-3000:]}")
        if (latest_sid(instance, MIXTURE_COMPARISON) > after and not runs_in_flight(instance)
                and next_wave(instance, recipe) == ([], [])):
            return time.monotonic() - started
        time.sleep(2)
    raise AssertionError(f"not settled after {timeout} s; in flight: {runs_in_flight(instance)}; "
                         f"next: {next_wave(instance, recipe)}; daemon log:\n{(home / 'daemon.log').read_text()[-3000:]}")
