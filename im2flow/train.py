"""Train a flow generator on flow clips, with ``accelerate`` (the same code on CPU or GPUs).

As for the policy: the batch, the text dropout and the diffusion noise of step s depend only on (seed, s), so
a resumed run takes exactly the steps an uninterrupted one would. A checkpoint holds the model, the EMA
weights, the optimiser, the LR schedule and the step. Metrics go to ``metrics.csv`` and TensorBoard; every
``sample_every`` steps a GIF per held-out task shows generated vs true flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from im2flow2act.im2flow.augment import AugmentConfig, augment_batch
from im2flow2act.im2flow.data import ClipConfig, FlowClips, build_clips
from im2flow2act.im2flow.flow_image import decode
from im2flow2act.im2flow.generator import FlowGenerator, GeneratorConfig
from im2flow2act.im2flow.pictures import write_comparison
from tqdm import tqdm

from im2flow2act.core.config import save_config
from im2flow2act.core.optimization import Optimization, OptimizationConfig, batch_indices
from im2flow2act.core.run_log import MetricsLog, save_atomic

CHECKPOINT = "checkpoint.pt"
EXPORT = "generator_ema.pt"


@dataclass
class FlowTrainConfig(OptimizationConfig):
    data: list[str] = field(default_factory=lambda: ["outputs/sim_demos/dataset.zarr"])
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    tracker: str = "lk"
    """Tracks the box grid of episodes whose stored tracks are not that grid (e.g. sim demos)."""
    tracker_args: dict[str, Any] = field(default_factory=dict)
    """The tracker's config, e.g. {checkpoint: models/cotracker3} for cotracker3."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Random crop-and-zoom and left-right flip of training clips (off by default)."""
    held_out_per_task: int = 10
    batch_size: int = 32
    checkpoint_every: int = 250
    sample_every: int = 500
    log_every: int = 25
    seed: int = 0

    def clip_config(self) -> ClipConfig:
        return ClipConfig(self.generator.flow, self.tracker, self.tracker_args, self.held_out_per_task)


def load_clips(config: FlowTrainConfig, out_dir: Path, progress: bool = True) -> tuple[FlowClips, FlowClips]:
    """(train, held-out) clips, built once and cached in ``out_dir/clips.npz``."""
    clips, problems = build_clips(config.data, config.clip_config(), out_dir / "clips.npz", progress)
    for problem in problems:
        print(f"skipped {problem}")
    return clips.split(config.held_out_per_task)


class FlowTrainer:
    def __init__(self, config: FlowTrainConfig, out_dir: str | Path, progress: bool = True) -> None:
        self.config = c = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.accelerator = Accelerator()
        self.train, self.held_out = load_clips(c, self.out_dir, progress)
        torch.manual_seed(c.seed)
        self.generator = FlowGenerator(c.generator)
        self.optimization = Optimization(trainable(self.generator), c)
        self.generator.denoiser = self.optimization.prepare(self.accelerator, self.generator.denoiser)
        denoiser = self.accelerator.unwrap_model(self.generator.denoiser)
        self.train_images = denoiser.prepare_images(torch.from_numpy(self.train.images))
        self.step = 0
        save_config(c, self.out_dir / "train_config.yaml")

    # ----- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        path = self.out_dir / CHECKPOINT
        state = {
            "step": self.step,
            "model": self.accelerator.unwrap_model(self.generator.denoiser).state_dict(),
            **self.optimization.state_dict(),
        }
        return save_atomic(state, path)

    def load(self) -> None:
        state = torch.load(self.out_dir / CHECKPOINT, weights_only=False)
        self.accelerator.unwrap_model(self.generator.denoiser).load_state_dict(state["model"])
        self.optimization.load_state_dict(state)
        self.step = state["step"]

    # ----- steps ------------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
        c, acc = self.config, self.accelerator
        idx = batch_indices(len(self.train), c.batch_size, c.seed, step, acc.process_index, acc.num_processes)
        images, queries, flows = augment_batch(
            self.train_images[idx],
            torch.from_numpy(self.train.queries[idx]),
            torch.from_numpy(self.train.flows[idx]),
            c.augment,
            c.generator.flow,
            torch.Generator().manual_seed(c.seed * 1_000_003 + step + 500_009),  # its own stream
        )
        device = self.accelerator.device
        return images.to(device), queries.to(device), [self.train.tasks[i] for i in idx], flows.to(device)

    def train_step(self) -> dict[str, float]:
        c = self.config
        images, queries, texts, flows = self.batch(self.step)
        torch.manual_seed(c.seed * 1_000_003 + self.step)  # text dropout and diffusion noise of this step
        self.generator.train()
        loss = self.generator.loss(images, queries, texts, flows)
        lr = self.optimization.step(self.accelerator, loss)
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr}

    def fit(self) -> dict[str, float]:
        """Train to ``max_steps`` (resuming from the checkpoint in ``out_dir`` when there is one)."""
        c = self.config
        if (self.out_dir / CHECKPOINT).is_file() and self.step == 0:
            self.load()
        if self.step == 0:
            self.finetune_decoder()
        last: dict[str, float] = {}
        with MetricsLog(self.out_dir, ["loss", "lr"]) as log:
            bar = tqdm(total=c.max_steps, initial=self.step, desc="train im2flow", disable=not self.progress)
            while self.step < c.max_steps:
                last = self.train_step()
                bar.update()
                if self.step % c.log_every == 0 or self.step == c.max_steps:
                    log.write(self.step, last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
                if self.step % c.checkpoint_every == 0 or self.step == c.max_steps:
                    self.save()
                if c.sample_every and (self.step % c.sample_every == 0 or self.step == c.max_steps):
                    self.write_samples()
            bar.close()
        self.export()
        return last

    def finetune_decoder(self) -> None:
        """sd15: fit the VAE decoder to flow images before the first step (the weights are checkpointed)."""
        g = self.config.generator
        steps = int(g.sd15.get("decoder_finetune_steps", 0)) if g.preset == "sd15" else 0
        if steps <= 0:
            return
        from im2flow2act.im2flow.models.sd15 import finetune_decoder

        denoiser = self.accelerator.unwrap_model(self.generator.denoiser)
        lr = float(g.sd15.get("decoder_lr", 1e-4))
        flows = torch.from_numpy(self.train.flows)
        losses = finetune_decoder(denoiser, flows, steps, lr, seed=self.config.seed)
        print(f"VAE decoder fine-tuned on flow images: MSE {losses[0]:.4f} → {losses[-1]:.4f}, {steps} steps")

    def ema_generator(self) -> FlowGenerator:
        generator = FlowGenerator(self.config.generator)
        generator.denoiser.load_state_dict(
            self.accelerator.unwrap_model(self.generator.denoiser).state_dict()
        )
        self.optimization.copy_ema_to(trainable(generator))
        return generator.to(self.accelerator.device).eval()

    def export(self) -> Path:
        """The EMA generator alone (weights + config) for sampling and evaluation."""
        return self.ema_generator().save(self.out_dir / EXPORT)

    def write_samples(self) -> list[Path]:
        """One GIF per held-out instruction: generated (EMA weights) vs true flow on the first frame."""
        clips = self.held_out if len(self.held_out) else self.train
        first = [clips.tasks.index(t) for t in dict.fromkeys(clips.tasks)]
        generator = self.ema_generator()
        flows = generator.generate(
            torch.from_numpy(clips.images[first]),
            torch.from_numpy(clips.queries[first]),
            [clips.tasks[i] for i in first],
            seed=self.step,
        )[:, 0].numpy()
        paths = []
        for k, i in enumerate(first):
            queries = clips.queries[i]
            generated = _flow_points(flows[k], queries, generator)
            true = _flow_points(clips.flows[i], queries, generator)
            path = self.out_dir / "samples" / f"step{self.step:06d}_{clips.names[i]}.gif"
            paths.append(
                write_comparison(path, clips.images[i], queries, [generated, true], ["generated", "true"])
            )
        return paths


def trainable(generator: FlowGenerator) -> list[torch.nn.Parameter]:
    """What the optimiser and the EMA see (the sd15 preset freezes most of its weights)."""
    return [p for p in generator.denoiser.parameters() if p.requires_grad]


def _flow_points(flow: np.ndarray, queries: np.ndarray, generator: FlowGenerator) -> np.ndarray:
    tracks, visibility = decode(flow, queries, generator.config.flow)
    return np.concatenate([tracks, visibility[..., None].astype(np.float32)], axis=-1)
