"""Command-line options shared by the batch commands (``ingest``, ``sim demos|play|expert``): where their
workers run."""

from __future__ import annotations

from typing import Annotated

import typer

from im2flow2act.core.config import ConfigError
from im2flow2act.core.processes import ExecutorConfig

ExecutorOpt = Annotated[
    str, typer.Option(help="Where the workers run: local (processes here) or ray (actors on a Ray cluster).")
]
AddressOpt = Annotated[
    str | None,
    typer.Option(help="--executor ray: the cluster to join (ray start --head prints it); default: local."),
]
GpusOpt = Annotated[
    float, typer.Option(help="--executor ray: GPUs per worker (learned trackers, detectors); 0 = CPU only.")
]


def executor_config(executor: str, address: str | None, gpus_per_worker: float) -> ExecutorConfig:
    """The options as a config; ConfigError on a bad value."""
    try:
        return ExecutorConfig(kind=executor, address=address, gpus_per_worker=gpus_per_worker)
    except ValueError as err:
        raise ConfigError(f"--executor/--address/--gpus-per-worker: {err}") from err
