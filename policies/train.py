"""Train the flow-conditioned policy on play data, with ``accelerate`` (the same code on CPU or GPUs).

Determinism and exact resume: the batch of step s depends only on (seed, s) and the diffusion noise of each
sample only on (seed, s, its place in the step's global batch), so a run resumed from a checkpoint takes
exactly the steps the uninterrupted run would have taken, and ``accelerate launch`` on k processes with
``batch_size`` B trains what one process with kB does (tests/test_distributed.py). The loss goes through the
prepared (DDP) module's ``forward``, so gradients are averaged over processes; the main process alone
writes the checkpoint, the export, the metrics and the config. A checkpoint holds the model (with its
normaliser), the EMA weights, the optimiser, the LR schedule and the step, and loads with
``weights_only=True``. The learning rate follows a cosine schedule with warm-up, and the LR scheduler steps
*after* the optimiser (the reference had them the other way round). Metrics go to ``metrics.csv`` and
TensorBoard.

The run folder belongs to one config: resuming with a config whose values differ from the recorded
``train_config.yaml`` is refused, except for ``MAY_DIFFER_ON_RESUME`` (how often to log and checkpoint, and
DataLoader workers: none changes what is trained). The EMA policy is exported to ``<out>/policy/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from im2flow2act.core.checkpoint import CheckpointError, load_training_state, save_training_state
from im2flow2act.core.config import check_range
from im2flow2act.core.optimization import (
    Optimization,
    OptimizationConfig,
    StepBatches,
    make_accelerator,
    sample_generators,
    stack_draws,
)
from im2flow2act.core.run_log import RunLock, hold_lock, on_main, record_config, run_steps
from im2flow2act.policies.data import PlayWindows, WindowConfig
from im2flow2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig

CHECKPOINT = "checkpoint.pt"
EXPORT = "policy"
"""The exported EMA policy: a model folder (config.json + model.safetensors) inside the run folder."""
EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}
MAY_DIFFER_ON_RESUME = ("log_every", "checkpoint_every", "workers", "export_dtype")


@dataclass
class TrainConfig(OptimizationConfig):
    data: list[str] = field(default_factory=lambda: ["outputs/sim_play/dataset.zarr"])
    policy: FlowPolicyConfig = field(default_factory=FlowPolicyConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    batch_size: int = 64
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    workers: int = 0
    """DataLoader worker processes cutting the windows (0: in the training process)."""
    init_from: str = ""
    """A policy model folder (config.json + safetensors) whose weights, normaliser included, start this run:
    fine-tuning, e.g. with another ``policy.plan_visibility``. Its network must be the one ``policy``
    builds."""
    export_dtype: str = "float32"
    """How the exported model folder stores the policy's parameters: float32, or float16 (half the size on
    disk, for releasing; loaded back into float32). The normaliser's statistics stay float32."""

    def __post_init__(self) -> None:
        """The windows must be cut the way the policy reads them; a mismatch fails when the config is read."""
        check_range("workers", self.workers, low=0)
        check_range("batch_size", self.batch_size, low=1)
        if self.export_dtype not in EXPORT_DTYPES:
            raise ValueError(f"export_dtype {self.export_dtype!r}: one of {', '.join(EXPORT_DTYPES)}")
        for key in ("plan_frames", "obs_horizon", "pred_horizon"):
            window, policy = getattr(self.windows, key), getattr(self.policy, key)
            if window != policy:
                raise ValueError(
                    f"windows.{key}={window} but policy.{key}={policy}: set both to the same value"
                )


class StepWindows(Dataset):
    """``PlayWindows`` indexed by ``StepBatches``' (step, position, index): the step's point draws, tagged."""

    def __init__(self, data: PlayWindows) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        step, position, index = key
        self.data.set_epoch(step)
        return self.data[index] | {"_step": torch.tensor(step), "_position": torch.tensor(position)}


class Trainer:
    def __init__(self, config: TrainConfig, out_dir: str | Path, data: PlayWindows | None = None) -> None:
        self.config = c = config
        self.out_dir = Path(out_dir)
        self.accelerator = acc = make_accelerator()
        on_main(acc, self._record_config)
        self.data = data or PlayWindows(c.data, c.windows, seed=c.seed)
        torch.manual_seed(c.seed)
        self.policy = FlowPolicy(c.policy)
        self.policy.normalizer.fit(self.data.statistics())
        if c.init_from:
            self._start_from(Path(c.init_from))
        self.optimization = Optimization(self.policy.parameters(), c)
        self.model = self.optimization.prepare(acc, self.policy)
        """What trains: the policy, wrapped for DDP under ``accelerate launch`` (the loss is its forward)."""
        self.step = 0
        self._batches = None
        self._next_step = -1

    def _start_from(self, folder: Path) -> None:
        start = FlowPolicy.from_pretrained(folder)
        try:
            self.policy.load_state_dict(start.state_dict())
        except RuntimeError as err:
            raise CheckpointError(
                f"init_from={folder}: its network is not the one this policy config builds: {str(err)[:300]}"
            ) from err

    def _record_config(self) -> None:
        with RunLock(self.out_dir):
            record_config(self.config, self.out_dir / "train_config.yaml", MAY_DIFFER_ON_RESUME)

    # ----- checkpoints -----------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        path = path or self.out_dir / CHECKPOINT
        state = {"step": self.step, "model": self.policy.state_dict(), **self.optimization.state_dict()}
        if self.accelerator.is_main_process:
            save_training_state(state, path)
        self.accelerator.wait_for_everyone()
        return path

    def load(self, path: Path | None = None) -> None:
        path = path or self.out_dir / CHECKPOINT
        state = load_training_state(path, map_location=self.accelerator.device)
        try:
            self.policy.load_state_dict(state["model"])
            self.optimization.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path} does not fit this policy config: {str(err)[:300]}") from err
        self.step = int(state["step"])

    # ----- steps ---------------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[int, dict[str, torch.Tensor], list[int]]:
        """The batch of ``self.step`` from a DataLoader that starts there (made again after a load)."""
        c, acc = self.config, self.accelerator
        if self._batches is None or self._next_step != self.step:
            sampler = StepBatches(
                len(self.data), c.batch_size, c.seed, self.step, acc.process_index, acc.num_processes
            )
            loader = DataLoader(StepWindows(self.data), batch_sampler=sampler, num_workers=c.workers)
            self._batches = iter(loader)
        batch = next(self._batches)
        step, positions = int(batch.pop("_step")[0]), batch.pop("_position").tolist()
        self._next_step = step + 1
        return step, {k: v.to(acc.device) for k, v in batch.items()}, positions

    def train_step(self) -> dict[str, float]:
        c, acc = self.config, self.accelerator
        step, batch, positions = self._next_batch()
        noise = stack_draws(self.policy.draw_noise, sample_generators(c.seed, step, positions))
        torch.manual_seed(c.seed * 1_000_003 + step)  # anything else random in the step
        self.model.train()
        loss, parts = self.model(batch, noise)
        lr = self.optimization.step(acc, loss)
        self.step += 1
        values = torch.stack([loss.detach(), parts["denoise"].detach(), parts["align"].detach()])
        if acc.num_processes > 1:
            values = acc.reduce(values, reduction="mean")
        return dict(zip(("loss", "denoise", "align"), values.tolist(), strict=True)) | {"lr": lr}

    def fit(self, progress: bool = True) -> dict[str, float]:
        """Train to ``max_steps`` (resuming from the checkpoint in ``out_dir`` when there is one), holding
        the run folder's lock throughout."""
        c, acc = self.config, self.accelerator
        with hold_lock(acc, self.out_dir):
            on_main(acc, lambda: record_config(c, self.out_dir / "train_config.yaml", MAY_DIFFER_ON_RESUME))
            if (self.out_dir / CHECKPOINT).is_file() and self.step == 0:
                self.load()
            last = run_steps(self, ["loss", "denoise", "align", "lr"], "train policy", progress)
            self.export()
        return last

    def ema_policy(self) -> FlowPolicy:
        """A copy of the policy with the EMA weights (and the fitted normaliser)."""
        policy = FlowPolicy(self.config.policy).to(self.accelerator.device)
        policy.load_state_dict(self.policy.state_dict())
        self.optimization.copy_ema_to(policy.parameters())
        return policy.eval()

    def export(self) -> Path:
        """The EMA policy alone, as the model folder ``<out>/policy`` (config.json + model.safetensors)."""
        path = self.out_dir / EXPORT
        if self.accelerator.is_main_process:
            policy = self.ema_policy()
            for parameter in policy.parameters():
                parameter.data = parameter.data.to(EXPORT_DTYPES[self.config.export_dtype])
            policy.save_pretrained(path)
        self.accelerator.wait_for_everyone()
        return path


def load_policy(path: str | Path, device: str = "cpu") -> FlowPolicy:
    """``FlowPolicy.from_pretrained``: a model folder (``<run>/policy``) or a Hub id."""
    return FlowPolicy.from_pretrained(path, device)
