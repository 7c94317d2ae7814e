"""Drift marked, not hidden: a tracked point whose appearance no longer matches its query frame becomes
not visible, and every episode gets a track-quality figure.

A tracker's own visibility says whether it *could* follow a point from frame to frame; it does not say
whether the point is still on the thing it started on. Pyramidal LK on a textureless red cup happily
slides onto the table and keeps reporting a visible point. :func:`mark_drift` compares, at every frame
where a point is visible, the patch around its position with the patch around its query in the query
frame (both in CIE Lab at the stored frame size, ``patch_px`` wide in a 256-pixel frame):

* **colour**: the distance between the closest pair of pixel colours of the two central patches
  (``colour_px`` wide; Lab a and b count fully, lightness by ``lightness_weight``, so a shadow passing
  over does not count as drift); above ``max_colour`` the point has left its surface (cup → table,
  pillow → hand) — a point on the object's outline still matches by its object side;
* **structure**: where both patches are textured (lightness std ≥ ``texture_std``), their normalised
  cross-correlation; below ``min_ncc`` the point sits on something else of the same colour.

A single frame's verdict is noisy (blur, a specular highlight), so a point counts as drifted from the
first frame where the check fails in ``patience`` consecutive visible frames, and stays not visible for
the rest of the clip unless the check passes again for ``patience`` frames (the tracker re-found it).
Positions are kept; only visibility changes.

:func:`track_quality` turns the result into the figures ingest reports: ``kept_to_end`` (share of the
points still visible and consistent in the last frame), ``visible`` (share of point-frames) and
``drifted`` (share of points the check took away at some frame). A low ``kept_to_end`` is what warns a
user that the flow of an episode is mostly made up.

Thresholds are calibrated on the hand-labelled shared clips (``data/labels/human_clips.json``, see
``scripts/bench_human_video.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from im2flow2act.preprocessing.tracks import to_pixels, validate_tracks


@dataclass
class DriftConfig:
    enabled: bool = True
    """Run the appearance check after tracking (ingest); off keeps the tracker's visibility as it is."""
    patch_px: float = 9.0
    """Side of the compared patches in pixels of a 256-pixel frame (scaled to the stored frame)."""
    colour_px: float = 3.0
    """Side of the central patches whose colours are compared: the distance is that of the closest pair
    of pixels, one from each, so a point on an object's outline still matches by its object side while
    the background behind it changes."""
    max_colour: float = 18.0
    """Largest distance between mean Lab colours (a, b, and lightness × lightness_weight)."""
    lightness_weight: float = 0.35
    texture_std: float = 8.0
    """A patch whose lightness std (Lab L, 0–255) is below this is flat: judged by colour alone."""
    min_ncc: float = 0.3
    """Textured patches must correlate at least this well with the query frame's patch — checked only
    where the colour has also moved at least half of max_colour (a turning or bending surface changes
    its texture before its colour; a point that slid elsewhere changes both)."""
    patience: int = 3
    """Consecutive visible frames a verdict must hold before visibility changes."""
    warn_kept_to_end: float = 0.3
    """Ingest warns when fewer than this share of the points stay consistent to the last frame."""
    long_range_px: float = 0.0
    """Long-range forward–backward check: each point is tracked back from its last visible frame to
    its query frame with the same tracker; farther than this (px of a 256 frame) from its query and it
    failed. 0 turns the check off."""

    def __post_init__(self) -> None:
        if not self.patch_px >= 3:
            raise ValueError(f"drift.patch_px must be at least 3, got {self.patch_px!r}")
        if not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"drift.patience must be an integer of at least 1, got {self.patience!r}")
        if not 0 <= self.warn_kept_to_end <= 1:
            raise ValueError(f"drift.warn_kept_to_end must lie in [0, 1], got {self.warn_kept_to_end!r}")


def mark_drift(
    frames: np.ndarray,
    tracks: np.ndarray,
    visibility: np.ndarray,
    queries: np.ndarray,
    config: DriftConfig | None = None,
    tracker=None,
) -> np.ndarray:
    """The tracker's visibility with drifted points turned off (module docstring); tracks are unchanged.
    With ``tracker`` (the one that made the tracks), the long-range forward–backward check runs too."""
    cfg = config or DriftConfig()
    validate_tracks(tracks, visibility)
    if not cfg.enabled or len(queries) == 0:
        return visibility.copy()
    if tracker is not None and cfg.long_range_px > 0:
        visibility = visibility & ~long_range_failures(
            frames, tracks, visibility, queries, tracker, cfg.long_range_px
        )
    colour, ncc, texture = appearance_scores(frames, tracks, queries, cfg)
    textured_mismatch = (texture >= cfg.texture_std) & (ncc < cfg.min_ncc) & (colour > cfg.max_colour / 2)
    bad = (colour > cfg.max_colour) | textured_mismatch
    return visibility & ~_held_verdicts(bad, visibility, cfg.patience)


def appearance_scores(
    frames: np.ndarray, tracks: np.ndarray, queries: np.ndarray, cfg: DriftConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How the patch at each track position compares with its query's patch → ``(colour, ncc, texture)``,
    each (T, N): the weighted mean-Lab distance, the normalised cross-correlation of the lightness
    patches, and the smaller of the two patches' lightness std (NCC means something only where it is
    high). frames uint8 RGB (T, H, W, 3); tracks and queries normalised (docs/design.md §4)."""
    t_total, h, w = frames.shape[:3]
    side = max(3, int(round(cfg.patch_px * max(h, w) / 256.0)) | 1)
    half = side // 2
    offsets = np.arange(-half, half + 1)
    inner = max(1, int(round(cfg.colour_px * max(h, w) / 256.0)) | 1) // 2
    centre = slice(half - min(inner, half), half + min(inner, half) + 1)
    n = len(queries)
    weight = np.array([cfg.lightness_weight, 1.0, 1.0], np.float32)

    def patches(lab: np.ndarray, xy_px: np.ndarray) -> np.ndarray:
        cols = np.clip(np.rint(xy_px[:, 0]).astype(int), 0, w - 1)
        rows = np.clip(np.rint(xy_px[:, 1]).astype(int), 0, h - 1)
        rr = rows[:, None, None] + offsets[None, :, None]
        cc = cols[:, None, None] + offsets[None, None, :]
        return lab[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)]  # (N, side, side, 3)

    def lab_of(t: int) -> np.ndarray:
        return cv2.cvtColor(frames[t], cv2.COLOR_RGB2LAB).astype(np.float32)

    q_t = np.clip(np.rint(queries[:, 0]).astype(int), 0, t_total - 1)
    q_px = to_pixels(queries[:, 1:], (w, h))
    ref = np.zeros((n, side, side, 3), np.float32)
    for t in np.unique(q_t):
        ref[q_t == t] = patches(lab_of(int(t)), q_px[q_t == t])
    ref_centre = ref[:, centre, centre].reshape(n, -1, 3) * weight  # (N, K, 3)
    ref_l = ref[..., 0].reshape(n, -1)
    ref_l = ref_l - ref_l.mean(axis=1, keepdims=True)
    ref_norm = np.sqrt((ref_l**2).sum(axis=1))
    ref_std = ref_l.std(axis=1)
    colour = np.zeros((t_total, n), np.float32)
    ncc = np.zeros((t_total, n), np.float32)
    texture = np.zeros((t_total, n), np.float32)
    px = to_pixels(tracks, (w, h))
    for t in range(t_total):
        cur = patches(lab_of(t), px[t])
        cur_centre = cur[:, centre, centre].reshape(n, -1, 3) * weight
        pairs = np.linalg.norm(cur_centre[:, :, None] - ref_centre[:, None], axis=-1)  # (N, K, K)
        nearest = np.sort(pairs.min(axis=2), axis=1)  # each current pixel's best match, sorted
        colour[t] = nearest[:, min(nearest.shape[1] - 1, nearest.shape[1] // 3)]
        cur_l = cur[..., 0].reshape(n, -1)
        cur_l = cur_l - cur_l.mean(axis=1, keepdims=True)
        denom = np.sqrt((cur_l**2).sum(axis=1)) * ref_norm
        ncc[t] = np.where(denom > 1e-6, (cur_l * ref_l).sum(axis=1) / np.maximum(denom, 1e-6), 0.0)
        texture[t] = np.minimum(cur_l.std(axis=1), ref_std)
    return colour, ncc, texture


def long_range_failures(
    frames: np.ndarray,
    tracks: np.ndarray,
    visibility: np.ndarray,
    queries: np.ndarray,
    tracker,
    threshold_px: float = 8.0,
) -> np.ndarray:
    """(T, N) frames where a point's forward track has failed the long-range forward–backward check.

    Each point is tracked back (``tracker`` on the reversed clip) from its last visible frame. If it does
    not come back to within ``threshold_px`` of its query, the forward track went wrong somewhere: the
    forward and backward tracks agree after the slip (both on whatever it slid onto) and disagree before
    it, so the point counts as failed from the last frame where the two disagree on.
    """
    t_total, h, w = frames.shape[:3]
    seen = np.where(visibility, np.arange(t_total)[:, None], -1)
    last = seen.max(axis=0)
    q_t = np.rint(queries[:, 0]).astype(int)
    check = last > q_t
    failed = np.zeros((t_total, len(queries)), bool)
    if not check.any():
        return failed
    idx = np.flatnonzero(check)
    start = last[idx]
    back_queries = np.concatenate(
        [(t_total - 1 - start)[:, None].astype(np.float32), tracks[start, idx]], axis=1
    ).astype(np.float32)
    back, _ = tracker.track(np.ascontiguousarray(frames[::-1]), back_queries)
    back = back[::-1]  # (T, M, 2) in forward time
    scale = 256.0 / max(h, w)
    gap = np.linalg.norm((tracks[:, idx] - back) * np.array([w, h]), axis=-1) * scale  # (T, M) px of 256
    home = gap[q_t[idx], np.arange(len(idx))]
    for j in np.flatnonzero(home > threshold_px):
        i = idx[j]
        span = np.arange(q_t[i], start[j] + 1)
        apart = span[gap[span, j] > threshold_px]
        failed[apart.max() :, i] = True
    return failed


def _held_verdicts(bad: np.ndarray, visibility: np.ndarray, patience: int) -> np.ndarray:
    """(T, N) drifted: switched on after ``patience`` consecutive bad visible frames (from the first of
    them), off again after ``patience`` consecutive good ones; frames the tracker could not see keep
    the current state."""
    t_total, n = bad.shape
    drifted = np.zeros((t_total, n), bool)
    state = np.zeros(n, bool)
    run = np.zeros(n, int)  # consecutive visible frames disagreeing with the state
    since = np.zeros(n, int)  # where that run began
    for t in range(t_total):
        vis = visibility[t]
        disagree = vis & (bad[t] != state)
        agree = vis & ~disagree
        since = np.where(disagree & (run == 0), t, since)
        run = np.where(disagree, run + 1, np.where(agree, 0, run))
        flip = run >= patience
        for i in np.flatnonzero(flip):  # the verdict held: apply it from where the run began
            drifted[since[i] : t, i] = not state[i]
        state = np.where(flip, ~state, state)
        run = np.where(flip, 0, run)
        drifted[t] = state
    return drifted


def track_quality(visibility: np.ndarray, tracker_visibility: np.ndarray | None = None) -> dict[str, float]:
    """Figures that say how much of an episode's flow is observed, not made up.

    ``kept_to_end``: share of points visible in the last frame; ``visible``: share of point-frames
    visible; ``drifted``: share of points the drift check turned off at some frame the tracker still
    called visible (0 when ``tracker_visibility`` is not given).
    """
    if visibility.size == 0:
        return {"kept_to_end": 0.0, "visible": 0.0, "drifted": 0.0}
    drifted = 0.0
    if tracker_visibility is not None:
        drifted = float((tracker_visibility & ~visibility).any(axis=0).mean())
    return {
        "kept_to_end": float(visibility[-1].mean()),
        "visible": float(visibility.mean()),
        "drifted": drifted,
    }
