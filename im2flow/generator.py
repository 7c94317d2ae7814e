"""``FlowGenerator``: image + instruction + query grid → K samples of future object flow.

One interface over the presets (``small``: pixel space from scratch; ``sd15``: the reference's Stable
Diffusion + AnimateDiff design). Training is DDPM noise-prediction (or x0-prediction) with the instruction
replaced by the empty string with probability ``text_dropout``; sampling is DDIM with classifier-free
guidance on the text only (image and points stay, as in the reference). ``objective="regression"`` trains
the same network to output the flow in one pass from no noise — the baseline that shows what diffusion buys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from im2flow2act.core import checkpoint
from im2flow2act.im2flow.flow_image import FlowImageConfig, decode
from im2flow2act.im2flow.models.small import SmallConfig, SmallDenoiser
from im2flow2act.im2flow.text import MINILM, TextEncoder

PRESETS = ("small", "sd15")


@dataclass
class GeneratorConfig:
    preset: str = "small"
    flow: FlowImageConfig = field(
        default_factory=lambda: FlowImageConfig(grid_size=16, num_frames=16, encoding="sqrt_displacement")
    )
    small: SmallConfig = field(default_factory=SmallConfig)
    sd15: dict = field(default_factory=dict)
    """Options of the sd15 preset (see ``im2flow2act.im2flow.models.sd15.SD15Config``)."""
    text_encoder: str = MINILM
    """minilm (shipped in a pip package) or a local CLIP folder."""
    objective: str = "diffusion"
    """diffusion, or regression (the baseline: one deterministic pass)."""
    prediction_type: str = "sample"
    """sample (x0: converges fastest for a small model on a CPU), epsilon (the reference) or v_prediction."""
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    inference_steps: int = 25
    guidance_scale: float = 2.0
    text_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.objective not in ("diffusion", "regression"):
            raise ValueError(f"objective must be diffusion or regression, got {self.objective!r}")


def build_denoiser(config: GeneratorConfig, text_dim: int) -> nn.Module:
    f = config.flow
    if config.preset == "small":
        return SmallDenoiser(config.small, f.grid_size, f.num_frames, text_dim)
    from im2flow2act.im2flow.models.sd15 import SD15Config, SD15Denoiser

    return SD15Denoiser(SD15Config(**config.sd15), f.grid_size, f.num_frames)


class FlowGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.text = TextEncoder(config.text_encoder)
        self.denoiser = build_denoiser(config, self.text.dim)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.train_timesteps,
            beta_schedule=config.beta_schedule,
            prediction_type=config.prediction_type,
            clip_sample=False,
        )

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def _text(self, texts: list[str]) -> torch.Tensor:
        return self.text(texts).to(self.device)

    # ----- training ---------------------------------------------------------------------------------
    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The random draws of ``n`` training samples (text dropout, diffusion noise and step, and for
        sd15 the VAE's latent sample), on the CPU; the trainer draws them per sample from seeded
        generators, so they follow the sample whatever the number of processes."""
        c = self.config
        shape = self.denoiser.model_space_shape(n)
        out = {
            "drop_text": torch.rand(n, generator=generator) < c.text_dropout,
            "noise": torch.randn(shape, generator=generator),
            "timesteps": torch.randint(0, c.train_timesteps, (n,), generator=generator),
        }
        if c.preset == "sd15":
            out["latent"] = torch.randn(shape, generator=generator)
        return out

    def forward(
        self,
        images: torch.Tensor,
        queries: torch.Tensor,
        texts: list[str],
        flows: torch.Tensor,
        noise: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The training loss: MSE of the denoiser (diffusion) or of the one-pass prediction (regression).

        The trainer calls this through the prepared (DDP) module; ``noise`` (``draw_noise``'s draws for
        these samples) defaults to fresh draws from torch's RNG."""
        c = self.config
        if noise is None:
            noise = self.draw_noise(len(texts))
        noise = {k: v.to(self.device) for k, v in noise.items()}
        if c.objective == "diffusion" and c.text_dropout > 0:
            drop = noise["drop_text"].tolist()
            texts = ["" if d else t for t, d in zip(texts, drop, strict=True)]
        condition = self.denoiser.condition(images, queries, self._text(texts))
        x0 = self.denoiser.to_model_space(flows, noise.get("latent"))
        if c.objective == "regression":
            zeros = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
            return nn.functional.mse_loss(self.denoiser(torch.zeros_like(x0), zeros, condition), x0)
        eps, t = noise["noise"].to(x0.dtype), noise["timesteps"]
        noisy = self.scheduler.add_noise(x0, eps, t)
        target = {"epsilon": eps, "sample": x0, "v_prediction": self.scheduler.get_velocity(x0, eps, t)}
        return nn.functional.mse_loss(self.denoiser(noisy, t, condition), target[c.prediction_type])

    # ----- sampling ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        images: torch.Tensor,
        queries: torch.Tensor,
        texts: list[str],
        num_samples: int = 1,
        seed: int = 0,
        guidance_scale: float | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Flow videos (B, S, T, 3, G, G) for a batch of (image uint8 (H, W, 3), queries (G², 3), text)."""
        c = self.config
        scale = c.guidance_scale if guidance_scale is None else guidance_scale
        b, s = images.shape[0], num_samples
        images = images.to(self.device).repeat_interleave(s, 0)
        queries = queries.to(self.device).float().repeat_interleave(s, 0)
        texts = [t for t in texts for _ in range(s)]
        condition = self.denoiser.condition(images, queries, self._text(texts))
        shape = self.denoiser.model_space_shape(b * s)
        if c.objective == "regression":
            zeros = torch.zeros(b * s, dtype=torch.long, device=self.device)
            x = self.denoiser(torch.zeros(shape, device=self.device), zeros, condition)
            return self.denoiser.from_model_space(x).reshape(b, s, *x.shape[1:]).cpu()
        guided = scale != 1.0
        if guided:
            empty = self.denoiser.condition(images, queries, self._text([""] * len(texts)))
            both = {k: torch.cat([condition[k], empty[k]]) for k in condition}
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps or c.inference_steps)
        generator = torch.Generator("cpu").manual_seed(seed)
        x = torch.randn(shape, generator=generator).to(self.device)
        for t in scheduler.timesteps:
            tt = torch.full((len(x),), int(t), device=self.device, dtype=torch.long)
            if guided:
                out = self.denoiser(torch.cat([x, x]), torch.cat([tt, tt]), both)
                cond, uncond = out.chunk(2)
                out = uncond + scale * (cond - uncond)
            else:
                out = self.denoiser(x, tt, condition)
            x = scheduler.step(out, t, x, eta=0.0).prev_sample
        flows = self.denoiser.from_model_space(x)
        return flows.reshape(b, s, *flows.shape[1:]).cpu()

    def sample(
        self,
        image: np.ndarray,
        text: str,
        queries: np.ndarray,
        num_samples: int = 1,
        seed: int = 0,
        visibility_threshold: float = 0.0,
        **kwargs,
    ) -> np.ndarray:
        """The FlowGenerator contract (docs/design.md §6): (S, T, N, 3) as (x, y, visibility) for one image
        and a G×G query grid. ``visibility_threshold``: where the ±1 visibility channel is cut
        (``flow_image.decode``)."""
        g = self.config.flow.grid_size
        if len(queries) != g * g:
            raise ValueError(f"needs a {g}×{g} query grid ({g * g} points), got {len(queries)}")
        flows = self.generate(
            torch.from_numpy(np.array(image, dtype=np.uint8))[None],
            torch.from_numpy(np.asarray(queries, np.float32))[None],
            [text],
            num_samples,
            seed,
            **kwargs,
        )[0].numpy()
        tracks, visibility = decode(
            flows, queries, self.config.flow, visibility_threshold=visibility_threshold
        )
        return np.concatenate([tracks, visibility[..., None].astype(np.float32)], axis=-1)

    # ----- files ------------------------------------------------------------------------------------
    KIND = "flow_generator"

    def save_pretrained(self, folder: str | Path) -> Path:
        """``folder/config.json`` + ``folder/model.safetensors`` (the denoiser's weights; the text encoder
        and sd15's pretrained parts are rebuilt from the paths the config names)."""
        return checkpoint.save_pretrained(folder, self, self.config, self.KIND)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str | torch.device = "cpu") -> FlowGenerator:
        """A generator from a model folder (or a Hugging Face Hub id), in eval mode on ``device``."""
        return checkpoint.from_pretrained(source, cls.KIND, GeneratorConfig, cls, device)


def load_generator(path: str | Path, device: str = "cpu") -> FlowGenerator:
    """``FlowGenerator.from_pretrained``: a model folder (``<run>/generator``) or a Hub id."""
    return FlowGenerator.from_pretrained(path, device)
