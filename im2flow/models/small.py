"""The ``small`` preset: a pixel-space flow denoiser trained from scratch, sized for a laptop CPU.

Time is folded into channels: the T-frame flow video (T, 3, G, G) is one G×G image with 3T channels, so a
2-D conditional U-Net (``diffusers.UNet2DConditionModel``) denoises all frames jointly. Every grid cell also
gets, as extra input channels, its query position and the image features under it (bilinearly sampled from
a small CNN trained with the model), so the network knows what each point sits on. The instruction tokens
and a coarse grid of image tokens enter through cross-attention; the instruction is also added to the
timestep embedding of every residual block (``text_in_time_embedding``), because one text token among
144 image tokens was easy for cross-attention to ignore (instruction following was at chance without it).

With ``goal_keypoints`` the instruction also picks places in the picture: the image features, modulated by
the instruction (FiLM), give K heat maps whose soft-argmax is a point each (spatial softmax, as in
end-to-end visuomotor learning). Every grid cell then gets, as input channels, the vector from its query
point to each keypoint, the displacement a flow toward "the plate" needs. Without it the generator learned
where the arrangements it saw put the target instead of looking for the plate (docs/results/im2flow.md).
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
    goal_keypoints: int = 4
    """K instruction-chosen points in the picture (0: off); each grid cell gets its vector to each of them.
    On by default: on layouts no training clip resembles it raised instruction following from below chance
    to well above it (docs/results/im2flow.md)."""


class GoalKeypoints(nn.Module):
    """Instruction → K points in the image: FiLM on the image features, K heat maps, spatial soft-argmax."""

    def __init__(self, feature_dim: int, text_dim: int, keypoints: int) -> None:
        super().__init__()
        self.film = nn.Linear(text_dim, 2 * feature_dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.mix = nn.Conv2d(feature_dim, feature_dim, 3, padding=1)
        self.heat = nn.Conv2d(feature_dim, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, H, W), text (B, D) → keypoints (B, K, 2) as (x, y) in [0, 1], maps (B, K, H, W)."""
        scale, shift = self.film(text)[:, :, None, None].chunk(2, dim=1)
        x = F.silu(self.mix(features * (1.0 + scale) + shift))
        logits = self.heat(x) * self.log_temperature.exp()
        b, k, h, w = logits.shape
        weights = logits.flatten(2).softmax(dim=-1).view(b, k, h, w)
        xs = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) / w
        ys = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) / h
        keypoints = torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)
        return keypoints, weights


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
        # keypoints look at the mid level (finer) and the last level (wider view), side by side
        self.keypoint_dim = widths[self.point_level + 1] + widths[-1]
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
        points, tokens, _ = self.encode(images, xy)
        return points, tokens

    def encode(
        self, images: torch.Tensor, xy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As ``forward``, plus the feature map keypoints are found on (B, C_mid + C_last, H_mid, W_mid)."""
        if images.shape[1:3] != (self.size, self.size):
            images = self.resize(images)
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        point_map = mid = x
        for i, level in enumerate(self.levels):
            x = level(x)
            if i == self.point_level:
                point_map, mid = self.point_head(x), x
        grid = (xy * 2.0 - 1.0)[:, :, None, :]  # (B, N, 1, 2) for grid_sample, x first
        points = F.grid_sample(point_map, grid, mode="bilinear", align_corners=False)[..., 0]
        tokens = self.token_head(x.flatten(2).transpose(1, 2)) + self.token_position
        if self.coordinate_head is not None:
            tokens = tokens + self.coordinate_head(coordinate_features(self.token_xy))
        wide = F.interpolate(x, size=mid.shape[-2:], mode="nearest")
        return points, tokens, torch.cat([mid, wide], dim=1)


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
        k = config.goal_keypoints
        self.goal_keypoints = None
        if k > 0:
            self.goal_keypoints = GoalKeypoints(self.image_encoder.keypoint_dim, config.cross_dim, k)
            self.keypoint_tokens = nn.Linear(2 + 4 * COORDINATE_FREQUENCIES, config.cross_dim)
        channels = list(config.unet_channels)
        depth = len(channels)
        self.unet = UNet2DConditionModel(
            sample_size=grid_size,
            in_channels=3 * num_frames + 2 + config.point_feature_dim + 2 * k,
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
        point_features, image_tokens, feature_map = self.image_encoder.encode(images, xy)
        b = images.shape[0]
        position = (xy * 2.0 - 1.0).transpose(1, 2)  # (B, 2, N)
        text = self.text_projection(text_tokens)
        channels = [position, point_features]
        if self.goal_keypoints is not None:
            keypoints, _ = self.goal_keypoints(feature_map, text.mean(dim=1))  # (B, K, 2)
            to_goal = 2.0 * (keypoints[:, :, None, :] - xy[:, None, :, :])  # (B, K, N, 2), like ``position``
            channels.append(to_goal.permute(0, 1, 3, 2).reshape(b, -1, xy.shape[1]))
            goal_tokens = self.keypoint_tokens(coordinate_features(keypoints))
            image_tokens = torch.cat([goal_tokens, image_tokens], dim=1)
        extra = torch.cat(channels, dim=1).reshape(b, -1, g, g)
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
