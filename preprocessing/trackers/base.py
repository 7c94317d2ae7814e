"""The tracker interfaces and their registry.

Every backend takes RGB uint8 frames and normalised queries and returns tracks in the contract of
``im2flow2act.preprocessing.tracks``; resizing, pixel conversion and windowing stay inside the backend, like
CoTracker's predictor. Offline: ``track(frames, queries)``. Online (closed-loop use in simulation):
``reset(first_frame, queries)`` once, then ``step(frame)`` per new frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from im2flow2act.core.registry import Registry

TRACKERS: Registry[Tracker] = Registry("tracker")


class Tracker(ABC):
    """Offline point tracker: a whole video and its queries in, tracks and visibility out."""

    @abstractmethod
    def track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames uint8 (T, H, W, 3), queries (N, 3) → tracks float32 (T, N, 2), visibility bool (T, N)."""


class OnlineTracker(Tracker):
    """A tracker that can also follow points frame by frame as they arrive."""

    @abstractmethod
    def reset(self, first_frame: np.ndarray, queries: np.ndarray) -> None:
        """Start tracking ``queries`` (N, 2) normalised (x, y), or (N, 3) with t = 0, on ``first_frame``."""

    @abstractmethod
    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Track into the next frame → positions float32 (N, 2) normalised, visibility bool (N,)."""


def check_inputs(frames: np.ndarray, queries: np.ndarray) -> None:
    """Shared argument checks with messages that say what was expected."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.shape} {frames.dtype}")
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries must be (N, 3) as (t, x, y), got {queries.shape}")
    t = queries[:, 0]
    if len(t) and (t.min() < 0 or t.max() > frames.shape[0] - 1):
        raise ValueError(f"query times must lie in [0, {frames.shape[0] - 1}], got {t.min()}..{t.max()}")
