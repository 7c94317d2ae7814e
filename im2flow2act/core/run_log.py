"""Bookkeeping shared by the training runs (policy, flow generator): the run folder and a metrics log.

A run folder belongs to one training config and one run at a time: ``RunLock`` holds ``train.lock`` with
``fcntl.flock`` while a run trains (a second run into the same folder fails at once), and
``record_config`` writes ``train_config.yaml`` or, when the folder has one, refuses a config that does not
fit it (resuming with other settings would silently train a different model). The log is ``metrics.csv``
(appended to across resumes; one header; rows past the step a run resumes from are dropped, so a resumed run
has no duplicate steps) plus TensorBoard scalars, so a run can be read with a spreadsheet or watched live.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from tqdm import tqdm

from im2flow2act.core.checkpoint import write_atomic
from im2flow2act.core.config import ConfigError, from_dict, to_dict

LOCK_FILE = "train.lock"
R = TypeVar("R")


class RunFolderError(ValueError):
    """The run folder is in use by another run, or was made by a config that does not fit this one."""


class RunLock:
    """``with RunLock(run_dir):`` — an exclusive ``flock`` on ``run_dir/train.lock`` for the run's life."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise RunFolderError(
                f"another training run is using {self.path.parent} (it holds {self.path}); "
                f"wait for it to finish or train into another --out"
            ) from err
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): data}


def record_config(config: Any, path: str | Path, may_differ: Collection[str] = ()) -> Path:
    """Write ``config`` to ``path`` (YAML), or check it against the config recorded there.

    Keys in ``may_differ`` (dotted, e.g. ``log_every``) may change between runs into one folder; any other
    difference raises ``RunFolderError`` naming every differing key, and leaves the recorded file as it was.
    """
    path = Path(path)
    new = to_dict(config)
    if path.is_file():
        try:
            recorded = to_dict(from_dict(type(config), yaml.safe_load(path.read_text()) or {}, str(path)))
        except (yaml.YAMLError, ConfigError) as err:
            raise RunFolderError(
                f"{path} (the config this run folder was trained with) cannot be read: {err}; "
                f"train into another --out"
            ) from err
        old_flat, new_flat = _flatten(recorded), _flatten(new)
        differing = sorted(k for k in old_flat.keys() | new_flat.keys() if old_flat.get(k) != new_flat.get(k))
        refused = [k for k in differing if k not in may_differ]
        if refused:
            changes = "; ".join(f"{k}: {old_flat.get(k)!r} → {new_flat.get(k)!r}" for k in refused)
            allowed = ", ".join(sorted(may_differ)) or "none"
            raise RunFolderError(
                f"{path.parent} was trained with another config ({path}); differing keys: {changes}. "
                f"Resume with the recorded config or train into another --out (keys that may differ on "
                f"resume: {allowed})"
            )
        if not differing:
            return path
    text = yaml.safe_dump(new, sort_keys=False)
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def on_main(accelerator: Any, fn: Callable[[], R]) -> R | None:
    """Run ``fn`` on the main process only; an error it raises is raised on every process (so the others
    stop instead of waiting for the main one at the next collective)."""
    error: Exception | None = None
    result = None
    if accelerator.is_main_process:
        try:
            result = fn()
        except Exception as err:
            error = err
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [None if error is None else (type(error), str(error))]
        broadcast_object_list(box, from_process=0)
        if error is None and box[0] is not None:
            kind, message = box[0]
            try:
                error = kind(f"(main process) {message}")
            except Exception:
                error = RuntimeError(f"(main process) {message}")
    if error is not None:
        raise error
    return result


@contextlib.contextmanager
def hold_lock(accelerator: Any, run_dir: str | Path) -> Iterator[None]:
    """The main process holds ``RunLock(run_dir)`` for the block; a refusal stops every process."""
    lock = RunLock(run_dir)
    on_main(accelerator, lock.__enter__)
    try:
        yield
    finally:
        lock.__exit__()


def trim_metrics(path: str | Path, step: int) -> None:
    """Drop the rows of ``metrics.csv`` past ``step`` (a resumed run writes them again)."""
    path = Path(path)
    if not path.is_file():
        return
    rows = list(csv.reader(path.open(newline="")))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    if len(kept) == len(rows):
        return
    buffer = io.StringIO()
    csv.writer(buffer).writerows(kept)
    write_atomic(path, lambda tmp: tmp.write_text(buffer.getvalue()))


class MetricsLog:
    """``with MetricsLog(run_dir, ["loss", "lr"], resume_step=step) as log: log.write(step, values)``.

    ``enabled=False`` (every process but the main one) writes nothing."""

    def __init__(
        self, run_dir: str | Path, keys: list[str], resume_step: int | None = None, enabled: bool = True
    ) -> None:
        self.keys = keys
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        path = Path(run_dir) / "metrics.csv"
        if resume_step is not None:
            trim_metrics(path, resume_step)
        new = not path.is_file()
        self._file = path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", *keys, "seconds"])
        self._tensorboard = SummaryWriter(Path(run_dir) / "tensorboard")
        self._started = time.perf_counter()

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        seconds = round(time.perf_counter() - self._started, 2)
        self._csv.writerow([step, *(values[k] for k in self.keys), seconds])
        self._file.flush()
        for key in self.keys:
            self._tensorboard.add_scalar(key, values[key], step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        self._tensorboard.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainingRun(Protocol):
    """What :func:`run_steps` drives: both trainers are one."""

    config: Any  # max_steps, log_every, checkpoint_every
    accelerator: Any
    out_dir: Path
    step: int

    def train_step(self) -> dict[str, float]: ...

    def save(self) -> Any: ...


def run_steps(
    run: TrainingRun,
    keys: list[str],
    desc: str,
    progress: bool = True,
    after_step: Callable[[bool], None] | None = None,
) -> dict[str, float]:
    """Step ``run`` from its current step to ``max_steps``: log every ``log_every`` steps and checkpoint every
    ``checkpoint_every`` (and both at the end), from the main process only; ``after_step(last)`` adds a
    trainer's own per-step work. Returns the last step's values."""
    c, acc = run.config, run.accelerator
    last: dict[str, float] = {}
    with MetricsLog(run.out_dir, keys, resume_step=run.step, enabled=acc.is_main_process) as log:
        bar = tqdm(
            total=c.max_steps, initial=run.step, desc=desc, disable=not (progress and acc.is_main_process)
        )
        while run.step < c.max_steps:
            last = run.train_step()
            bar.update()
            final = run.step == c.max_steps
            if run.step % c.log_every == 0 or final:
                log.write(run.step, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if run.step % c.checkpoint_every == 0 or final:
                run.save()
            if after_step is not None:
                after_step(final)
        bar.close()
    return last
