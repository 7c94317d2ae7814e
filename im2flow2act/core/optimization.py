"""The optimisation both trainers share: AdamW, a cosine LR schedule with warm-up, and an EMA of the weights.

One object, so im2flow and the policy step, save and resume them the same way. The LR scheduler steps
*after* the optimiser (the reference had them the other way round). The state dict keeps the keys
``optimizer``, ``lr_schedule`` and ``ema`` that checkpoints have always used, so older checkpoints resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel


@dataclass
class OptimizationConfig:
    """The fields both training configs share (they subclass this)."""

    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    max_steps: int = 2000
    ema_power: float = 0.75


class Optimization:
    def __init__(self, params: Iterable[torch.nn.Parameter], config: OptimizationConfig) -> None:
        c = config
        self.params = list(params)
        self.optimizer = torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)
        self.lr_schedule = get_cosine_schedule_with_warmup(self.optimizer, c.warmup_steps, c.max_steps)
        self.ema = EMAModel(self.params, power=c.ema_power, use_ema_warmup=True)

    def prepare(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        """Hand the model and the optimiser to ``accelerate``; returns the prepared model."""
        model, self.optimizer = accelerator.prepare(model, self.optimizer)
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
