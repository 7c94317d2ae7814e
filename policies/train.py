"""Train the flow-conditioned policy on play data, with ``accelerate`` (the same code on CPU or GPUs).

Determinism and exact resume: the batch and the diffusion noise of step s depend only on (seed, s), so a
run resumed from a checkpoint takes exactly the steps the uninterrupted run would have taken. A checkpoint
holds the model (with its normaliser), the EMA weights, the optimiser, the LR schedule and the step.
The learning rate follows a cosine schedule with warm-up, and the LR scheduler steps *after* the optimiser
(the reference had them the other way round). Metrics go to ``metrics.csv`` and TensorBoard.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from im2flow2act.policies.data import PlayWindows, WindowConfig
from im2flow2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig
from tqdm import tqdm

from im2flow2act.core.config import save_config
from im2flow2act.core.optimization import Optimization, OptimizationConfig, batch_indices
from im2flow2act.core.run_log import MetricsLog, save_atomic

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig(OptimizationConfig):
    data: list[str] = field(default_factory=lambda: ["outputs/sim_play/dataset.zarr"])
    policy: FlowPolicyConfig = field(default_factory=FlowPolicyConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    batch_size: int = 64
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        """The windows must be cut the way the policy reads them; a mismatch fails when the config is read."""
        for key in ("plan_frames", "obs_horizon", "pred_horizon"):
            window, policy = getattr(self.windows, key), getattr(self.policy, key)
            if window != policy:
                raise ValueError(
                    f"windows.{key}={window} but policy.{key}={policy}: set both to the same value"
                )


def _batch(data: PlayWindows, indices: np.ndarray, step: int) -> dict[str, torch.Tensor]:
    data.set_epoch(step)
    items = [data[int(i)] for i in indices]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


class Trainer:
    def __init__(self, config: TrainConfig, out_dir: str | Path, data: PlayWindows | None = None) -> None:
        self.config = c = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator = Accelerator()
        self.data = data or PlayWindows(c.data, c.windows, seed=c.seed)
        torch.manual_seed(c.seed)
        self.policy = FlowPolicy(c.policy)
        self.policy.normalizer.fit(self.data.statistics())
        self.optimization = Optimization(self.policy.parameters(), c)
        self.policy = self.optimization.prepare(self.accelerator, self.policy)
        self.step = 0
        save_config(c, self.out_dir / "train_config.yaml")

    # ----- checkpoints -----------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        path = path or self.out_dir / CHECKPOINT
        state = {
            "step": self.step,
            "model": self.accelerator.unwrap_model(self.policy).state_dict(),
            **self.optimization.state_dict(),
        }
        return save_atomic(state, path)

    def load(self, path: Path | None = None) -> None:
        state = torch.load(path or self.out_dir / CHECKPOINT, weights_only=False)
        self.accelerator.unwrap_model(self.policy).load_state_dict(state["model"])
        self.optimization.load_state_dict(state)
        self.step = state["step"]

    # ----- steps ---------------------------------------------------------------------------------------
    def _indices(self) -> np.ndarray:
        c, acc = self.config, self.accelerator
        return batch_indices(
            len(self.data), c.batch_size, c.seed, self.step, acc.process_index, acc.num_processes
        )

    def train_step(self) -> dict[str, float]:
        c = self.config
        batch = {
            k: v.to(self.accelerator.device) for k, v in _batch(self.data, self._indices(), self.step).items()
        }
        torch.manual_seed(c.seed * 1_000_003 + self.step)  # the diffusion noise of this step
        self.policy.train()
        losses = self.accelerator.unwrap_model(self.policy).compute_loss(batch)
        lr = self.optimization.step(self.accelerator, losses["loss"])
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()} | {"lr": lr}

    def fit(self, progress: bool = True) -> dict[str, float]:
        """Train to ``max_steps`` (resuming from the checkpoint in ``out_dir`` when there is one)."""
        c = self.config
        if (self.out_dir / CHECKPOINT).is_file() and self.step == 0:
            self.load()
        last: dict[str, float] = {}
        with MetricsLog(self.out_dir, ["loss", "denoise", "align", "lr"]) as log:
            bar = tqdm(total=c.max_steps, initial=self.step, desc="train policy", disable=not progress)
            while self.step < c.max_steps:
                last = self.train_step()
                bar.update()
                if self.step % c.log_every == 0 or self.step == c.max_steps:
                    log.write(self.step, last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
                if self.step % c.checkpoint_every == 0 or self.step == c.max_steps:
                    self.save()
            bar.close()
        self.export()
        return last

    def export(self) -> Path:
        """The EMA policy alone (weights + normaliser + config) for evaluation."""
        policy = FlowPolicy(self.config.policy)
        policy.load_state_dict(self.accelerator.unwrap_model(self.policy).state_dict())
        self.optimization.copy_ema_to(policy.parameters())
        path = self.out_dir / "policy_ema.pt"
        torch.save({"config": self.config.policy, "state_dict": policy.state_dict()}, path)
        return path


def load_policy(path: str | Path, device: str = "cpu") -> FlowPolicy:
    payload = torch.load(path, map_location=device, weights_only=False)
    config = payload["config"]
    if "normalizer.object_position_low" not in payload["state_dict"]:
        config = replace(config, object_frame=False)  # saved before the object frame existed
    policy = FlowPolicy(config)
    policy.load_state_dict(payload["state_dict"])
    return policy.to(device).eval()
