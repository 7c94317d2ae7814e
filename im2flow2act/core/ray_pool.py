"""Batch jobs on a Ray cluster: Ray core actors, one per worker, each running the job's initializer once
(its models are built once per actor, not per item) and then items handed out by ``ray.util.ActorPool``.

Ray core rather than Ray Data: our jobs are a list of items, each writing one episode itself (atomically,
``preprocessing/dataset.py``) into a folder every node sees, and returning a small result row; Ray Data's
blocks and datasets would add a second copy of that bookkeeping. The driver only hands out items and
collects rows, so the local executor's results, names and guarantees hold unchanged:

* a dead actor (killed, out of memory, its node lost) is restarted, its initializer rerun, and the item it
  held retried (``max_retries``); a half-written episode never becomes visible, and the retry or a rerun
  writes it whole;
* a killed driver takes its actors with it (they are owned by it); a rerun skips what was written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from im2flow2act.core.processes import ExecutorConfig

FORWARDED_ENV = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
"""Set in every actor as in the driver: rendering backend and offline switches (Ray sets each actor's
OMP_NUM_THREADS to its CPUs, 1, as the local pool's workers run single-threaded)."""


class RayWorker:
    """One actor: the driver's working folder and rendering settings, then the job's initializer."""

    def __init__(
        self, cwd: str, env: dict[str, str], initializer: Callable[..., None] | None, initargs: tuple
    ) -> None:
        os.environ.update(env)
        if os.path.isdir(cwd):  # relative paths mean what they meant to the driver (shared storage)
            os.chdir(cwd)
        if initializer is not None:
            initializer(*initargs)

    def run(self, job: Callable[[Any], Any], item: Any) -> Any:
        return job(item)


def connect(executor: ExecutorConfig, workers: int) -> None:
    """Join ``executor.address``, or start a local Ray with at least ``workers`` CPUs (once per process)."""
    import ray

    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    if executor.address is None:
        options["num_cpus"] = max(workers, os.cpu_count() or 1)
    try:
        ray.init(address=executor.address, **options)
    except ConnectionError as err:
        raise ConnectionError(f"executor ray: no Ray cluster at {executor.address!r} ({err})") from err


def ray_map(
    job: Callable[[Any], Any],
    jobs: Iterable[Any],
    workers: int,
    initializer: Callable[..., None] | None,
    initargs: tuple,
    ordered: bool,
    executor: ExecutorConfig,
) -> Iterator[Any]:
    """``job`` over ``jobs`` on ``workers`` actors; results in input order when ``ordered``."""
    import ray
    from ray.util import ActorPool

    connect(executor, workers)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    actor = ray.remote(RayWorker).options(
        num_cpus=1,
        num_gpus=executor.gpus_per_worker,
        max_restarts=executor.max_retries,
        max_task_retries=executor.max_retries,
    )
    actors = [actor.remote(os.getcwd(), env, initializer, initargs) for _ in range(max(1, workers))]
    pool = ActorPool(actors)

    def submit(worker, item):
        return worker.run.remote(job, item)

    try:
        yield from (pool.map if ordered else pool.map_unordered)(submit, list(jobs))
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
