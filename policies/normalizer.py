"""Min-max normalisation to [-1, 1] per dimension, kept inside the policy and saved with it.

Statistics are fitted once on the training data; a dimension whose range is tiny (a constant, e.g. the
gripper in a dataset that never grasps) is only centred, not blown up — the reference's
``normalize_threshold`` idea.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_RANGE = 1e-2


class Normalizer(nn.Module):
    """Per-key min-max normaliser; ``state_dict`` carries the statistics."""

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.keys = sorted(dims)
        for key in self.keys:
            self.register_buffer(f"{key}_low", torch.full((dims[key],), -1.0))
            self.register_buffer(f"{key}_high", torch.full((dims[key],), 1.0))

    @torch.no_grad()
    def fit(self, data: dict[str, torch.Tensor]) -> Normalizer:
        """Statistics from tensors whose last axis is each key's dimension."""
        for key in self.keys:
            values = data[key].reshape(-1, data[key].shape[-1]).float()
            getattr(self, f"{key}_low").copy_(values.min(dim=0).values)
            getattr(self, f"{key}_high").copy_(values.max(dim=0).values)
        return self

    def _scale(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = getattr(self, f"{key}_low"), getattr(self, f"{key}_high")
        centre = (low + high) / 2
        half = torch.clamp((high - low) / 2, min=MIN_RANGE / 2)
        return centre, half

    def normalize(self, key: str, value: torch.Tensor) -> torch.Tensor:
        centre, half = self._scale(key)
        return (value - centre) / half

    def unnormalize(self, key: str, value: torch.Tensor) -> torch.Tensor:
        centre, half = self._scale(key)
        return value * half + centre
