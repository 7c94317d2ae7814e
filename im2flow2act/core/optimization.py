"""The optimisation both trainers share: AdamW, a cosine LR schedule with warm-up, and an EMA of the weights.

One object, so im2flow and the policy step, save and resume them the same way. The LR scheduler steps
*after* the optimiser (the reference had them the other way round). The state dict keeps the keys
``optimizer``, ``lr_schedule`` and ``ema`` that checkpoints have always used, so older checkpoints resume.
Gradients are clipped after ``accelerator.backward``, i.e. on the gradients DDP has already averaged, so
every process clips by the same norm.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch.utils.data import Sampler


@dataclass
class OptimizationConfig:
    """The fields both training configs share (they subclass this)."""

    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    max_steps: int = 2000
    ema_power: float = 0.75


def make_accelerator() -> Accelerator:
    """The ``Accelerator`` of this launch. Several processes without GPUs (``torch.distributed.run`` or
    ``accelerate launch`` on CPUs) train over gloo, which ``accelerate`` only sets up when told ``cpu``."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(cpu=several and not torch.cuda.is_available())


class Optimization:
    def __init__(self, params: Iterable[torch.nn.Parameter], config: OptimizationConfig) -> None:
        c = config
        self.params = list(params)
        self.optimizer = torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)
        self.lr_schedule = get_cosine_schedule_with_warmup(self.optimizer, c.warmup_steps, c.max_steps)
        self.ema = EMAModel(self.params, power=c.ema_power, use_ema_warmup=True)

    def prepare(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        """Hand the model and the optimiser to ``accelerate``; returns the prepared model (DDP-wrapped
        under several processes: call it, not the inner module, so that gradients are averaged). Only
        parameters that train take part (DDP skips frozen ones); the EMA moves to the model's device, and
        since every process steps it on the same averaged weights, it stays the same everywhere."""
        model, self.optimizer = accelerator.prepare(model, self.optimizer)
        self.ema.to(accelerator.device)
        return model

    def step(self, accelerator: Accelerator, loss: torch.Tensor, max_grad_norm: float = 1.0) -> float:
        """Backward, clip, optimiser step, LR step, EMA step; returns the learning rate just used."""
        self.optimizer.zero_grad()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(self.params, max_grad_norm)
        self.optimizer.step()
        self.lr_schedule.step()
        self.ema.step(self.params)
        return self.lr_schedule.get_last_lr()[0]

    def copy_ema_to(self, params: Iterable[torch.nn.Parameter]) -> None:
        self.ema.copy_to(list(params))

    def state_dict(self) -> dict[str, Any]:
        return {
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])


def batch_indices(
    count: int, size: int, seed: int, step: int, rank: int = 0, processes: int = 1
) -> np.ndarray:
    """This process's ``size`` sample indices for a training step.

    The step draws ``size`` indices per process from (seed, step) alone, so a resumed run takes the same
    batches; process k takes the k-th slice, so several GPUs train on different samples, and one process
    gets exactly what a single-process run gets."""
    drawn = np.random.default_rng((seed, step)).integers(0, count, size * processes)
    return drawn[rank * size : (rank + 1) * size]


class StepBatches(Sampler[list[tuple[int, int, int]]]):
    """A DataLoader ``batch_sampler``: for every step from ``start_step`` on, this process's batch as
    (step, position in the step's global batch, sample index) triples.

    The indices are ``batch_indices`` (so a resumed run takes the same batches, and process k the k-th
    slice); the position lets per-sample randomness follow the sample, not the process, so B samples on
    each of two processes draw what 2B samples on one do."""

    def __init__(
        self, count: int, size: int, seed: int, start_step: int = 0, rank: int = 0, processes: int = 1
    ) -> None:
        self.count, self.size, self.seed = count, size, seed
        self.start_step, self.rank, self.processes = start_step, rank, processes

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in itertools.count(self.start_step):
            idx = batch_indices(self.count, self.size, self.seed, step, self.rank, self.processes)
            first = self.rank * self.size
            yield [(step, first + k, int(i)) for k, i in enumerate(idx)]


def sample_generators(
    seed: int, step: int, positions: Iterable[int], stream: int = 0
) -> list[torch.Generator]:
    """One CPU generator per sample of a step, seeded by (seed, step, its global position, stream).

    Noise drawn from them depends on neither the number of processes nor the batch split; ``stream``
    separates independent uses (diffusion noise, augmentation)."""
    out = []
    for position in positions:
        state = np.random.SeedSequence([seed, step, int(position), stream]).generate_state(2, np.uint32)
        out.append(torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1))
    return out


def stack_draws(draw, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
    """``draw(1, generator)`` for every sample's generator, concatenated along the batch."""
    parts = [draw(1, g) for g in generators]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
