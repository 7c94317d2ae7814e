"""Pictures of generated flow: generated vs true side by side on the first frame (GIF / mp4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from im2flow2act.preprocessing.video import write_video
from im2flow2act.preprocessing.visualize import side_by_side


def with_start(flow: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, 3) flow (x, y, vis) → tracks (T+1, N, 2), visibility (T+1, N) starting at the query grid."""
    tracks = np.concatenate([queries[None, :, 1:3], flow[..., :2]], axis=0).astype(np.float32)
    visibility = np.concatenate([np.ones((1, len(queries)), bool), flow[..., 2] > 0.5], axis=0)
    return tracks, visibility


def write_comparison(
    path: str | Path,
    image: np.ndarray,
    queries: np.ndarray,
    flows: list[np.ndarray],
    labels: list[str],
    fps: float = 6.0,
) -> Path:
    """Panels (one per flow, same point colours) over time on ``image``, written as a GIF or mp4."""
    panels = side_by_side(image, [with_start(f, queries) for f in flows], labels=labels)
    return write_video(path, panels, fps)
