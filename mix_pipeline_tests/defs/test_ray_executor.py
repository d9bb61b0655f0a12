"""`executor: {kind: ray}` on a real three-node Ray cluster (a head and two worker nodes, all on
127.0.0.1, started by ray.cluster_utils.Cluster) with the sources and data_root on an S3 server
(moto, 127.0.0.1): the stages' tasks run as Ray actors on the nodes, the CLI process is the
driver and writes the catalog, and every published file is byte-identical to a `kind: local` run
of the same recipe on local disk. Also: the one-line errors for an unreachable address and for a
failing task."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# A cluster on 127.0.0.1: Ray would otherwise turn a loopback address into this machine's own
# address (its "node IP") before connecting, where the nodes bound to 127.0.0.1 do not listen.
# Read when ray is imported, so set first.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the ray extra is not installed (make install installs it)")

from mix_pipeline.cli import main  # noqa: E402
from mix_pipeline.sample.corpus import build_sample_corpus  # noqa: E402
from mix_pipeline.core.io import remote_root  # noqa: E402
from mix_pipeline_tests.helpers import document_stages, local_tree, moto_s3, normalised, s3_tree  # noqa: E402

RECIPE = """
name: on_ray
data_root: {data_root}
allowed_roots: [{allowed}]
executor: {executor}
sources:
  web:
    path: "{inputs}/web/*.jsonl.gz"
    filters: [{{language: {{languages: [en]}}}}, gopher_repetition, pii]
  books:
    path: "{inputs}/books/*.parquet"
    format: parquet
    filters: [gopher_repetition]
decontamination:
  eval_sets: ["{inputs}/evals/*.jsonl"]
dedup: {{exact: true, minhash: {{threshold: 0.8}}, priority: [books, web]}}
mixtures:
  general:
    total: 80000
    weights: {{web: 0.6, books: 0.4}}
    max_epochs: 4
    shard_rows: 50
    seed: 3
    outputs: {{jsonl: true}}
"""


def run(work: Path, inputs: Path | str, executor: str, monkeypatch, capsys, data_root: str = "data",
        allowed: str | None = None) -> int:
    work.mkdir(parents=True, exist_ok=True)
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(inputs=inputs, executor=executor, data_root=data_root, allowed=allowed or inputs))
    monkeypatch.setenv("DAGSTER_HOME", str(work / "dagster_home"))
    monkeypatch.setenv("MIX_PIPELINE_LOG_LEVEL", "WARNING")
    code = main(["run", "--recipe", str(recipe)])
    return code


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray_inputs")
    build_sample_corpus(out, size_mb=0.6, seed=21)
    return out


@pytest.fixture(scope="module")
def cluster():
    """A head node and two worker nodes, one CPU each, on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20, "node_ip_address": "127.0.0.1",
            "resources": {}}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    c.add_node(**node)
    c.add_node(**node)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def rank_worker_nodes() -> set[str]:
    """The nodes datatrove's RankWorker actors (one per Ray task) ran on, from the cluster's GCS."""
    from ray._private.state import state

    return {a["Address"]["NodeID"] for a in state.actor_table(None).values() if a["ActorClassName"].endswith("RankWorker")}


def test_a_three_node_ray_run_on_object_storage_publishes_the_local_runs_bytes(inputs, cluster, tmp_path,
                                                                               monkeypatch, capsys):
    pytest.importorskip("s3fs")
    executor = "{kind: local, tasks: 3, workers: 2}"
    assert run(tmp_path / "local", inputs, executor, monkeypatch, capsys) == 0
    local_root = tmp_path / "local" / "data"
    expected = normalised(local_tree(local_root), str(local_root.resolve()))
    assert any(k.startswith("mixtures/general/") and k.endswith(".parquet") for k in expected)
    with moto_s3(inputs) as url:
        # The same recipe with its sources and data_root on the S3 server, run on the cluster
        # (the nodes never saw the S3 settings: the driver forwards them to its tasks).
        monkeypatch.setenv("MIX_PIPELINE_EXECUTOR", f"{{kind: ray, address: '{cluster.address}', workers: 3, "
                                                   "memory_per_task_gb: 0.25}")
        monkeypatch.setenv(remote_root.WORK_DIR_ENV, str(tmp_path / "mirror"))
        out = "s3://out/on_ray"
        assert run(tmp_path / "ray", url, executor, monkeypatch, capsys, data_root=out, allowed=f"{url}, {out}") == 0
        mirror = next((tmp_path / "mirror").iterdir())
        assert normalised(s3_tree(out), str(mirror.resolve())) == expected
    # The tasks ran as Ray actors on more than one node (each node has one CPU).
    assert len(rank_worker_nodes()) >= 2
    # Our own deduplicated pass ran as cluster tasks too (locally it runs in-process, no logs).
    logs = mirror / "_work" / "logs" / "deduplicated"
    assert sorted(p.name for p in logs.rglob("completions/*"))
    assert not (local_root / "_work" / "logs" / "deduplicated").exists()
    # The mixture was planned by one cluster task and written by one per split, not by the driver.
    mixture_logs = mirror / "_work" / "logs" / "mixture" / "general"
    assert sorted(p.name for p in (mixture_logs / "plan").glob("completions/*")) == ["00000"]
    assert sorted(p.name for p in (mixture_logs / "write").glob("completions/*")) == ["00000", "00001", "00002"]
    manifest = json.loads((local_root / "mixtures" / "general" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["documents"] > 0


def test_an_infeasible_mixture_planned_on_the_cluster_fails_its_gate_in_one_line(inputs, cluster, tmp_path):
    """The plan is made by a cluster task; what it cannot satisfy comes back to the driver, which
    fails the gate with the planner's one-line reason and writes nothing."""
    from mix_pipeline.core.gates.checks import GateFailed
    from mix_pipeline.core.stages import StageEnv, local_runner, run_mixture
    from mix_pipeline.core.stages.executors import ray_runner
    from mix_pipeline.recipe import load_recipe

    (tmp_path / "recipe.yaml").write_text(RECIPE.format(inputs=inputs, executor="{kind: local, tasks: 1}",
                                                        data_root="data", allowed=inputs))
    recipe = load_recipe(tmp_path / "recipe.yaml")
    env = StageEnv(recipe, runner=local_runner(1), log=lambda m: None)
    document_stages(env)
    greedy = recipe.mixtures["general"].model_copy(update={"total": 10**9})
    env.recipe = recipe.model_copy(update={"mixtures": {"general": greedy}})
    env.runner = ray_runner(cluster.address, memory_per_task_gb=0.25)
    with pytest.raises(GateFailed) as exc:
        run_mixture(env, "general")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("mixture[general]: quality gate failed, output not published: weights_within_tolerance: "
                              "mixture 'general': source '") and "is short: the target needs" in message, message
    logs = tmp_path / "data" / "_work" / "logs" / "mixture" / "general"
    assert (logs / "plan" / "completions" / "00000").exists() and not (logs / "write").exists()
    assert not (tmp_path / "data" / "mixtures").exists()


def test_an_unreachable_address_fails_at_once_in_one_line(inputs, tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = run(tmp_path, inputs, f"{{kind: ray, address: '127.0.0.1:{port}'}}", monkeypatch, capsys)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err and "ray start --head" in err
    assert not (tmp_path / "data" / "raw").exists()


def test_the_ray_executor_without_the_ray_package_fails_in_one_line(inputs, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where the extra is not installed
    code = run(tmp_path, inputs, "{kind: ray}", monkeypatch, capsys)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert "executor.kind 'ray' needs the ray package" in err and "pip install 'mix_pipeline[ray]'" in err


def test_a_task_that_fails_on_the_cluster_fails_the_stage_in_one_line(cluster, tmp_path):
    from mix_pipeline.core.stages.executors import ray_runner

    def step(data, rank, world_size):  # defined here: Ray ships it by value
        if rank == 1:
            raise ValueError("rank one cannot read its shard")
        return data

    with pytest.raises(RuntimeError) as exc:
        ray_runner(cluster.address, memory_per_task_gb=0.25)([step], str(tmp_path / "logs"), 2)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("Ray task 1 of 2 failed") and "rank one cannot read its shard" in message, message


def test_tasks_on_the_cluster_read_object_storage_with_the_drivers_settings(cluster, tmp_path, monkeypatch):
    """The nodes were started without any S3 settings: the endpoint and credentials reach the
    tasks only through the runner (the driver's environment, forwarded per task)."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    from mix_pipeline.core.io import storage
    from mix_pipeline.core.stages.executors import ray_runner

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.get_host_and_port()[1]}")
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(k, "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        fs = storage.filesystem("s3://bucket")
        fs.mkdir("s3://bucket")
        fs.pipe_file("s3://bucket/in/a.txt", b"alpha")
        fs.pipe_file("s3://bucket/in/b.txt", b"beta")
        out = tmp_path / "out"
        out.mkdir()

        def step(data, rank, world_size):  # each rank copies its object out of the store
            files = storage.glob_files("s3://bucket/in/*.txt")[rank::world_size]
            for url in files:
                with storage.local_copy(url) as local, open(local, "rb") as f:
                    (out / f"{rank}-{url.rsplit('/', 1)[1]}").write_bytes(f.read())
            return data

        ray_runner(cluster.address, memory_per_task_gb=0.25)([step], str(tmp_path / "logs"), 2)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == {"0-a.txt": b"alpha", "1-b.txt": b"beta"}
    finally:
        server.stop()
