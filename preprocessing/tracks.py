"""The point-track contract every stage relies on (docs/design.md §4), in code.

* ``tracks``: float32 ``(T, N, 2)``, (x, y) normalised to [0, 1] by image width and height
  (x right, y down).
* ``visibility``: bool ``(T, N)``.
* ``queries``: float32 ``(N, 3)`` as (t, x, y); t is a frame index, (x, y) normalised.

Normalised coordinates use the pixel-centre convention: pixel ``i`` covers ``[i, i + 1)`` in
continuous coordinates and its centre is ``i + 0.5``, so ``x_norm = (x_px + 0.5) / width``.
With this convention a point keeps its place on the object when the frame is resized (it is
what ``cv2.resize`` assumes), which matters because we track at one resolution and train at another.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

Size = tuple[int, int]
"""Image size as (width, height), the order OpenCV and PIL use."""


class TrackShapeError(ValueError):
    """Tracks, visibility or queries do not follow the contract."""


def to_pixels(points: np.ndarray, size: Size) -> np.ndarray:
    """Normalised (x, y) in the last axis → pixel coordinates of an image of ``size`` (w, h)."""
    points = np.asarray(points, dtype=np.float32)
    _check_last_axis(points, 2, "points")
    scale = np.array(size, dtype=np.float32)
    return points * scale - 0.5


def pixel_indices(points: np.ndarray, size: Size) -> np.ndarray:
    """Normalised (x, y) → integer (column, row) of the pixel each point falls in, clipped to the image:
    where to read a depth, segmentation or label image at the points."""
    w, h = size
    return np.clip(np.floor(to_pixels(points, size) + 0.5).astype(int), 0, [w - 1, h - 1])


def to_normalized(points: np.ndarray, size: Size) -> np.ndarray:
    """Pixel (x, y) in the last axis of an image of ``size`` (w, h) → normalised coordinates."""
    points = np.asarray(points, dtype=np.float32)
    _check_last_axis(points, 2, "points")
    scale = np.array(size, dtype=np.float32)
    return (points + 0.5) / scale


def box_to_normalized(box_px: Sequence[float], size: Size) -> np.ndarray:
    """A box (x0, y0, x1, y1) given by its pixel edges → normalised xyxy, validated."""
    box = np.asarray(box_px, dtype=np.float32)
    if box.shape != (4,):
        raise ValueError(f"a box needs 4 numbers x0,y0,x1,y1, got {list(box_px)}")
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(
            f"box {list(map(float, box_px))} is empty or outside the {w}x{h} image "
            "(expected 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, in pixels)"
        )
    return box / np.array([w, h, w, h], dtype=np.float32)


def validate_tracks(tracks: np.ndarray, visibility: np.ndarray, queries: np.ndarray | None = None) -> None:
    """Raise :class:`TrackShapeError` naming the first thing that breaks the contract."""
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise TrackShapeError(f"tracks must be (T, N, 2), got shape {tracks.shape}")
    if tracks.dtype != np.float32:
        raise TrackShapeError(f"tracks must be float32, got {tracks.dtype}")
    if visibility.shape != tracks.shape[:2]:
        raise TrackShapeError(f"visibility must be (T, N) = {tracks.shape[:2]}, got {visibility.shape}")
    if visibility.dtype != np.bool_:
        raise TrackShapeError(f"visibility must be bool, got {visibility.dtype}")
    if not np.isfinite(tracks).all():
        raise TrackShapeError("tracks contain NaN or inf")
    if queries is not None:
        if queries.shape != (tracks.shape[1], 3):
            raise TrackShapeError(f"queries must be (N, 3) = ({tracks.shape[1]}, 3), got {queries.shape}")
        if queries.dtype != np.float32:
            raise TrackShapeError(f"queries must be float32, got {queries.dtype}")


def fill_lost_points(tracks: np.ndarray, visibility: np.ndarray, neighbours: int = 8) -> np.ndarray:
    """Tracks whose not-visible positions follow their visible neighbours instead of standing still.

    A tracker keeps a lost point where it last saw it, so a flow read from such tracks says the object
    stopped there (on the sim's drawer LK loses most points early, and the plan then under-reports the
    drawer's motion; see docs/results/policies.md). Here a point not visible at frame t moves from its
    last visible frame s like the ``neighbours`` points nearest to it at s that are visible at both s
    and t (inverse-distance weighted mean displacement), the way the simulator's own tracks keep moving
    behind an occluder.
    Visibility is unchanged: the filled positions are estimates, not observations. Points never seen
    before t, or without a neighbour seen at s and t, keep their positions.
    """
    validate_tracks(tracks, visibility)
    out = np.array(tracks, dtype=np.float32, copy=True)
    seen = np.where(visibility, np.arange(len(tracks))[:, None], -1)
    last_seen = np.maximum.accumulate(seen, axis=0)  # (T, N): last visible frame at or before t
    for t in range(1, len(tracks)):
        lost = np.flatnonzero(~visibility[t] & (last_seen[t] >= 0))
        for s in np.unique(last_seen[t, lost]):
            points = lost[last_seen[t, lost] == s]
            guides = np.flatnonzero(visibility[s] & visibility[t])
            if len(guides) == 0:
                continue
            distance = np.linalg.norm(tracks[s][points][:, None] - tracks[s][guides][None], axis=-1)
            nearest = np.argsort(distance, axis=1)[:, :neighbours]
            weight = 1.0 / (np.take_along_axis(distance, nearest, axis=1) + 1e-3)
            moved = tracks[t, guides] - tracks[s, guides]  # (G, 2)
            shift = (weight[..., None] * moved[nearest]).sum(axis=1) / weight.sum(axis=1, keepdims=True)
            out[t, points] = tracks[s, points] + shift
    return out


def resample_times(num_frames: int, num_samples: int) -> np.ndarray:
    """``num_samples`` times spread uniformly over ``[0, num_frames - 1]``, first and last included."""
    if num_frames < 1 or num_samples < 1:
        raise ValueError(f"need at least one frame and one sample, got {num_frames} and {num_samples}")
    return np.linspace(0.0, num_frames - 1, num_samples)


def resample_tracks(
    tracks: np.ndarray, visibility: np.ndarray, num_samples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample tracks uniformly in time to ``num_samples`` frames.

    Positions are interpolated linearly between the two neighbouring frames; a resampled point is
    visible only where both neighbours are (a blend with an occluded, unreliable position is not
    trusted). Works for up- and down-sampling. Returns ``(tracks, visibility, times)`` where
    ``times`` are the fractional source frame indices.
    """
    validate_tracks(tracks, visibility)
    times = resample_times(tracks.shape[0], num_samples)
    lo = np.floor(times).astype(int)
    hi = np.minimum(lo + 1, tracks.shape[0] - 1)
    frac = (times - lo).astype(np.float32)[:, None, None]
    out = (1.0 - frac) * tracks[lo] + frac * tracks[hi]
    exact = frac[:, 0, 0] == 0
    vis = np.where(exact[:, None], visibility[lo], visibility[lo] & visibility[hi])
    return out.astype(np.float32), vis, times


def moving_mask(
    tracks: np.ndarray, visibility: np.ndarray, threshold_px: float = 2.5, frame_px: int = 256
) -> np.ndarray:
    """(N,) points whose visible positions span more than ``threshold_px`` in a ``frame_px`` frame.

    The span is the larger side of the box around a point's visible positions (the reference's "largest
    distance moved", in pixels of a 256×256 frame); a point seen fewer than twice does not move.
    """
    return motion_span_px(tracks, visibility, frame_px) > threshold_px


def motion_span_px(tracks: np.ndarray, visibility: np.ndarray, frame_px: int = 256) -> np.ndarray:
    """(N,) the larger side of the box around each point's visible positions, in pixels of a ``frame_px``
    frame; 0 for a point seen fewer than twice."""
    validate_tracks(tracks, visibility)
    px = tracks * float(frame_px)
    big = np.where(visibility[..., None], px, np.nan)
    seen = visibility.sum(axis=0) > 1
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns for never-seen points
        span = np.nanmax(big, axis=0) - np.nanmin(big, axis=0)
    return np.where(seen, np.nan_to_num(span, nan=0.0).max(axis=-1), 0.0)


def grid_in_box(box: Sequence[float], grid_size: int = 32, t: float = 0.0) -> np.ndarray:
    """A ``grid_size × grid_size`` grid of queries at cell centres of a normalised xyxy box.

    Row-major with rows following image y, so ``queries.reshape(G, G, 3)`` is laid out like the image
    (the flow-image layout of the reference).
    """
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(f"box must be normalised xyxy inside [0, 1] with x0 < x1, y0 < y1, got {list(box)}")
    centres = (np.arange(grid_size, dtype=np.float32) + 0.5) / grid_size
    xs = x0 + centres * (x1 - x0)
    ys = y0 + centres * (y1 - y0)
    gx, gy = np.meshgrid(xs, ys)
    return _queries(gx.ravel(), gy.ravel(), t)


def grid_in_mask(mask: np.ndarray, num_points: int = 1024, t: float = 0.0) -> np.ndarray:
    """About ``num_points`` queries on a uniform pixel grid restricted to a boolean mask.

    The grid step is chosen so that at least ``num_points`` grid nodes fall in the mask, then the
    nodes are thinned evenly (in raster order) to exactly ``num_points``. A mask with fewer pixels
    than ``num_points`` gives one query per pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    area = int(mask.sum())
    if area == 0:
        raise ValueError("mask is empty: no pixel to sample queries from")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    h, w = mask.shape
    step = max(1.0, float(np.sqrt(area / num_points)))
    while True:
        ys = np.arange(step / 2, h, step)
        xs = np.arange(step / 2, w, step)
        gx, gy = np.meshgrid(xs, ys)
        inside = mask[gy.astype(int).ravel(), gx.astype(int).ravel()]
        if inside.sum() >= num_points or step <= 1.0:
            break
        step = max(1.0, step * 0.9)
    px = np.stack([gx.ravel()[inside], gy.ravel()[inside]], axis=-1)
    if len(px) > num_points:
        px = px[np.linspace(0, len(px) - 1, num_points).round().astype(int)]
    # grid nodes sit at continuous coordinates; pixel-index coords are one half less
    norm = to_normalized(px - 0.5, (w, h))
    return _queries(norm[:, 0], norm[:, 1], t)


def _queries(x: np.ndarray, y: np.ndarray, t: float) -> np.ndarray:
    return np.stack([np.full_like(x, t, dtype=np.float32), x, y], axis=-1).astype(np.float32)


def _check_last_axis(arr: np.ndarray, size: int, name: str) -> None:
    if arr.ndim == 0 or arr.shape[-1] != size:
        raise TrackShapeError(f"{name} must have {size} values in the last axis, got shape {arr.shape}")
