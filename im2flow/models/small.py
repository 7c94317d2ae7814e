"""The ``small`` preset: a pixel-space flow denoiser trained from scratch, sized for a laptop CPU.

Time is folded into channels: the T-frame flow video (T, 3, G, G) is one G×G image with 3T channels, so a
2-D conditional U-Net (``diffusers.UNet2DConditionModel``) denoises all frames jointly. Every grid cell also
gets, as extra input channels, its query position and the image features under it (bilinearly sampled from
a small CNN trained with the model), so the network knows what each point sits on. The instruction tokens
and a coarse grid of image tokens enter through cross-attention; the instruction is also added to the
timestep embedding of every residual block (``text_in_time_embedding``), because one text token among
144 image tokens was easy for cross-attention to ignore (instruction following was at chance without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import UNet2DConditionModel
from torch import nn
from torch.nn import functional as F

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class SmallConfig:
    image_size: int = 96
    """The first frame is resized to this square size for the image encoder."""
    image_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    """CNN widths; each level halves the resolution (stride-2 stem first)."""
    point_feature_dim: int = 32
    """Image features sampled under each query point, given to the U-Net as input channels."""
    cross_dim: int = 128
    unet_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    attention_head_dim: int = 16
    text_in_time_embedding: bool = True
    """Also add the projected instruction to the U-Net's timestep embedding (global conditioning)."""
    token_coordinates: bool = True
    """Add each image token's own (x, y) centre (raw and sin-cos) to it through a linear map, so attending to
    a place in the picture (the plate, the bowl) returns its position as numbers the flow can move toward.
    On by default: it lowered the held-out error and raised instruction following
    (docs/results/im2flow.md)."""


class ImageEncoder(nn.Module):
    """Small CNN: per-point features from the mid level, cross-attention tokens from the last level."""

    def __init__(self, config: SmallConfig) -> None:
        super().__init__()
        widths = [3, *config.image_channels]
        self.levels = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                nn.GroupNorm(8, widths[i + 1]),
                nn.SiLU(),
                nn.Conv2d(widths[i + 1], widths[i + 1], 3, padding=1),
                nn.GroupNorm(8, widths[i + 1]),
                nn.SiLU(),
            )
            for i in range(len(widths) - 1)
        )
        self.point_level = max(0, len(self.levels) - 2)
        self.point_head = nn.Conv2d(widths[self.point_level + 1], config.point_feature_dim, 1)
        self.token_head = nn.Linear(widths[-1], config.cross_dim)
        side = config.image_size // 2 ** len(self.levels)
        self.token_position = nn.Parameter(torch.randn(side * side, config.cross_dim) * 0.02)
        self.coordinate_head = None
        if config.token_coordinates:
            self.register_buffer("token_xy", token_centres(side), persistent=False)
            self.coordinate_head = nn.Linear(2 + 4 * COORDINATE_FREQUENCIES, config.cross_dim)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self.size = config.image_size

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) → uint8 (B, S, S, 3): done once per dataset, not every step."""
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images uint8 (B, H, W, 3), xy (B, N, 2) in [0, 1] → point features (B, C, N), tokens (B, L, D)."""
        if images.shape[1:3] != (self.size, self.size):
            images = self.resize(images)
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        point_map = None
        for i, level in enumerate(self.levels):
            x = level(x)
            if i == self.point_level:
                point_map = self.point_head(x)
        grid = (xy * 2.0 - 1.0)[:, :, None, :]  # (B, N, 1, 2) for grid_sample, x first
        points = F.grid_sample(point_map, grid, mode="bilinear", align_corners=False)[..., 0]
        tokens = self.token_head(x.flatten(2).transpose(1, 2)) + self.token_position
        if self.coordinate_head is not None:
            tokens = tokens + self.coordinate_head(coordinate_features(self.token_xy))
        return points, tokens


COORDINATE_FREQUENCIES = 4


def token_centres(side: int) -> torch.Tensor:
    """(side², 2) centres (x, y) in [0, 1] of a side × side token grid, row-major like ``flatten``."""
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


def coordinate_features(xy: torch.Tensor) -> torch.Tensor:
    """(..., 2) in [0, 1] → (..., 2 + 4F): the coordinates and their sin/cos at F octaves."""
    scaled = xy[..., None] * (torch.pi * 2.0 ** torch.arange(COORDINATE_FREQUENCIES, device=xy.device))
    return torch.cat([xy, scaled.sin().flatten(-2), scaled.cos().flatten(-2)], dim=-1)


class SmallDenoiser(nn.Module):
    """``denoiser(x (B, T, 3, G, G), t, images, queries, text_tokens) -> (B, T, 3, G, G)``."""

    def __init__(self, config: SmallConfig, grid_size: int, num_frames: int, text_dim: int) -> None:
        super().__init__()
        self.config = config
        self.grid_size, self.num_frames = grid_size, num_frames
        self.image_encoder = ImageEncoder(config)
        self.text_projection = nn.Linear(text_dim, config.cross_dim)
        channels = list(config.unet_channels)
        depth = len(channels)
        self.unet = UNet2DConditionModel(
            sample_size=grid_size,
            in_channels=3 * num_frames + 2 + config.point_feature_dim,
            out_channels=3 * num_frames,
            # no attention at full grid resolution: it made a training step several times slower on a CPU
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (depth - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (depth - 1) + ("UpBlock2D",),
            block_out_channels=tuple(channels),
            layers_per_block=config.layers_per_block,
            cross_attention_dim=config.cross_dim,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=min(32, channels[0] // 2),
            class_embed_type="projection" if config.text_in_time_embedding else None,
            projection_class_embeddings_input_dim=config.cross_dim if config.text_in_time_embedding else None,
        )

    def condition(
        self, images: torch.Tensor, queries: torch.Tensor, text_tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Everything but the noisy flow, computed once per sample (reused over the denoising steps)."""
        g = self.grid_size
        xy = queries[..., 1:3]
        point_features, image_tokens = self.image_encoder(images, xy)
        b = images.shape[0]
        position = (xy * 2.0 - 1.0).transpose(1, 2)  # (B, 2, N)
        extra = torch.cat([position, point_features], dim=1).reshape(b, -1, g, g)
        text = self.text_projection(text_tokens)
        return {"extra": extra, "image_tokens": image_tokens, "text_tokens": text}

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        b, frames, c, g, _ = x.shape
        inputs = torch.cat([x.reshape(b, frames * c, g, g), condition["extra"]], dim=1)
        context = torch.cat([condition["text_tokens"], condition["image_tokens"]], dim=1)
        text = condition["text_tokens"].mean(dim=1) if self.config.text_in_time_embedding else None
        out = self.unet(inputs, t, encoder_hidden_states=context, class_labels=text).sample
        return out.reshape(b, frames, c, g, g)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder.resize(images)

    # the small preset diffuses flow images directly (pixel space)
    def model_space_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.num_frames, 3, self.grid_size, self.grid_size)

    def to_model_space(self, flow: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return flow

    def from_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return x
