"""Geometric augmentation of training clips: a random crop-and-zoom and a left-right flip.

Why: a few hundred demonstrations give the generator a few hundred layouts, and it memorises them (on the
mug tasks its training-clip error was half its held-out error). Moving and mirroring the whole picture
makes new layouts for free while keeping each clip's meaning: the instruction, which object moves, and
where it goes relative to the other objects are unchanged. The image, the query grid and the flow video
move together under one affine map of normalised image coordinates, ``u_source = scale · u + offset``
(a flip is a negative x scale), so a point's track stays on the pixels it was tracked on.

The crop always keeps the whole query grid in the picture. Flow frames may leave [0, 1] after a zoom, as
they may in a real video; ``decode`` clips them as usual.

Off by default: within a CPU training budget it spreads the samples more but is worse on average and
follows the instruction less (docs/results/im2flow.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from im2flow2act.im2flow.flow_image import FlowImageConfig


@dataclass
class AugmentConfig:
    flip_prob: float = 0.0
    """Chance of mirroring a clip left-right."""
    min_crop: float = 1.0
    """Smallest crop side as a fraction of the frame (1.0 = no zoom); the crop is resized back up."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"augment.flip_prob must be in [0, 1], got {self.flip_prob}")
        if not 0.0 < self.min_crop <= 1.0:
            raise ValueError(f"augment.min_crop must be in (0, 1], got {self.min_crop}")

    @property
    def enabled(self) -> bool:
        return self.flip_prob > 0.0 or self.min_crop < 1.0


def random_maps(
    queries: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per clip: (scale (B, 2), offset (B, 2), flipped (B,)) of ``u_source = scale · u + offset``.

    The crop side is drawn in [min_crop, 1], its corner so that every query point stays inside."""
    b = len(queries)
    xy = queries[..., 1:3].float()
    side = config.min_crop + (1.0 - config.min_crop) * torch.rand(b, generator=generator)
    low = torch.clamp(xy.amax(dim=1) - side[:, None], min=0.0)  # the crop must reach the last point
    high = torch.clamp(torch.minimum(xy.amin(dim=1), 1.0 - side[:, None]), min=0.0)
    high = torch.maximum(high, low)  # a grid wider than the crop: keep as much of it as possible
    corner = low + (high - low) * torch.rand(b, 2, generator=generator)
    flipped = torch.rand(b, generator=generator) < config.flip_prob
    scale = side[:, None].repeat(1, 2)
    offset = corner.clone()
    scale[flipped, 0] = -side[flipped]
    offset[flipped, 0] = corner[flipped, 0] + side[flipped]
    return scale, offset, flipped


def warp_images(images: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3): the picture each clip would show under its map (bilinear)."""
    x = images.permute(0, 3, 1, 2).float()
    theta = torch.zeros(len(x), 2, 3)
    # grid_sample works in [-1, 1]: v_src = 2(s·u + o) − 1 with u = (v + 1)/2 → v_src = s·v + (s + 2o − 1)
    theta[:, 0, 0], theta[:, 1, 1] = scale[:, 0], scale[:, 1]
    theta[:, :, 2] = scale + 2.0 * offset - 1.0
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def warp_queries(queries: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) as (t, x, y): positions in the new picture, u = (u_source − offset) / scale."""
    out = queries.clone()
    out[..., 1:3] = (queries[..., 1:3] - offset[:, None]) / scale[:, None]
    return out


def warp_flows(
    flows: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, flow: FlowImageConfig
) -> torch.Tensor:
    """Flow videos (B, T, 3, G, G) under the maps; visibility is kept."""
    out = flows.clone()
    s = scale[:, None, :, None, None].to(flows.dtype)
    if flow.encoding == "displacement":  # a displacement only scales
        out[:, :, 0:2] = flows[:, :, 0:2] / s
    elif flow.encoding == "sqrt_displacement":  # √|d / s| = √|d| / √|s|; a flip turns the sign
        out[:, :, 0:2] = flows[:, :, 0:2] * torch.sign(s) / torch.sqrt(torch.abs(s))
    else:  # absolute: e = 2u − 1
        o = offset[:, None, :, None, None].to(flows.dtype)
        out[:, :, 0:2] = 2.0 * (((flows[:, :, 0:2] + 1.0) / 2.0 - o) / s) - 1.0
    return out


def augment_batch(
    images: torch.Tensor,
    queries: torch.Tensor,
    flows: torch.Tensor,
    config: AugmentConfig,
    flow: FlowImageConfig,
    generator: torch.Generator | list[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images uint8 (B, H, W, 3), queries (B, G², 3), flows (B, T, 3, G, G)), all moved by one random map.

    ``generator`` may be one per clip (the trainer's per-sample generators: the map then follows the clip,
    not the batch it is in)."""
    if not config.enabled:
        return images, queries, flows
    if isinstance(generator, list):
        maps = [random_maps(queries[k : k + 1], config, g) for k, g in enumerate(generator)]
        scale, offset, flipped = (torch.cat(parts) for parts in zip(*maps, strict=True))
    else:
        scale, offset, flipped = random_maps(queries, config, generator)
    g = flow.grid_size
    new_images = warp_images(images, scale, offset)
    new_queries = warp_queries(queries, scale, offset)
    new_flows = warp_flows(flows, scale, offset, flow)
    if bool(flipped.any()):
        b = len(queries)
        new_queries = torch.where(
            flipped[:, None, None],
            new_queries.reshape(b, g, g, 3).flip(2).reshape(b, g * g, 3),
            new_queries,
        )
        new_flows = torch.where(flipped[:, None, None, None, None], new_flows.flip(-1), new_flows)
    return new_images, new_queries, new_flows
