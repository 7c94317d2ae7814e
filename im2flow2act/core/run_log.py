"""Bookkeeping shared by the training runs (policy, flow generator): atomic checkpoints and a metrics log.

The log is ``metrics.csv`` (appended to across resumes; one header) plus TensorBoard scalars, so a run can be
read with a spreadsheet or watched live.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary name, then rename: a killed run never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


class MetricsLog:
    """``with MetricsLog(run_dir, ["loss", "lr"]) as log: log.write(step, values)``."""

    def __init__(self, run_dir: str | Path, keys: list[str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.keys = keys
        path = Path(run_dir) / "metrics.csv"
        new = not path.is_file()
        self._file = path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", *keys, "seconds"])
        self._tensorboard = SummaryWriter(Path(run_dir) / "tensorboard")
        self._started = time.perf_counter()

    def write(self, step: int, values: dict[str, float]) -> None:
        seconds = round(time.perf_counter() - self._started, 2)
        self._csv.writerow([step, *(values[k] for k in self.keys), seconds])
        self._file.flush()
        for key in self.keys:
            self._tensorboard.add_scalar(key, values[key], step)

    def close(self) -> None:
        self._file.close()
        self._tensorboard.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
