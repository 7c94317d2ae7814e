"""Train a flow generator on flow clips, with ``accelerate`` (the same code on CPU or GPUs).

As for the policy: the batch of step s depends only on (seed, s), and each sample's text dropout,
diffusion noise and augmentation only on (seed, s, its place in the step's global batch), so a resumed run
takes exactly the steps an uninterrupted one would, and k processes with ``batch_size`` B train what one
process with kB does (tests/test_distributed.py). The loss is ``FlowGenerator.forward`` called through the
prepared (DDP) module, so gradients are averaged over processes; DDP sees only the parameters that train
(sd15 freezes most of its weights). The main process alone builds the clip cache, writes checkpoints,
samples, metrics and the export. A checkpoint holds the model, the EMA weights, the optimiser, the LR
schedule and the step, and loads with ``weights_only=True``. Metrics go to ``metrics.csv`` and
TensorBoard; every ``sample_every`` steps a GIF per held-out task shows generated vs true flow.

Resuming with a config whose values differ from the recorded ``train_config.yaml`` is refused, except for
``MAY_DIFFER_ON_RESUME`` (how often to log, checkpoint and sample, and DataLoader workers). The EMA
generator is exported to ``<out>/generator/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from im2flow2act.core.checkpoint import CheckpointError, load_training_state, save_training_state
from im2flow2act.core.config import ConfigError, check_range
from im2flow2act.core.optimization import (
    Optimization,
    OptimizationConfig,
    StepBatches,
    make_accelerator,
    sample_generators,
    stack_draws,
)
from im2flow2act.core.run_log import RunLock, hold_lock, on_main, record_config, run_steps
from im2flow2act.im2flow.augment import AugmentConfig, augment_batch
from im2flow2act.im2flow.data import ClipConfig, FlowClips, build_clips
from im2flow2act.im2flow.flow_image import decode
from im2flow2act.im2flow.generator import FlowGenerator, GeneratorConfig
from im2flow2act.im2flow.pictures import write_comparison

CHECKPOINT = "checkpoint.pt"
EXPORT = "generator"
"""The exported EMA generator: a model folder (config.json + model.safetensors) inside the run folder."""
MAY_DIFFER_ON_RESUME = ("log_every", "checkpoint_every", "sample_every", "workers")
NOISE_STREAM, AUGMENT_STREAM = 0, 1


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
    workers: int = 0
    """DataLoader worker processes gathering the batches (0: in the training process)."""

    def __post_init__(self) -> None:
        """Values that would fail deep in a run (or make it train on nothing) fail when the config is read."""
        check_range("workers", self.workers, low=0)
        check_range("held_out_per_task", self.held_out_per_task, low=0)
        check_range("batch_size", self.batch_size, low=1)

    def clip_config(self) -> ClipConfig:
        return ClipConfig(self.generator.flow, self.tracker, self.tracker_args, self.held_out_per_task)


def load_clips(config: FlowTrainConfig, out_dir: Path, progress: bool = True) -> tuple[FlowClips, FlowClips]:
    """(train, held-out) clips, built once and cached in ``out_dir/clips.npz``."""
    clips, problems = build_clips(config.data, config.clip_config(), out_dir / "clips.npz", progress)
    for problem in problems:
        print(f"skipped {problem}")
    train, held_out = clips.split(config.held_out_per_task)
    if len(train) == 0:
        raise ConfigError(_nothing_to_train(clips.tasks, config))
    return train, held_out


def _nothing_to_train(tasks: list[str], config: FlowTrainConfig) -> str:
    """Why the training split is empty: how many episodes each instruction has, how many are held out."""
    counts = {task: tasks.count(task) for task in dict.fromkeys(tasks)}
    per_task = ", ".join(f"{task!r}: {n}" for task, n in counts.items())
    most = max(counts.values(), default=0)
    fix = f"set held_out_per_task to at most {most - 1}, or add episodes" if most > 1 else "add episodes"
    return (
        f"no training clips in {', '.join(config.data)}: {len(tasks)} episode(s) ({per_task}) and "
        f"held_out_per_task={config.held_out_per_task} holds all {len(tasks)} out; {fix}"
    )


class StepClips(Dataset):
    """Training clips indexed by ``StepBatches``' (step, position, index) triples, tagged with both."""

    def __init__(self, clips: FlowClips, images: torch.Tensor) -> None:
        self.clips, self.images = clips, images

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        step, position, i = key
        return {
            "images": self.images[i],
            "queries": torch.from_numpy(self.clips.queries[i]),
            "flows": torch.from_numpy(self.clips.flows[i]),
            "texts": self.clips.tasks[i],
            "_step": step,
            "_position": position,
        }


class FlowTrainer:
    def __init__(self, config: FlowTrainConfig, out_dir: str | Path, progress: bool = True) -> None:
        self.config = c = config
        self.out_dir = Path(out_dir)
        self.accelerator = acc = make_accelerator()
        self.progress = progress and acc.is_main_process
        on_main(acc, self._record_config)
        clips = on_main(acc, lambda: load_clips(c, self.out_dir, self.progress))  # builds the cache once
        self.train, self.held_out = clips if clips is not None else load_clips(c, self.out_dir, False)
        torch.manual_seed(c.seed)
        self.generator = FlowGenerator(c.generator)
        self.optimization = Optimization(trainable(self.generator), c)
        self.model = self.optimization.prepare(acc, self.generator)
        """What trains: the generator, DDP-wrapped under ``accelerate launch`` (the loss is its forward)."""
        self.train_images = self.generator.denoiser.prepare_images(torch.from_numpy(self.train.images))
        self.step = 0
        self._batches = None
        self._next_step = -1

    def _record_config(self) -> None:
        with RunLock(self.out_dir):
            record_config(self.config, self.out_dir / "train_config.yaml", MAY_DIFFER_ON_RESUME)

    # ----- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        path = self.out_dir / CHECKPOINT
        state = {
            "step": self.step,
            "model": self.generator.denoiser.state_dict(),
            **self.optimization.state_dict(),
        }
        if self.accelerator.is_main_process:
            save_training_state(state, path)
        self.accelerator.wait_for_everyone()
        return path

    def load(self) -> None:
        path = self.out_dir / CHECKPOINT
        state = load_training_state(path, map_location=self.accelerator.device)
        try:
            self.generator.denoiser.load_state_dict(state["model"])
            self.optimization.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path} does not fit this generator config: {str(err)[:300]}") from err
        self.step = int(state["step"])

    # ----- steps ------------------------------------------------------------------------------------
    def _sampler(self, start: int) -> StepBatches:
        c, acc = self.config, self.accelerator
        return StepBatches(len(self.train), c.batch_size, c.seed, start, acc.process_index, acc.num_processes)

    def _finish(self, items: dict[str, Any]) -> tuple[int, list[int], tuple]:
        """A collated batch → (step, positions, (images, queries, texts, flows)) augmented, on the device."""
        c = self.config
        step, positions = int(items["_step"][0]), [int(p) for p in items["_position"]]
        images, queries, flows = augment_batch(
            items["images"],
            items["queries"],
            items["flows"],
            c.augment,
            c.generator.flow,
            sample_generators(c.seed, step, positions, AUGMENT_STREAM),
        )
        device = self.accelerator.device
        return (
            step,
            positions,
            (images.to(device), queries.to(device), list(items["texts"]), flows.to(device)),
        )

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
        """This process's (images, queries, texts, flows) of ``step``, as training sees them."""
        data = StepClips(self.train, self.train_images)
        return self._finish(default_collate([data[k] for k in next(iter(self._sampler(step)))]))[2]

    def _next_batch(self) -> tuple[int, list[int], tuple]:
        """The batch of ``self.step`` from a DataLoader that starts there (made again after a load)."""
        if self._batches is None or self._next_step != self.step:
            loader = DataLoader(
                StepClips(self.train, self.train_images),
                batch_sampler=self._sampler(self.step),
                num_workers=self.config.workers,
            )
            self._batches = iter(loader)
        step, positions, batch = self._finish(next(self._batches))
        self._next_step = step + 1
        return step, positions, batch

    def train_step(self) -> dict[str, float]:
        c, acc = self.config, self.accelerator
        step, positions, (images, queries, texts, flows) = self._next_batch()
        noise = stack_draws(
            self.generator.draw_noise, sample_generators(c.seed, step, positions, NOISE_STREAM)
        )
        torch.manual_seed(c.seed * 1_000_003 + step)  # anything else random in the step
        self.model.train()
        loss = self.model(images, queries, texts, flows, noise)
        lr = self.optimization.step(acc, loss)
        self.step += 1
        value = loss.detach()
        if acc.num_processes > 1:
            value = acc.reduce(value, reduction="mean")
        return {"loss": float(value), "lr": lr}

    def fit(self) -> dict[str, float]:
        """Train to ``max_steps`` (resuming from the checkpoint in ``out_dir`` when there is one), holding
        the run folder's lock throughout."""
        c, acc = self.config, self.accelerator
        with hold_lock(acc, self.out_dir):
            on_main(acc, lambda: record_config(c, self.out_dir / "train_config.yaml", MAY_DIFFER_ON_RESUME))
            if (self.out_dir / CHECKPOINT).is_file() and self.step == 0:
                self.load()
            if self.step == 0:
                self.finetune_decoder()
            last = run_steps(self, ["loss", "lr"], "train im2flow", self.progress, self._after_step)
            self.export()
        return last

    def _after_step(self, final: bool) -> None:
        """Every ``sample_every`` steps (and at the end): the GIFs of generated against true flow."""
        every = self.config.sample_every
        if every and (self.step % every == 0 or final):
            on_main(self.accelerator, self.write_samples)

    def finetune_decoder(self) -> None:
        """sd15: fit the VAE decoder to flow images before the first step (the weights are checkpointed).

        Every process fits it from the same seed; under several processes rank 0's result is then
        broadcast, so the decoders cannot drift apart."""
        g = self.config.generator
        steps = int(g.sd15.get("decoder_finetune_steps", 0)) if g.preset == "sd15" else 0
        if steps <= 0:
            return
        from im2flow2act.im2flow.models.sd15 import finetune_decoder

        denoiser = self.generator.denoiser
        lr = float(g.sd15.get("decoder_lr", 1e-4))
        flows = torch.from_numpy(self.train.flows)
        torch.manual_seed(self.config.seed)
        losses = finetune_decoder(denoiser, flows, steps, lr, seed=self.config.seed)
        if self.accelerator.num_processes > 1:
            for tensor in denoiser.vae.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        if self.progress:
            print(
                f"VAE decoder fine-tuned on flow images: MSE {losses[0]:.4f} → {losses[-1]:.4f}, "
                f"{steps} steps"
            )

    def ema_generator(self) -> FlowGenerator:
        generator = FlowGenerator(self.config.generator)
        generator.denoiser.load_state_dict(self.generator.denoiser.state_dict())
        self.optimization.copy_ema_to(trainable(generator))
        return generator.to(self.accelerator.device).eval()

    def export(self) -> Path:
        """The EMA generator alone, as the model folder ``<out>/generator`` (config.json +
        model.safetensors) for sampling and evaluation."""
        path = self.out_dir / EXPORT
        if self.accelerator.is_main_process:
            self.ema_generator().save_pretrained(path)
        self.accelerator.wait_for_everyone()
        return path

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
