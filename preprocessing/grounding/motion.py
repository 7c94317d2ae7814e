"""The ``motion`` grounder: no weights — the object is what moves.

A coarse grid over the whole first frame is tracked (LK by default). The camera's own motion is removed
first: a homography per frame, fitted with RANSAC to all tracked points (the background is most of them),
so a hand-held camera does not make everything "move". Points whose remaining motion spans more
than ``threshold_px`` (in a 256-pixel frame) are moving. Moving grid neighbours are joined when their
motions agree (mean difference below ``coherence_px``), which separates the object from background points
it drags across or uncovers. The group with the most motion (cells × median span) gives the box, from its
first-frame cells — a hand lowering a cup beats a torso swaying behind it. Groups mostly on
the image border in the first frame (an arm coming into view) are skipped when another exists. Good enough
for one object moving in front of the camera; the prompt is not used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from preprocessing.grounding.base import GROUNDERS, Box, Grounder, NoObjectFound
from preprocessing.trackers import TRACKERS
from preprocessing.tracks import grid_in_box, moving_mask


@dataclass
class MotionConfig:
    grid_size: int = 32
    """The coarse grid is grid_size × grid_size over the whole frame."""
    threshold_px: float = 8.0
    """Smallest span of a moving point, in pixels of a 256-pixel frame."""
    coherence_px: float = 4.0
    """Largest mean difference between two neighbours' motions for them to belong to one object."""
    compensate_camera: bool = True
    tracker: str = "lk"
    tracker_args: dict[str, Any] = field(default_factory=dict)
    max_frames: int = 48
    """Only the first frames are used: enough to see the motion, cheap to track."""
    min_points: int = 4
    """A cluster smaller than this is noise."""


@GROUNDERS.register("motion", MotionConfig)
class MotionGrounder(Grounder):
    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self.tracker = TRACKERS.build(self.config.tracker, self.config.tracker_args)

    def ground(self, frames: np.ndarray, prompt: str, given_box: Box | None = None) -> list[Box]:
        cfg = self.config
        g = cfg.grid_size
        queries = grid_in_box((0.0, 0.0, 1.0, 1.0), g)
        clip = frames[: cfg.max_frames]
        tracks, visibility = self.tracker.track(clip, queries)
        px = tracks * 256.0
        if cfg.compensate_camera:
            px = _remove_camera_motion(px, visibility)
        residual = px - px[:1]
        moving = moving_mask(px / 256.0, visibility, cfg.threshold_px)
        labels = _coherent_groups(residual, visibility, moving.reshape(g, g), cfg.coherence_px)
        clusters = [np.argwhere(labels == k) for k in range(1, labels.max() + 1)]
        clusters = [c for c in clusters if len(c) >= cfg.min_points]
        if not clusters:
            raise NoObjectFound(
                f"nothing moved more than {cfg.threshold_px:g} px in the first {len(clip)} frames"
            )
        inner = [c for c in clusters if _border_fraction(c, g) < 0.5]
        span = _span(px, visibility).reshape(g, g)
        energy = {id(c): len(c) * float(np.median(span[c[:, 0], c[:, 1]])) for c in inner or clusters}
        clusters = sorted(inner or clusters, key=lambda c: energy[id(c)], reverse=True)
        best = energy[id(clusters[0])]
        return [self._box(c, energy[id(c)] / best, g) for c in clusters]

    @staticmethod
    def _box(cells: np.ndarray, score: float, g: int) -> Box:
        rows, cols = cells[:, 0], cells[:, 1]
        x0, x1 = cols.min() / g, (cols.max() + 1) / g
        y0, y1 = rows.min() / g, (rows.max() + 1) / g
        return Box((float(x0), float(y0), float(x1), float(y1)), score=score, label="moving")


def _remove_camera_motion(px: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """Map every frame's points back through the camera's motion (a RANSAC homography to frame 0)."""
    out = px.copy()
    for t in range(1, len(px)):
        both = visibility[0] & visibility[t]
        if both.sum() < 8:
            continue
        homography, _ = cv2.findHomography(px[t, both], px[0, both], cv2.RANSAC, 2.0)
        if homography is not None:
            out[t] = cv2.perspectiveTransform(px[t][None].astype(np.float64), homography)[0]
    return out


def _coherent_groups(
    residual: np.ndarray, visibility: np.ndarray, moving: np.ndarray, tolerance: float
) -> np.ndarray:
    """Label image over the grid: moving neighbours joined when their motions agree."""
    g = moving.shape[0]
    res = residual.reshape(len(residual), g, g, 2)
    vis = visibility.reshape(len(visibility), g, g)
    graph_rows, graph_cols = [], []
    index = np.arange(g * g).reshape(g, g)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = (slice(0, g - dy), slice(max(0, -dx), g - max(0, dx)))  # cell and its (dy, dx) neighbour
        b = (slice(dy, g), slice(max(0, dx), g + min(0, dx)))
        both = vis[:, a[0], a[1]] & vis[:, b[0], b[1]]
        diff = np.linalg.norm(res[:, a[0], a[1]] - res[:, b[0], b[1]], axis=-1)
        count = both.sum(axis=0)
        mean = np.where(count > 0, (diff * both).sum(axis=0) / np.maximum(count, 1), np.inf)
        link = moving[a] & moving[b] & (mean < tolerance) & (count >= 2)
        graph_rows.append(index[a][link])
        graph_cols.append(index[b][link])
    rows = np.concatenate(graph_rows)
    cols = np.concatenate(graph_cols)
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(g * g, g * g))
    _, components = csgraph.connected_components(graph, directed=False)
    labels = np.zeros(g * g, np.int32)
    flat_moving = moving.ravel()
    # renumber the components that contain moving points as 1..K
    ids = {c: k + 1 for k, c in enumerate(np.unique(components[flat_moving]))}
    labels[flat_moving] = [ids[c] for c in components[flat_moving]]
    return labels.reshape(g, g)


def _span(px: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """(N,) larger side of the box around each point's visible positions (0 if seen fewer than twice)."""
    seen = np.where(visibility[..., None], px, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        span = np.nanmax(seen, axis=0) - np.nanmin(seen, axis=0)
    return np.nan_to_num(span, nan=0.0).max(axis=-1)


def _border_fraction(cells: np.ndarray, g: int) -> float:
    on_border = (cells[:, 0] == 0) | (cells[:, 1] == 0) | (cells[:, 0] == g - 1) | (cells[:, 1] == g - 1)
    return float(on_border.mean())
