"""Sampling feature maps at sub-pixel points, the feature pyramid and the 4-D correlation volume.

Coordinates here are in the units of the map being sampled, with 0 at the centre of the first cell
(``align_corners=True``); points outside the map read the nearest border value. This is the convention
CoTracker3 was trained with, so it must not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bilinear_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Sample ``maps`` at ``points`` with bilinear interpolation (trilinear over time for 5-D maps).

    maps (B, C, H, W) with points (B, ..., 2) as (x, y), or maps (B, C, T, H, W) with points
    (B, ..., 3) as (t, x, y) — integer t reads that frame exactly. Returns (B, ..., C).
    """
    batch, middle, dims = points.shape[0], points.shape[1:-1], maps.dim() - 2
    grid = _to_grid(maps, points).reshape(batch, *([1] * (dims - 1)), -1, dims)
    out = _grid_sample(maps, grid)
    return out.reshape(batch, maps.shape[1], -1).transpose(1, 2).reshape(batch, *middle, maps.shape[1])


def _to_grid(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map-cell coordinates → ``grid_sample``'s [-1, 1] (corner cell centres at ±1), innermost axis first."""
    sizes = maps.shape[2:]
    if points.shape[-1] != len(sizes):
        raise ValueError(f"{maps.dim()}-D maps need points with {len(sizes)} coordinates, got {points.shape}")
    if len(sizes) == 3:
        points = points[..., [1, 2, 0]]  # grid_sample wants (x, y, t)
    extent = torch.tensor([max(s - 1, 1) for s in reversed(sizes)], dtype=points.dtype, device=points.device)
    return points * (2.0 / extent) - 1.0


def _grid_sample(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(
        maps, grid.to(maps.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )


def neighbourhood_offsets(radius: int, device: torch.device | None = None) -> torch.Tensor:
    """The (2r+1)² integer (dx, dy) offsets, flattened with the x offset on the slow (first) axis.

    Index ``(2r+1) * a + b`` holds (a - r, b - r); the trained correlation MLP depends on this order.
    """
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    dx, dy = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


def feature_pyramid(fmaps: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """(B, T, C, H, W) level-0 maps → ``levels`` maps, each a 2x2 average pool of the one before."""
    pyramid = [fmaps]
    for _ in range(levels - 1):
        b, t = fmaps.shape[:2]
        fmaps = F.avg_pool2d(fmaps.flatten(0, 1), 2, stride=2)
        fmaps = fmaps.unflatten(0, (b, t))
        pyramid.append(fmaps)
    return pyramid


def support_features(
    fmaps: torch.Tensor, frames: torch.Tensor, xy: torch.Tensor, radius: int
) -> torch.Tensor:
    """Features around each query on its own frame: (B, N, (2r+1)², C).

    fmaps (B, T, C, H, W); frames (B, N) integer frame indices into T; xy (B, N, 2) in map cells.
    Equals 5-D sampling at (t, x, y) for integer t, but reads only the query frames' maps.
    """
    b, n = frames.shape
    offsets = neighbourhood_offsets(radius, xy.device).to(xy.dtype)
    points = xy[:, :, None, :] + offsets  # (B, N, K, 2)
    out = fmaps.new_zeros(b, n, len(offsets), fmaps.shape[2])
    for i in range(b):
        for t in frames[i].unique().tolist():
            chosen = frames[i] == t
            out[i, chosen] = bilinear_sample(fmaps[i : i + 1, t], points[i : i + 1, chosen])[0]
    return out


def local_correlation(
    fmaps: torch.Tensor, coords: torch.Tensor, support: torch.Tensor, radius: int
) -> torch.Tensor:
    """Dot products between every target-neighbourhood feature and every query-support feature.

    fmaps (B, T, C, H, W); coords (B, T, N, 2) in map cells; support (B, N, K, C) with K = (2r+1)².
    Returns (B, T, N, K * K), flattened target-major: index ``k_target * K + k_support``. No 1/sqrt(C).
    """
    b, t, c, h, w = fmaps.shape
    n = coords.shape[2]
    maps = fmaps.reshape(b * t, c, h, w)
    offsets = neighbourhood_offsets(radius, coords.device).to(coords.dtype)
    grid = _to_grid(maps, coords[:, :, :, None, :] + offsets).reshape(b * t, n, len(offsets), 2)
    target = _grid_sample(maps, grid).reshape(b, t, c, n, len(offsets))  # sampled in grid_sample's layout
    corr = torch.einsum("btcnk,bnsc->btnks", target, support)
    return corr.reshape(b, t, n, -1)


def sincos_time_embedding(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) sin-cos embedding of frame indices: all sines first, then all cosines.

    Frequencies are 10000 ** (-d / (dim / 2)) for d < dim / 2, computed in float64 as the checkpoints' buffer.
    """
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[None].float()


def motion_encoding(coords: torch.Tensor, scale: torch.Tensor, num_scales: int = 10) -> torch.Tensor:
    """Per-frame motion features: (B, T, N, 2) coords → (B, T, N, 4 + 8 * num_scales).

    v = (forward diff, backward diff) / scale, with forward diff c_t - c_{t+1} (0 on the last frame) and
    backward diff c_t - c_{t-1} (0 on the first). Output [v, sin(v * 2^s), cos(v * 2^s)], the scaled
    values ordered scale-major (index 4 * s + k); the cosine is written as sin(u + pi / 2) as in training.
    """
    forward = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
    backward = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
    v = torch.cat([forward / scale, backward / scale], dim=-1)
    powers = 2.0 ** torch.arange(num_scales, dtype=v.dtype, device=v.device)
    u = (v[..., None, :] * powers[:, None]).flatten(-2)
    return torch.cat([v, torch.sin(torch.cat([u, u + 0.5 * torch.pi], dim=-1))], dim=-1)
