"""The ``motion`` grounder: no weights — the object is what moves on its own.

A coarse grid over the whole first frame is tracked (LK by default). The camera's own motion is removed
first, per frame, with the simpler of two models fitted with RANSAC to all tracked points: a homography
(camera still or only turning; a flat background) or, when the camera also moves and nearer things shift
against farther ones (parallax: clearly more points fit the fundamental matrix than the homography), the
epipolar geometry. A point's independent motion is its distance from where the camera model puts it (the
homography), or from its epipolar line — so a person standing still while a hand-held camera walks around
does not "move", but the bag they swing does. Points whose independent motion exceeds ``threshold_px`` (in
a 256-pixel frame) are moving. Moving grid neighbours are joined when their motions agree (mean difference
below ``coherence_px``), which separates the object from background points it drags across or uncovers.
The group with the most motion (cells × median independent motion) gives the box, from its first-frame
cells — a hand lowering a cup beats a torso swaying behind it. Groups mostly on the image border in the
first frame (an arm coming into view) are skipped when another exists. Good enough for one object moving
in front of the camera; the prompt is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from im2flow2act.preprocessing.grounding.base import GROUNDERS, Box, Grounder, NoObjectFound
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import grid_in_box


@dataclass
class MotionConfig:
    grid_size: int = 32
    """The coarse grid is grid_size × grid_size over the whole frame."""
    threshold_px: float = 8.0
    """Smallest span of a moving point, in pixels of a 256-pixel frame."""
    coherence_px: float = 4.0
    """Largest mean difference between two neighbours' motions for them to belong to one object."""
    parallax_coherence_px: float = 8.0
    """The same when the camera translates: what the homography leaves then includes each point's parallax."""
    compensate_camera: bool = True
    parallax_ratio: float = 1.25
    """The epipolar model replaces the homography when it fits this many times more points (later frames)."""
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
        px = tracks.astype(np.float64) * 256.0
        coherence, parallax = cfg.coherence_px, False
        if cfg.compensate_camera:
            px, error, parallax = _remove_camera_motion(px, visibility, cfg.parallax_ratio)
        else:
            error = np.linalg.norm(px - px[:1], axis=-1)
        if parallax:
            coherence = cfg.parallax_coherence_px
        motion = np.where(visibility & visibility[:1], error, 0.0).max(axis=0)  # (N,) independent motion
        moving = (motion > cfg.threshold_px) & (visibility.sum(axis=0) > 1)
        labels = _coherent_groups(px - px[:1], visibility, moving.reshape(g, g), coherence)
        clusters = [np.argwhere(labels == k) for k in range(1, labels.max() + 1)]
        clusters = [c for c in clusters if len(c) >= cfg.min_points]
        if not clusters:
            raise NoObjectFound(
                f"nothing moved more than {cfg.threshold_px:g} px in the first {len(clip)} frames"
            )
        inner = [c for c in clusters if _border_fraction(c, g) < 0.5]
        motion = motion.reshape(g, g)
        energy = {id(c): len(c) * float(np.median(motion[c[:, 0], c[:, 1]])) for c in inner or clusters}
        clusters = sorted(inner or clusters, key=lambda c: energy[id(c)], reverse=True)
        best = energy[id(clusters[0])]
        return [self._box(c, energy[id(c)] / best, g) for c in clusters]

    @staticmethod
    def _box(cells: np.ndarray, score: float, g: int) -> Box:
        rows, cols = cells[:, 0], cells[:, 1]
        x0, x1 = cols.min() / g, (cols.max() + 1) / g
        y0, y1 = rows.min() / g, (rows.max() + 1) / g
        return Box((float(x0), float(y0), float(x1), float(y1)), score=score, label="moving")


def _remove_camera_motion(
    px: np.ndarray, visibility: np.ndarray, parallax_ratio: float
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Undo the camera's motion → (positions mapped back to frame 0, (T, N) independent motion in px,
    whether the epipolar model was used).

    Per frame, a RANSAC homography to frame 0 maps the points back; the distance to where they started
    is their independent motion. When the camera also translates, near and far things shift differently
    and no homography explains the still background; then many more points fit a fundamental matrix,
    and the distance to the epipolar line (Sampson) is the independent motion instead.
    """
    out = px.copy()
    homography_error = np.linalg.norm(px - px[:1], axis=-1)
    epipolar_error = homography_error.copy()
    inlier_ratio = []
    for t in range(1, len(px)):
        both = visibility[0] & visibility[t]
        if both.sum() < 16:
            continue
        homography, h_inliers = cv2.findHomography(px[t, both], px[0, both], cv2.RANSAC, 2.0)
        if homography is None:
            continue
        out[t] = cv2.perspectiveTransform(px[t][None], homography)[0]
        homography_error[t] = np.linalg.norm(out[t] - px[0], axis=-1)
        epipolar_error[t] = homography_error[t]
        fundamental, f_inliers = cv2.findFundamentalMat(px[0, both], px[t, both], cv2.FM_RANSAC, 1.0, 0.999)
        if fundamental is not None and fundamental.shape == (3, 3):
            epipolar_error[t] = _sampson_distance(fundamental, px[0], px[t])
            inlier_ratio.append(f_inliers.sum() / max(h_inliers.sum(), 1))
    # parallax shows once the camera has moved: judge it on the later half of the frames
    parallax = bool(inlier_ratio) and np.median(inlier_ratio[len(inlier_ratio) // 2 :]) >= parallax_ratio
    return out, (epipolar_error if parallax else homography_error), parallax


def _sampson_distance(fundamental: np.ndarray, first: np.ndarray, later: np.ndarray) -> np.ndarray:
    """(N,) first-order distance of each correspondence from the epipolar constraint, in pixels."""
    x0 = np.concatenate([first, np.ones((len(first), 1))], axis=1)
    x1 = np.concatenate([later, np.ones((len(later), 1))], axis=1)
    line_in_later = x0 @ fundamental.T
    line_in_first = x1 @ fundamental
    numerator = np.sum(x1 * line_in_later, axis=1) ** 2
    denominator = (line_in_later[:, :2] ** 2).sum(axis=1) + (line_in_first[:, :2] ** 2).sum(axis=1)
    return np.sqrt(numerator / np.maximum(denominator, 1e-12))


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


def _border_fraction(cells: np.ndarray, g: int) -> float:
    on_border = (cells[:, 0] == 0) | (cells[:, 1] == 0) | (cells[:, 0] == g - 1) | (cells[:, 1] == g - 1)
    return float(on_border.mean())
