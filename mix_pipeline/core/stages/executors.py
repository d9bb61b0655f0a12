"""Where the document stages' tasks run: local processes or a Ray cluster.

A runner is `(pipeline, logging_dir, tasks) -> None` (see core/stages/base.py PipelineRunner). `local` is
datatrove's LocalPipelineExecutor (local_runner there); `ray` is datatrove's
RayPipelineExecutor: each task is a Ray actor somewhere on the cluster running the same step list
for its rank. The process that calls the runner (the CLI or Dagster run) is the Ray driver: it
plans, lists the staged files the tasks wrote, runs the checks, publishes and writes the DuckDB
catalog; workers only write Parquet shards and datatrove's per-task stats.

What a task writes depends on its rank and the task count (`executor.tasks`), never on which node
or worker ran it, nor on how many ran at once (`executor.workers`), so a Ray run's outputs are
byte-identical to a local run's with the same `tasks`.

Workers write into the stage's staging folder under data_root: on a cluster of more than one
machine, data_root (and the folders the recipe's local sources live in) must be a filesystem every
node mounts at the same path (NFS, a shared volume), or the sources must live on object storage
(core/io/storage.py), which workers read directly.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

from mix_pipeline.errors import RecipeError

# The Ray address the current process is connected to as a driver ("" for a local instance).
_connected: str | None = None
_lock = threading.Lock()

RAY_EXTRA = "pip install 'mix_pipeline[ray]'"


class ExecutorError(RecipeError):
    """An executor cannot be used as configured; one line naming the setting and the fix."""


def require_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"executor.kind 'ray' needs the ray package, which is not installed: {RAY_EXTRA}") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a `host:port`, `ray://host:port` or `ray://host` address; None for `auto`/`local`."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[-1].rstrip("/")
    default = 10001 if address.startswith("ray://") else 6379
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", str(default))
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ExecutorError(f"executor.address: '{address}' is not host:port (e.g. 127.0.0.1:6379)") from None


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Raise ExecutorError unless something answers on the address's port (Ray's own connect
    would retry for a minute before failing)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        raise ExecutorError(
            f"executor.address: cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head --port {target[1]}` or fix the address"
        ) from None


def connect(address: str | None) -> None:
    """Connect this process to the Ray cluster once (a driver); `None` starts a private local Ray."""
    global _connected
    ray = require_ray()
    with _lock:
        wanted = address or os.environ.get("RAY_ADDRESS") or ""
        if ray.is_initialized() and _connected == wanted:
            return
        if wanted:
            check_reachable(wanted)
        if ray.is_initialized():  # a long-lived process (the Dagster code server) moved to another cluster
            ray.shutdown()
        try:
            # log_to_driver off: a task's log is in <logging_dir>/logs/task_NNNNN.log, and its
            # error is raised by ray_runner as one line.
            ray.init(address=wanted or None, ignore_reinit_error=True, log_to_driver=False,
                     logging_level="WARNING", configure_logging=False)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExecutorError(f"executor.address: cannot connect to Ray at '{wanted or 'a new local instance'}': "
                                f"{first}") from None
        _connected = wanted


def _task_error(logging_dir: str, rank: int) -> str:
    """The last exception line a failed task logged, for the one-line error."""
    path = os.path.join(logging_dir, "logs", f"task_{rank:05d}.log")
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "no log (the worker died before writing one)"
    errors = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and not ln.startswith(("File ", "Traceback"))]
    return (errors or lines or ["empty log"])[-1][:300]


def ray_runner(address: str | None = None, workers: int | None = None, cpus_per_task: float = 1,
               memory_per_task_gb: float = 1) -> Callable[[list, str, int], None]:
    """Runs a datatrove step list as `tasks` Ray tasks (RayPipelineExecutor), at most `workers` at a
    time (default: all of them, as the cluster's free CPUs allow). Raises if any task did not complete."""

    def run(pipeline: list, logging_dir: str, tasks: int) -> None:
        connect(address)
        from datatrove.executor.ray import RayPipelineExecutor

        from mix_pipeline.core.io.storage import forwarded_env

        # Object-storage settings (endpoint, credentials) as the driver has them now, for tasks
        # on any node: each task's actor gets them in its environment.
        env = forwarded_env()
        executor = RayPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=min(workers or tasks, tasks),
            logging_dir=logging_dir,
            # Reruns redo the work: outputs are replaced whole, as with the local runner.
            skip_completed=False,
            cpus_per_task=cpus_per_task,
            mem_per_cpu_gb=memory_per_task_gb / max(cpus_per_task, 1e-9),
            ray_remote_kwargs={"runtime_env": {"env_vars": env}} if env else None,
        )
        executor.run()
        # RayPipelineExecutor logs a failed task and returns; a partition with a missing rank
        # must not be published.
        missing = [r for r in range(tasks) if not os.path.exists(os.path.join(logging_dir, "completions", f"{r:05d}"))]
        if missing:
            raise RuntimeError(f"Ray task {missing[0]} of {tasks} failed ({len(missing)} in all): "
                               f"{_task_error(logging_dir, missing[0])} (see {logging_dir}/logs)")

    run.distributed = True  # our own in-process steps may fan out too (core/stages/deduplicated.py)
    return run


def runner_for(kind: str, workers: int | None = None, address: str | None = None, cpus_per_task: float = 1,
               memory_per_task_gb: float = 1):
    """The runner an executor spec asks for."""
    if kind == "local":
        from mix_pipeline.core.stages.base import local_runner

        return local_runner(workers)
    if kind == "ray":
        require_ray()
        return ray_runner(address, workers, cpus_per_task, memory_per_task_gb)
    raise ExecutorError(f"executor.kind: '{kind}' is not supported (supported: local, ray)")


# Where the stages run, set outside the recipe: a YAML/JSON mapping merged over the recipe's
# `executor`, e.g. MIX_PIPELINE_EXECUTOR='{kind: ray, address: 10.0.0.5:6379}'. The same recipe
# file (so the same recipe hash in every manifest) then runs on a laptop or on a cluster.
# `tasks` cannot be set here: it shapes the shards, so it belongs to the recipe.
OVERRIDE_ENV = "MIX_PIPELINE_EXECUTOR"


def effective_spec(recipe):
    """The recipe's executor with MIX_PIPELINE_EXECUTOR's settings applied."""
    import yaml
    from pydantic import ValidationError

    from mix_pipeline.recipe import ExecutorSpec

    raw = os.environ.get(OVERRIDE_ENV, "").strip()
    if not raw:
        return recipe.executor
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise ExecutorError(f"{OVERRIDE_ENV}: '{raw}' is not a mapping; give e.g. '{{kind: ray, address: host:6379}}'")
    if "tasks" in data:
        raise ExecutorError(f"{OVERRIDE_ENV}: 'tasks' shapes the outputs, so it is set in the recipe's executor, not here")
    merged = recipe.executor.model_dump()
    if data.get("kind", merged["kind"]) != "ray":
        merged["address"] = None
    try:
        return ExecutorSpec.model_validate(merged | data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ExecutorError(f"{OVERRIDE_ENV}: {where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None


def recipe_runner(recipe):
    """The runner the recipe's executor asks for, MIX_PIPELINE_EXECUTOR applied: what the Dagster
    resource gives the daemon's and the UI's runs, for stages run outside a Dagster job."""
    spec = effective_spec(recipe)
    return runner_for(spec.kind, spec.workers, spec.address, spec.cpus_per_task, spec.memory_per_task_gb)


def preflight(recipe) -> None:
    """Fail fast, before any stage runs, when the recipe's executor cannot be used (the extra is
    missing, the cluster cannot be reached) or a path names object storage whose filesystem
    package is missing."""
    spec = effective_spec(recipe)
    if spec.kind == "ray":
        # Connect now (this process is the driver for the whole run): a cluster that cannot be
        # reached or found (`auto` with none running) fails here, before any stage, in one line.
        connect(spec.address)
    from mix_pipeline.core.io import storage

    for key, path in recipe.path_keys():
        if storage.is_url(path):
            storage.require_filesystem(path, key)
