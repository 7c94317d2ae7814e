"""The building blocks of CoTracker3: the CNN feature encoder and the transformer blocks.

Attribute names and layer shapes follow the official checkpoints (``scaled_offline.pth``,
``scaled_online.pth``) so that they load with ``strict=True``; the code itself is ours. Normalisation
layers without parameters (instance norm, non-affine layer norm) are kept as modules so the structure
reads like the architecture, but they add no state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and ReLU; a 1x1 conv shortcut when the block downsamples."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride), nn.InstanceNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + y)


class BasicEncoder(nn.Module):
    """Per-frame CNN: 128-dim features at 1/4 resolution from four scales (1/2 … 1/16) fused together.

    Every norm is a per-image instance norm, so each frame's features depend on that frame only — which
    is what lets us compute them in chunks, cache them across windows and pad a window by repeating them.
    """

    def __init__(self, input_dim: int = 3, output_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(input_dim, 64, 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._layer(64, 64, stride=1)
        self.layer2 = self._layer(64, 96, stride=2)
        self.layer3 = self._layer(96, 128, stride=2)
        self.layer4 = self._layer(128, 128, stride=2)
        self.conv2 = nn.Conv2d(64 + 96 + 128 + 128, output_dim * 2, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(output_dim * 2)
        self.conv3 = nn.Conv2d(output_dim * 2, output_dim, 1)

    @staticmethod
    def _layer(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(ResidualBlock(in_planes, planes, stride), ResidualBlock(planes, planes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, 128, H / stride, W / stride)."""
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = self.relu(self.norm1(self.conv1(x)))
        scales = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            scales.append(F.interpolate(x, size=size, mode="bilinear", align_corners=True))
        x = self.relu(self.norm2(self.conv2(torch.cat(scales, dim=1))))
        return self.conv3(x)


class Mlp(nn.Module):
    """Linear → activation → linear (``fc1`` / ``fc2``): every block's MLP and the correlation head."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int, approximate: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention with a query projection and a joint key/value projection (``to_kv``).

    ``to_kv`` produces keys in its first half and values in its second; heads split the channels
    head-major. Logits are scaled by ``dim_head ** -0.5``; no mask is ever used by CoTracker3.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, num_heads: int = 8) -> None:
        super().__init__()
        context_dim = context_dim or query_dim
        self.num_heads = num_heads
        self.dim_head = query_dim // num_heads
        inner = self.dim_head * num_heads
        self.to_q = nn.Linear(query_dim, inner)
        self.to_kv = nn.Linear(context_dim, 2 * inner)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) attends to context (B, M, D) (itself when None) → (B, L, D)."""
        context = x if context is None else context
        q = self._heads(self.to_q(x))
        k, v = (self._heads(part) for part in self.to_kv(context).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # default scale is dim_head ** -0.5
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.dim_head)).transpose(1, 2)


class AttnBlock(nn.Module):
    """Pre-norm self-attention block: x + attn(LN(x)), then x + MLP(LN(x)) (tanh GELU, ratio 4)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention block; the context gets its own affine layer norm (``norm_context``)."""

    def __init__(self, hidden_size: int, context_dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(context_dim)
        self.cross_attn = Attention(hidden_size, context_dim=context_dim, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size, approximate="tanh")

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))
