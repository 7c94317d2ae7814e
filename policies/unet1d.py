"""A 1-D conditional U-Net over action chunks (the Diffusion Policy action head), FiLM-conditioned.

Each residual block applies two Conv1d–GroupNorm–Mish layers; the condition (diffusion-step embedding ⊕
the policy's global condition) produces a per-channel scale and bias between them (FiLM).
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


class ConditionalUnet1D(nn.Module):
    """(B, T, A) noisy actions, (B,) diffusion steps, (B, C) condition → (B, T, A) predicted noise."""

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        down_dims=(64, 128),
        kernel: int = 5,
        groups: int = 8,
        step_dim: int = 64,
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
        self.final = nn.Sequential(
            _conv_block(down_dims[0], down_dims[0], kernel, groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )

    def forward(self, actions: torch.Tensor, step: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = torch.cat([self.step(step), cond], dim=-1)
        x = actions.transpose(1, 2)
        skips = []
        for first, second, down in self.down:
            x = second(first(x, c), c)
            skips.append(x)
            x = down(x)
        for block in self.mid:
            x = block(x, c)
        for first, second, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(second(first(x, c), c))
        return self.final(x).transpose(1, 2)
