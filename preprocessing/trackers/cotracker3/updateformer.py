"""The update transformer: refines all tracks jointly by attending along time and across tracks.

Attention across tracks goes through 64 learned "virtual tracks" (they read from the points, talk
among themselves, and the points read back from them), so the cost grows linearly with the number of
points instead of quadratically.
"""

from __future__ import annotations

import torch
from torch import nn

from im2flow2act.preprocessing.trackers.cotracker3.blocks import AttnBlock, CrossAttnBlock


class EfficientUpdateFormer(nn.Module):
    """(B, N, T, input_dim) tokens → (B, N, T, 4) updates: dx, dy, d visibility logit, d confidence logit."""

    def __init__(
        self,
        depth: int = 3,
        input_dim: int = 1110,
        hidden_size: int = 384,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        # the misspelled name is the checkpoints' key; it must stay
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.flow_head = nn.Linear(hidden_size, 2)
        self.vis_conf_head = nn.Linear(hidden_size, 2)
        self.time_blocks = nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(
            AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh-model init (irrelevant once a checkpoint loads): tiny heads, so random models barely move."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for head in (self.flow_head, self.vis_conf_head):
            nn.init.trunc_normal_(head.weight, std=1e-3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, t, _ = tokens.shape
        x = self.input_transform(tokens)
        virtual = self.virual_tracks.expand(b, -1, t, -1)
        x = torch.cat([x, virtual], dim=1)  # (B, N + V, T, D)
        for i, time_block in enumerate(self.time_blocks):
            x = time_block(x.flatten(0, 1)).unflatten(0, (b, -1))  # each track along its frames
            frames = x.transpose(1, 2).flatten(0, 1)  # (B * T, N + V, D): each frame across tracks
            points, virtual = frames[:, :n], frames[:, n:]
            virtual = self.space_virtual2point_blocks[i](virtual, points)
            virtual = self.space_virtual_blocks[i](virtual)
            points = self.space_point2virtual_blocks[i](points, virtual)
            x = torch.cat([points, virtual], dim=1).unflatten(0, (b, t)).transpose(1, 2)
        points = x[:, :n]
        return torch.cat([self.flow_head(points), self.vis_conf_head(points)], dim=-1)
