"""Local worker processes for batch jobs (ingest, the simulator, evaluation columns): one way to map a job
list over a spawn pool whose workers die with their parent."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any


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
) -> Iterator[Any]:
    """``job`` over ``jobs``: in this process when ``workers`` ≤ 1, else in a spawn pool of ``workers``
    whose processes each run ``initializer(*initargs)`` first (this process is the caller's to prepare);
    results as they finish when not ``ordered``. An exception or interrupt here stops the workers."""
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
