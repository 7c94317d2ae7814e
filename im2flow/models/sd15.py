"""The ``sd15`` preset: the Im2Flow2Act paper's flow generator on ``diffusers`` and ``peft``.

- Flow images live in the Stable Diffusion 1.5 VAE latent space (each frame encoded on its own, × the VAE's
  scaling factor); the VAE decoder can be fine-tuned on flow images first (``finetune_decoder``).
- The SD1.5 UNet is inflated with AnimateDiff motion modules (``UNetMotionModel.from_unet2d`` with a
  ``MotionAdapter`` — trained from scratch unless ``motion_adapter`` names pretrained ones), its 2-D weights
  frozen, LoRA (``peft``) on every spatial attention projection (none inside the motion modules).
- Cross-attention context = CLIP text tokens (77) + CLIP vision tokens (CLS + patches) + one token per
  query point (a fixed 2-D sin-cos embedding of its position); image and point tokens pass through
  zero-initialised projections, so training starts from the text-only model.
Everything pretrained loads from local folders (``pretrained`` in the diffusers layout: unet/, vae/,
text_encoder/, tokenizer/; ``clip_vision``: a CLIPVisionModel folder); tests build tiny random ones.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from im2flow2act.preprocessing.pretrained import load_once

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LORA_TARGETS = r"^(?!.*motion_modules).*(to_q|to_k|to_v|to_out\.0)$"


@dataclass
class SD15Config:
    pretrained: str = "models/stable-diffusion-v1-5"
    """Folder with unet/, vae/ (and text_encoder/, tokenizer/ for the text: set text_encoder to it too)."""
    clip_vision: str = "models/clip-vit-large-patch14"
    motion_adapter: str = ""
    """A pretrained AnimateDiff MotionAdapter folder; empty = motion modules from scratch (the reference)."""
    motion_heads: int = 8
    motion_max_frames: int = 48
    lora_rank: int = 128
    point_embed_dim: int = 1024
    decoder_finetune_steps: int = 0
    """Steps of VAE-decoder fine-tuning on flow images before training (0 = keep the decoder as loaded)."""
    decoder_lr: float = 1e-4


def _load_folder(kind: str, path: str, loader):
    return load_once(kind, path, "cpu", loader, config_key=f"generator.sd15.{kind}", hub_id=_HUB_IDS[kind])


_HUB_IDS = {
    "pretrained": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "clip_vision": "openai/clip-vit-large-patch14",
    "motion_adapter": "guoyww/animatediff-motion-adapter-v1-5-2",
}


def sincos_2d(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., 2) positions in [0, 1] → (..., dim) fixed sin-cos features (half for x, half for y)."""
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=xy.device) / quarter)
    angles = xy[..., :, None] * 224.0 * freqs  # positions in pixels of a 224 image, as the reference
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class SD15Denoiser(nn.Module):
    def __init__(self, config: SD15Config, grid_size: int, num_frames: int) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
        from peft import LoraConfig
        from transformers import CLIPVisionModel

        self.config = config
        self.grid_size, self.num_frames = grid_size, num_frames
        root = Path(config.pretrained)
        unet2d = _load_folder(
            "pretrained", str(root), lambda p: UNet2DConditionModel.from_pretrained(p, subfolder="unet")
        )
        vae = _load_folder("pretrained", str(root / "vae"), AutoencoderKL.from_pretrained)
        vision = _load_folder("clip_vision", config.clip_vision, CLIPVisionModel.from_pretrained)
        # loaded once per process; own copies, so fine-tuning or .to(device) never touches the cached ones
        # (from_unet2d below copies the UNet's weights itself)
        self.vae = copy.deepcopy(vae).eval()
        self.vision = copy.deepcopy(vision).eval()
        if config.motion_adapter:
            adapter = _load_folder("motion_adapter", config.motion_adapter, MotionAdapter.from_pretrained)
        else:
            adapter = MotionAdapter(
                block_out_channels=tuple(unet2d.config.block_out_channels),
                motion_layers_per_block=unet2d.config.layers_per_block,
                motion_num_attention_heads=config.motion_heads,
                motion_norm_num_groups=unet2d.config.norm_num_groups,
                motion_max_seq_length=config.motion_max_frames,
            )
            _zero_motion_outputs(adapter)
        self.unet = UNetMotionModel.from_unet2d(unet2d, adapter)
        self.unet.add_adapter(  # LoRA on the spatial attention (this freezes everything else) ...
            LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_rank,
                init_lora_weights="gaussian",
                target_modules=LORA_TARGETS,
            )
        )
        for name, param in self.unet.named_parameters():  # ... and the motion modules train in full
            if "motion_modules" in name:
                param.requires_grad_(True)
        self.vae.requires_grad_(False)
        self.vision.requires_grad_(False)
        cross = self.unet.config.cross_attention_dim
        self.image_projection = nn.Linear(self.vision.config.hidden_size, cross)
        self.point_projection = nn.Linear(config.point_embed_dim, cross)
        for layer in (self.image_projection, self.point_projection):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.latent_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if grid_size % self.latent_factor:
            factor = self.latent_factor
            raise ValueError(f"grid_size {grid_size} is not a multiple of the VAE downsampling {factor}")

    # ----- latent space ----------------------------------------------------------------------------
    @property
    def scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    def model_space_shape(self, batch: int) -> tuple[int, ...]:
        side = self.grid_size // self.latent_factor
        return (batch, self.num_frames, self.vae.config.latent_channels, side, side)

    def to_model_space(self, flow: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """VAE latents of the flow frames; ``noise`` (model-space shape) is the latent sample's draw."""
        b, t = flow.shape[:2]
        with torch.no_grad():
            dist = self.vae.encode(flow.flatten(0, 1)).latent_dist
            if noise is None:
                latents = dist.sample()
            else:
                latents = dist.mean + dist.std * noise.flatten(0, 1).to(dist.mean)
            latents = latents * self.scaling
        return latents.reshape(b, t, *latents.shape[1:])

    def from_model_space(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        frames = self.vae.decode(x.flatten(0, 1) / self.scaling).sample.clamp(-1.0, 1.0)
        return frames.reshape(b, t, *frames.shape[1:])

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        return images  # resized per batch (the CLIP input size is fixed by the vision model)

    # ----- conditioning and denoising -------------------------------------------------------------
    def condition(
        self, images: torch.Tensor, queries: torch.Tensor, text_tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        size = self.vision.config.image_size
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
        with torch.no_grad():
            vision = self.vision(pixel_values=(x - self.clip_mean) / self.clip_std).last_hidden_state
        points = sincos_2d(queries[..., 1:3].float(), self.config.point_embed_dim)
        context = torch.cat(
            [text_tokens, self.image_projection(vision), self.point_projection(points)], dim=1
        )
        return {"context": context}

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        sample = x.permute(0, 2, 1, 3, 4)  # (B, C, T, h, w): UNetMotionModel's layout
        context = condition["context"].repeat_interleave(x.shape[1], dim=0)  # its frames attend one by one
        out = self.unet(sample, t, encoder_hidden_states=context).sample
        return out.permute(0, 2, 1, 3, 4)


def _zero_motion_outputs(adapter: nn.Module) -> None:
    """AnimateDiff's zero_initialize: motion modules start as the identity (their proj_out is zero)."""
    for name, module in adapter.named_modules():
        if name.endswith("proj_out") and isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)


def finetune_decoder(
    denoiser: SD15Denoiser, flows: torch.Tensor, steps: int, lr: float, batch_size: int = 64, seed: int = 0
) -> list[float]:
    """Fit the VAE decoder (and post_quant_conv) to flow images (N, T, 3, G, G): MSE of reconstructions."""
    vae = denoiser.vae
    frames = flows.flatten(0, 1)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    vae.train()
    for _ in range(steps):
        idx = torch.randint(0, len(frames), (min(batch_size, len(frames)),), generator=generator)
        batch = frames[idx].to(next(vae.parameters()).device)
        with torch.no_grad():
            latents = vae.encode(batch).latent_dist.sample(generator=None)
        loss = F.mse_loss(vae.decode(latents).sample, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    vae.eval()
    for p in params:
        p.requires_grad_(False)
    return losses
