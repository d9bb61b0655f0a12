"""Helpers shared by several test modules (and the unattended benchmark), in one place.

- Refresh and daemon: web in weekly snapshots with duplicates planted across them, a drifted drop
  and books; a live `dagster-daemon`, and waiting for it to settle.
- Small corpora and recipes: the demo recipe pointed at a sample, synthetic deduplicated sources
  for the lab, a two-source recipe; the dataset-card check.
- Object storage: a moto S3 server holding a corpus, and the published tree as a reader of a
  local data_root or of an s3:// one (through CURRENT) sees it."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from mix_pipeline.core.mixing.dataset_card import parse_card
from mix_pipeline.core.io.documents import DEDUPLICATED_SCHEMA, file_sha256
from mix_pipeline.core.io.integrity import SEAL
from mix_pipeline.sample.corpus import build_sample_corpus
from mix_pipeline.defs.plan import next_wave, runs_in_flight
from mix_pipeline.names import MIXTURE_COMPARISON
from mix_pipeline_tests.conftest import prose_doc, write_jsonl

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
        with contextlib.suppress(ProcessLookupError):  # a test may have killed it already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# Text files that may name the data root (the OLMo-core mix lists absolute shard paths).
TEXT_SUFFIXES = (".yaml", ".json", ".md", ".txt")


def root_independent_seal(data: bytes) -> bytes:
    """A seal (`_published.json`) without the size and sha256 of its text files: those name the
    data root, so they differ between data roots; compare the files themselves with the root replaced."""
    entries = json.loads(data)["files"]
    return json.dumps([{k: v for k, v in e.items() if not (e["path"].endswith(TEXT_SUFFIXES) and k in ("bytes", "sha256"))}
                       for e in entries], sort_keys=True).encode()


def published(data_root: Path) -> dict[str, str]:
    """sha256 of every file a reader can see: everything but the catalog, the work folder, and
    hidden entries (which `leftovers` checks separately). Text files that name the data root (the
    OLMo-core mix lists absolute shard paths) are hashed with it replaced, and seals without those
    files' hashes, since every scenario has its own root."""
    root_bytes = str(data_root.resolve()).encode()
    out = {}
    for root, dirs, files in os.walk(data_root):
        rel_root = Path(root).relative_to(data_root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (rel_root == Path(".") and d == "_work"))
        for name in files:
            if name.startswith(".") or (rel_root == Path(".") and name.startswith("catalog.duckdb")):
                continue
            path = os.path.join(root, name)
            if name == SEAL:
                with open(path, "rb") as f:
                    out[str(rel_root / name)] = hashlib.sha256(root_independent_seal(f.read())).hexdigest()
            elif name.endswith(TEXT_SUFFIXES):
                with open(path, "rb") as f:
                    out[str(rel_root / name)] = hashlib.sha256(f.read().replace(root_bytes, b"<data_root>")).hexdigest()
            else:
                out[str(rel_root / name)] = file_sha256(path)
    return out


@contextlib.contextmanager
def moto_s3(corpus: Path, bucket: str = "corpus"):
    """A moto S3 server on 127.0.0.1 holding `corpus` (its web, books and evals folders) under
    s3://<bucket>/sample, plus an empty bucket s3://out; yields the corpus URL. The endpoint and
    credentials reach the pipeline (its subprocesses and, forwarded, its Ray tasks) through the
    environment, as a deployment's would, and are restored afterwards."""
    from moto.server import ThreadedMotoServer

    from mix_pipeline.core.io import storage

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    # moto keeps its buckets in the process, across servers: start from none.
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        fs = storage.filesystem(f"s3://{bucket}")
        fs.mkdir(f"s3://{bucket}")
        fs.mkdir("s3://out")
        for sub in ("web", "books", "evals"):
            fs.put(str(corpus / sub), f"s3://{bucket}/sample/{sub}", recursive=True)
        yield f"s3://{bucket}/sample"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def normalised(files: dict[str, bytes], root: str) -> dict[str, str]:
    """sha256 per published path; in text files the recipe's hash (two recipes that name different
    paths) and the data root's local path are masked."""
    recipe_sha = json.loads(files["mixtures/general/manifest.json"])["recipe_sha256"].encode()
    out = {}
    for path, data in files.items():
        if path.endswith(SEAL):
            data = root_independent_seal(data)
        elif path.endswith(TEXT_SUFFIXES):
            data = data.replace(root.encode(), b"<data_root>").replace(recipe_sha, b"<recipe>")
        out[path] = hashlib.sha256(data).hexdigest()
    return out


def local_tree(root: Path) -> dict[str, bytes]:
    """Every published file of a local data_root, as the generation publisher would upload it."""
    from mix_pipeline.core.io import remote_root

    return {rel: (root / rel).read_bytes() for rel in remote_root._published_files(str(root))}


def s3_tree(url: str) -> dict[str, bytes]:
    """What a reader of `url` sees: CURRENT → the generation's _MANIFEST.json → its files."""
    from mix_pipeline.core.io import remote_root, storage

    fs = storage.filesystem(url)
    generation, files = remote_root.current_tree(url)
    out = {}
    for rel, meta in files.items():
        data = fs.cat_file(f"{url}/{remote_root.GENERATIONS}/{generation}/{rel}")
        assert hashlib.sha256(data).hexdigest() == meta["sha256"]
        out[rel] = data
    return out


def document_stages(env) -> None:
    """Run every document stage of `env`'s recipe in order, as the library would: raw and filtered
    per source, the dedup index, deduplicated per source (what a mixture reads)."""
    from mix_pipeline.core.stages import run_dedup_index, run_deduplicated, run_filtered, run_raw

    for source in env.recipe.sources:
        run_raw(env, source)
        run_filtered(env, source)
    run_dedup_index(env)
    for source in env.recipe.sources:
        run_deduplicated(env, source)


def latest_sid(instance, asset: str, partition: str | None = None) -> int:
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                                           asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(records_filter, limit=1).records
    return records[0].storage_id if records else -1


def check_statuses(instance, asset: str, partition: str) -> dict[str, str]:
    """{check: status} of each of an asset's checks on a partition, as Dagster resolves them for the
    UI: a check planned in a run but never evaluated is "SKIPPED", or "EXECUTION_FAILED" when that
    run failed; a check never planned there is absent."""
    import asyncio

    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.loader import LoadingContextForTest

    from mix_pipeline.core.gates.checks import checks_for

    keys = [dg.AssetCheckKey(dg.AssetKey(asset), name) for name in checks_for(asset)]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=partition))
    return {key.name: asyncio.run(record.resolve_status(LoadingContextForTest(instance))).value
            for key, record in records.items()}


def settle(instance, recipe, home: Path, after: int, timeout: float, may_fail: tuple[str, ...] = ()) -> float:
    """Wait until the daemon rebuilt the comparison after storage id `after` and nothing is stale
    (but what is held) or in flight; returns the seconds it took. Fails early, with the run's
    error, if a run fails (but a run of a partition in `may_fail`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        failed = [r for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
                  if r.tags.get("dagster/partition") not in may_fail]
        if failed:
            raise AssertionError(f"daemon run {failed[0].run_id} ({failed[0].job_name}) failed; "
                                 f"daemon log:\n{(home / 'daemon.log').read_text()[-3000:]}")
        if (latest_sid(instance, MIXTURE_COMPARISON) > after and not runs_in_flight(instance)
                and not next_wave(instance, recipe)[0]):
            return time.monotonic() - started
        time.sleep(2)
    raise AssertionError(f"not settled after {timeout} s; in flight: {runs_in_flight(instance)}; "
                         f"next: {next_wave(instance, recipe)}; daemon log:\n{(home / 'daemon.log').read_text()[-3000:]}")


# ---- small corpora and recipes shared by several test modules -----------------------------------------
def markov_language(rng, prefix: str, words: int = 1000):
    """A random Markov chain over `words` made-up words (each with a few likely successors)."""
    vocab = [f"{prefix}{i}" for i in range(words)]
    successors = rng.integers(0, words, size=(words, 4))
    return vocab, successors


def markov_documents(rng, language, n: int, length: int = 60) -> list[str]:
    vocab, successors = language
    docs = []
    for _ in range(n):
        w = int(rng.integers(len(vocab)))
        out = []
        for _ in range(length):
            out.append(vocab[w])
            w = int(successors[w, rng.integers(4)]) if rng.random() < 0.9 else int(rng.integers(len(vocab)))
        docs.append(" ".join(out))
    return docs


def write_deduplicated_source(root, source: str, texts: list[str], shards: int = 2) -> None:
    folder = root / "deduplicated" / source / "default"
    folder.mkdir(parents=True)
    for k in range(shards):
        part = texts[k::shards]
        ids = [f"{source}-{k}-{i}" for i in range(len(part))]
        table = pa.table({
            "id": ids, "text": part, "source": [source] * len(part), "domain": [source] * len(part),
            "metadata": ["{}"] * len(part), "n_tokens": [max(1, len(t.encode()) // 4) for t in part],
        }, schema=DEDUPLICATED_SCHEMA)
        pq.write_table(table, folder / f"part-{k:05d}.parquet")


def demo_like_recipe(sample: Path, data_root: Path, total: int, chat: bool = True) -> str:
    """recipes/demo.yaml pointed at `sample`; `chat=False` leaves out the chat sources and the SFT mixture."""
    text = (REPO / "recipes" / "demo.yaml").read_text()
    if not chat:
        head, rest = text.split("  # Chat (SFT) sets", 1)
        text = head + rest[rest.index("dedup:"):]
        text = text[: text.index("  # SFT:")]
    text = text.replace("../data/sample", str(sample)).replace("data_root: ../data", f"data_root: {data_root}")
    text = text.replace("allowed_roots: [../data]", f"allowed_roots: [{sample}]")
    text = text.replace("total: 2_000_000", f"total: {total}")
    # One process per stage keeps the suite quick on two cores; the sharding stays the same.
    return text.replace("executor: {kind: local, tasks: 2}", "executor: {kind: local, tasks: 2, workers: 1}")


def assert_card_matches(folder: Path, manifest: dict) -> None:
    """The mixture's README.md parses with huggingface_hub's DatasetCard and its numbers are the manifest's."""
    card = parse_card((folder / "README.md").read_text())
    data = card.data.to_dict()
    mp = data["mix_pipeline"]
    assert mp["output_sha256"] == manifest["output_sha256"] and mp["recipe_sha256"] == manifest["recipe_sha256"]
    assert mp["total_units"] == manifest["total_units"] and mp["licenses"] == manifest["licenses"]
    assert mp["unit"] == manifest["unit"] and mp["seed"] == manifest["seed"]
    for s, row in manifest["sources"].items():
        assert mp["sources"][s] == {k: row[k] for k in mp["sources"][s]}
    assert {x["name"]: x["num_examples"] for x in data["dataset_info"]["splits"]} == {
        s: v["documents"] for s, v in manifest["splits"].items()}
    assert {s: v["rows"] for s, v in mp["splits"].items()} == {s: v["documents"] for s, v in manifest["splits"].items()}
    for entry in data["configs"][0]["data_files"]:
        assert manifest["splits"][entry["split"]]["files"]
    assert f"`{manifest['output_sha256']}`" in card.text and "## Known limitations" in card.text


TWO_SOURCES_RECIPE = """
name: t
executor: {tasks: 2, workers: 1}
sources:
  books: {path: "books/*.jsonl"}
  web: {path: "web/*.jsonl"}
dedup: {minhash: null}
mixtures:
  m: {unit: documents, total: 100, weights: {books: 0.5, web: 0.5}, max_epochs: 2}
"""


def write_two_sources(folder: Path) -> None:
    for source in ("books", "web"):
        for f in range(2):  # two files, two tasks: two shards per stage
            write_jsonl(folder / source / f"{f}.jsonl",
                        [{"id": f"{source}-{f}-{i}", "text": f"{source} {f} {i}\n" + prose_doc(i + 60 * f, 3)} for i in range(60)])


# The quality-classifier tests' recipe over the 3 MB sample.
THRESHOLD = 0.3
BUCKETS = {"low": 0.0, "mid": 0.3, "high": 0.49}


def quality_recipe(folder: Path, sample: Path, extra: str = "", web_filters: str = f"[{{quality_classifier: {{threshold: {THRESHOLD}}}}}]",
            quality: str | None = None) -> Path:
    quality = quality or f"{{references: [books, papers], buckets: {json.dumps(BUCKETS)}}}"
    body = f"""
        name: quality
        data_root: data
        allowed_roots: ["{sample}"]
        executor: {{kind: local, tasks: 2, workers: 1}}
        sources:
          web: {{path: "{sample}/web/*.jsonl.gz", filters: {web_filters}}}
          books: {{path: "{sample}/books/*.parquet", format: parquet}}
          papers: {{path: "{sample}/papers/*.jsonl.zst", checks: {{raw_length_bounds: {{severity: warn}}}}}}
        quality_model: {quality}
    """
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(body) + textwrap.dedent(extra))
    return path
