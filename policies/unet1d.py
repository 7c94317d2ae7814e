"""A 1-D conditional U-Net over action chunks (the Diffusion Policy action head), FiLM-conditioned.

Each residual block applies two Conv1d–GroupNorm–Mish layers; the condition (diffusion-step embedding ⊕
the policy's global condition) produces a per-channel scale and bias between them (FiLM). With a
``context_dim``, every resolution also cross-attends from the chunk's time steps to a set of context tokens
(the policy's per-point plan tokens), a path the pooled FiLM condition cannot squeeze.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class StepEmbedding(nn.Module):
    """Sinusoidal embedding of the diffusion step, as in the Transformer's position encoding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, step: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=step.device) / max(half - 1, 1))
        angle = step.float()[:, None] * freq[None]
        return torch.cat([angle.sin(), angle.cos()], dim=-1)


def _conv_block(cin: int, cout: int, kernel: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, padding=kernel // 2), nn.GroupNorm(groups, cout), nn.Mish()
    )


class FiLMBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.first = _conv_block(cin, cout, kernel, groups)
        self.second = _conv_block(cout, cout, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        scale, bias = self.film(cond)[..., None].chunk(2, dim=1)
        return self.second(h * (1 + scale) + bias) + self.skip(x)


class CrossAttention(nn.Module):
    """Residual cross-attention from a (B, C, T) feature map to (B, N, context_dim) tokens."""

    def __init__(self, channels: int, context_dim: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.context_norm = nn.LayerNorm(context_dim)
        self.attn = nn.MultiheadAttention(
            channels, heads, kdim=context_dim, vdim=context_dim, batch_first=True
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        query = self.norm(x.transpose(1, 2))
        keys = self.context_norm(context)
        attended, _ = self.attn(query, keys, keys, need_weights=False)
        return x + attended.transpose(1, 2)


class ConditionalUnet1D(nn.Module):
    """(B, T, A) noisy actions, (B,) diffusion steps, (B, C) condition [, (B, N, context_dim) tokens]
    → (B, T, A) predicted noise."""

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        down_dims=(64, 128),
        kernel: int = 5,
        groups: int = 8,
        step_dim: int = 64,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.step = nn.Sequential(
            StepEmbedding(step_dim),
            nn.Linear(step_dim, 4 * step_dim),
            nn.Mish(),
            nn.Linear(4 * step_dim, step_dim),
        )
        c = step_dim + cond_dim
        dims = [action_dim, *down_dims]
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == len(down_dims) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        FiLMBlock(cin, cout, c, kernel, groups),
                        FiLMBlock(cout, cout, c, kernel, groups),
                        nn.Conv1d(cout, cout, 3, stride=2, padding=1) if not last else nn.Identity(),
                    ]
                )
            )
        mid = down_dims[-1]
        self.mid = nn.ModuleList(
            [FiLMBlock(mid, mid, c, kernel, groups), FiLMBlock(mid, mid, c, kernel, groups)]
        )
        self.up = nn.ModuleList()
        for cout, cin in zip(reversed(down_dims[:-1]), reversed(down_dims[1:]), strict=True):
            self.up.append(
                nn.ModuleList(
                    [
                        FiLMBlock(cin * 2, cout, c, kernel, groups),
                        FiLMBlock(cout, cout, c, kernel, groups),
                        nn.ConvTranspose1d(cout, cout, 4, stride=2, padding=1),
                    ]
                )
            )
        self.context_dim = context_dim
        if context_dim is not None:
            self.down_attn = nn.ModuleList(CrossAttention(d, context_dim) for d in down_dims)
            self.mid_attn = CrossAttention(mid, context_dim)
            self.up_attn = nn.ModuleList(CrossAttention(d, context_dim) for d in reversed(down_dims[:-1]))
        self.final = nn.Sequential(
            _conv_block(down_dims[0], down_dims[0], kernel, groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )

    def forward(
        self,
        actions: torch.Tensor,
        step: torch.Tensor,
        cond: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if (context is None) != (self.context_dim is None):
            raise ValueError("pass context tokens exactly when the U-Net was built with a context_dim")
        c = torch.cat([self.step(step), cond], dim=-1)
        x = actions.transpose(1, 2)
        skips = []
        for level, (first, second, down) in enumerate(self.down):
            x = second(first(x, c), c)
            if context is not None:
                x = self.down_attn[level](x, context)
            skips.append(x)
            x = down(x)
        for block in self.mid:
            x = block(x, c)
        if context is not None:
            x = self.mid_attn(x, context)
        for level, (first, second, up) in enumerate(self.up):
            x = torch.cat([x, skips.pop()], dim=1)
            x = second(first(x, c), c)
            if context is not None:
                x = self.up_attn[level](x, context)
            x = up(x)
        return self.final(x).transpose(1, 2)
