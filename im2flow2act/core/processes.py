"""Worker processes for batch jobs (ingest, the simulator, evaluation columns): one way to map a job list
over workers — a local spawn pool whose workers die with their parent, or actors on a Ray cluster
(``core/ray_pool.py``) — with the same job functions, initializers and results either way."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

EXECUTORS = ("local", "ray")


@dataclass
class ExecutorConfig:
    """Where a batch job's workers run."""

    kind: str = "local"
    """local: processes of this machine | ray: actors on a Ray cluster (one per worker, each holding its
    models for the whole job)."""
    address: str | None = None
    """ray: the cluster to join (``ray start --head`` prints it; ``auto`` finds one started on this node);
    None starts a local Ray with at least ``workers`` CPUs, for this process's lifetime."""
    gpus_per_worker: float = 0.0
    """ray: GPUs each actor asks for (a learned tracker or detector on GPU nodes); 0 keeps it on CPUs."""
    max_retries: int = 2
    """ray: how often a dead actor is restarted and its item retried (a killed or crashed worker)."""

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor must be one of {' | '.join(EXECUTORS)}, got {self.kind!r}")
        if self.address is not None and self.kind != "ray":
            raise ValueError(f"an executor address ({self.address!r}) needs executor ray")
        if not isinstance(self.gpus_per_worker, (int, float)) or self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be a number of at least 0, got {self.gpus_per_worker!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer of at least 0, got {self.max_retries!r}")


def exit_with_parent() -> None:
    """In a pool worker: end this process the moment its parent does (killed with -9 too) instead of
    finishing its job for nobody. The pool's task pipe never reports the parent's death (every worker holds
    its write end too); the parent's sentinel does."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])  # readable once the parent is gone
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    exit_with_parent()
    if initializer is not None:
        initializer(*initargs)


def pool_map(
    job: Callable[[Any], Any],
    jobs: Iterable[Any],
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    ordered: bool = True,
    executor: ExecutorConfig | None = None,
) -> Iterator[Any]:
    """``job`` over ``jobs``: in this process when ``workers`` ≤ 1, else in a spawn pool of ``workers``
    whose processes each run ``initializer(*initargs)`` first (this process is the caller's to prepare);
    results as they finish when not ``ordered``. An exception or interrupt here stops the workers.
    With a ``ray`` executor, ``workers`` actors do the same on a Ray cluster (also when ``workers`` is 1)."""
    if executor is not None and executor.kind == "ray":
        from im2flow2act.core.ray_pool import ray_map

        yield from ray_map(job, jobs, workers, initializer, initargs, ordered, executor)
        return
    if workers <= 1:
        yield from map(job, jobs)
        return
    pool = mp.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(initializer, initargs))
    try:
        yield from (pool.imap if ordered else pool.imap_unordered)(job, jobs)
        pool.close()  # all done: let the workers exit on their own
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
