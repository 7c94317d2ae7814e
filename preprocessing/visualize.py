"""Pictures of tracks: overlays on video frames, and generated-vs-true flows side by side.

Each point keeps one colour for the whole video, chosen from where it starts (hue follows x, brightness
follows y), so neighbouring points have similar colours and a swap or a drift stands out. Visible points
are filled discs with a fading trail; occluded points are hollow rings (or hidden).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from im2flow2act.preprocessing.tracks import to_pixels, validate_tracks
from im2flow2act.preprocessing.video import write_video

Occluded = Literal["hollow", "hide"]


def point_colors(first_positions: np.ndarray) -> np.ndarray:
    """RGB uint8 colour per point from its (x, y) start within the points' extent: hue by x, value by y."""
    xy = np.asarray(first_positions, np.float32).reshape(-1, 2)
    lo, hi = xy.min(axis=0, initial=np.inf), xy.max(axis=0, initial=-np.inf)
    xy = (xy - lo) / np.maximum(hi - lo, 1e-6) if len(xy) else xy
    hsv = np.zeros((len(xy), 1, 3), np.uint8)
    hsv[:, 0, 0] = (xy[:, 0] * 150).astype(np.uint8)  # OpenCV hue is 0..179; stop before red wraps
    hsv[:, 0, 1] = 230
    hsv[:, 0, 2] = (255 - xy[:, 1] * 110).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[:, 0]


def draw_tracks(
    frames: np.ndarray,
    tracks: np.ndarray,
    visibility: np.ndarray,
    trail: int = 8,
    occluded: Occluded = "hollow",
    radius: int | None = None,
    colors: np.ndarray | None = None,
    hollow_frames: int = 15,
) -> np.ndarray:
    """Frames (T, H, W, 3) with each track drawn on its frame; returns new frames.

    An occluded point is drawn as a hollow ring for up to ``hollow_frames`` frames after it was last seen
    (where it went behind something); a point lost for longer is no longer drawn, so long-lost points do
    not pile up as clutter.

    ``frames`` may also be a single image (H, W, 3): the flow is then drawn over that image at every
    time step (how a generated flow is shown on its initial frame).
    """
    validate_tracks(tracks, visibility)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = np.broadcast_to(frames, (tracks.shape[0], *frames.shape))
    if frames.shape[0] != tracks.shape[0]:
        raise ValueError(f"{frames.shape[0]} frames for {tracks.shape[0]} track steps")
    h, w = frames.shape[1:3]
    px = to_pixels(tracks, (w, h))
    colors = point_colors(_first_visible(tracks, visibility)) if colors is None else colors
    radius = radius or max(1, round(min(h, w) / 160))
    out = np.empty(frames.shape, np.uint8)
    lost_for = np.zeros(tracks.shape[1], int)
    for t in range(tracks.shape[0]):
        lost_for = np.where(visibility[t], 0, lost_for + 1)
        canvas = frames[t].copy()
        _draw_trails(canvas, px, visibility, colors, t, trail, radius)
        recently = visibility[t] | (lost_for <= hollow_frames)
        _draw_points(canvas, px[t], visibility[t], colors, radius, occluded, recently)
        out[t] = canvas
    return out


def draw_trajectories(image: np.ndarray, tracks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """One image with every point's whole path drawn on it (a still summary of a flow)."""
    validate_tracks(tracks, visibility)
    h, w = image.shape[:2]
    px = to_pixels(tracks, (w, h))
    colors = point_colors(_first_visible(tracks, visibility))
    canvas = image.copy()
    radius = max(1, round(min(h, w) / 160))
    _draw_trails(canvas, px, visibility, colors, tracks.shape[0] - 1, tracks.shape[0], radius)
    _draw_points(canvas, px[-1], visibility[-1], colors, radius, "hollow", np.ones(len(visibility[-1]), bool))
    return canvas


def side_by_side(
    image: np.ndarray,
    flows: Sequence[tuple[np.ndarray, np.ndarray]],
    labels: Sequence[str] = ("generated", "true"),
    trail: int = 8,
) -> np.ndarray:
    """Several flows on the same initial image, as panels side by side over time → (T, H, k·W, 3).

    Points keep the same colours in every panel (taken from the first flow's start), so the same
    point can be compared across panels. Flows must have the same number of steps and points.
    """
    if len(flows) != len(labels):
        raise ValueError(f"{len(flows)} flows but {len(labels)} labels")
    shapes = {f[0].shape for f in flows}
    if len(shapes) != 1:
        raise ValueError(f"flows must have the same (T, N, 2) shape, got {sorted(shapes)}")
    colors = point_colors(_first_visible(*flows[0]))
    panels = []
    for (tracks, vis), label in zip(flows, labels, strict=True):
        video = draw_tracks(image, tracks, vis, trail=trail, colors=colors)
        for frame in video:
            _label(frame, label)
        panels.append(video)
    gap = np.full((*panels[0].shape[:2], 4, 3), 255, np.uint8)
    parts = []
    for i, panel in enumerate(panels):
        parts.extend([gap, panel] if i else [panel])
    return np.concatenate(parts, axis=2)


def write_overlay(
    path: str | Path,
    frames: np.ndarray,
    tracks: np.ndarray,
    visibility: np.ndarray,
    fps: float,
    trail: int = 8,
    occluded: Occluded = "hollow",
) -> Path:
    """Draw tracks on frames and write an mp4 or gif (by the file suffix)."""
    return write_video(path, draw_tracks(frames, tracks, visibility, trail=trail, occluded=occluded), fps)


def _first_visible(tracks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """Each point's position at its first visible step (step 0 when never visible)."""
    first = np.argmax(visibility, axis=0)
    return tracks[first, np.arange(tracks.shape[1])]


def _draw_trails(canvas, px, visibility, colors, t, trail, radius) -> None:
    thickness = max(1, radius // 2)
    for back in range(min(trail, t), 0, -1):
        a, b = t - back, t - back + 1
        both = visibility[a] & visibility[b]
        fade = 1.0 - back / (trail + 1)
        for i in np.flatnonzero(both):
            color = tuple(int(c * (0.35 + 0.65 * fade)) for c in colors[i])
            p, q = px[a, i], px[b, i]
            cv2.line(canvas, _pt(p), _pt(q), color, thickness, cv2.LINE_AA, shift=4)


def _draw_points(canvas, px_t, vis_t, colors, radius, occluded: Occluded, shown: np.ndarray) -> None:
    for i in np.flatnonzero(shown):
        color = tuple(int(c) for c in colors[i])
        if vis_t[i]:
            cv2.circle(canvas, _pt(px_t[i]), radius << 4, color, -1, cv2.LINE_AA, shift=4)
        elif occluded == "hollow":
            cv2.circle(canvas, _pt(px_t[i]), radius << 4, color, 1, cv2.LINE_AA, shift=4)


def _pt(p: np.ndarray) -> tuple[int, int]:
    """Sub-pixel point for OpenCV drawing with shift=4 (1/16 pixel precision)."""
    return (int(round(float(p[0]) * 16)), int(round(float(p[1]) * 16)))


def _label(frame: np.ndarray, text: str) -> None:
    scale = max(0.35, frame.shape[0] / 600)
    cv2.putText(
        frame, text, (6, int(22 * scale * 1.6)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA
    )
    cv2.putText(
        frame,
        text,
        (6, int(22 * scale * 1.6)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
