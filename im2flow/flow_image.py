"""Object flow as a short video of G×G "flow images" (as in the Im2Flow2Act paper), and back to point tracks.

A G×G grid of query points in the object box is tracked; frame t of the flow video is a 3-channel G×G
image whose pixel (row i, column j) holds where grid point (i, j) is at time t and whether it is visible.
Rows follow image y and columns image x, so a flow image is laid out like the picture it came from.

Three encodings of the position channels, each mapped to about [-1, 1] for the diffusion model:
- ``absolute`` (the reference): x, y in [0, 1] → 2·x − 1.
- ``displacement``: (x_t − x_0) · ``displacement_scale``; static points are exactly 0, so small motions
  are not lost in the precision of a whole-frame coordinate.
- ``sqrt_displacement``: sign(d) · √|d| · ``displacement_scale`` per axis, d = x_t − x_0. A drawer's or a
  cloth's short pull is as large against the diffusion noise as a mug's long carry (√ lifts small moves),
  and decoding squares an error near 0, so a still point sampled a little off stays nearly still.
Visibility is 1 → +1 and 0 → −1. As in the reference, frame 0 (the query grid itself) is not part of the
flow video: T frames are taken at ``linspace(0, T_src − 1, T + 1)[1:]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from im2flow2act.preprocessing.tracks import resample_tracks, validate_tracks

ENCODINGS = ("absolute", "displacement", "sqrt_displacement")


@dataclass
class FlowImageConfig:
    grid_size: int = 32
    """G: the flow images are G × G (G² query points)."""
    num_frames: int = 32
    """T: future frames in the flow video."""
    encoding: str = "absolute"
    """absolute (the reference), displacement or sqrt_displacement."""
    displacement_scale: float = 2.0
    """displacement encodings: a move across the whole frame becomes ±2."""

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.displacement_scale <= 0:
            raise ValueError(f"displacement_scale must be positive, got {self.displacement_scale}")


def future_tracks(
    tracks: np.ndarray, visibility: np.ndarray, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, 2), (T, N): the tracks at the T future frames the flow video keeps (frame 0 dropped)."""
    out, vis, _ = resample_tracks(tracks, visibility, num_frames + 1)
    return out[1:], vis[1:]


def encode(
    tracks: np.ndarray, visibility: np.ndarray, queries: np.ndarray, config: FlowImageConfig
) -> np.ndarray:
    """Tracks of a G×G grid (any length) → float32 flow video (T, 3, G, G) in about [-1, 1]."""
    g = config.grid_size
    validate_tracks(tracks, visibility, queries)
    if tracks.shape[1] != g * g:
        raise ValueError(f"a {g}×{g} flow image needs {g * g} points, got {tracks.shape[1]}")
    future, vis = future_tracks(tracks, visibility, config.num_frames)
    origin = queries[:, 1:3].astype(np.float32)
    positions = _encode_positions(future, origin, config)
    channels = np.concatenate([positions, (vis[..., None] * 2.0 - 1.0)], axis=-1)  # (T, N, 3)
    flow = channels.reshape(config.num_frames, g, g, 3).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(flow, dtype=np.float32)  # the layout must not depend on the source


def decode(
    flow: np.ndarray,
    queries: np.ndarray,
    config: FlowImageConfig,
    clip: bool = True,
    visibility_threshold: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow video (..., T, 3, G, G) → tracks (..., T, G², 2) and visibility (..., T, G²).

    Tracks are clipped to the frame [0, 1] unless ``clip`` is off (a point may leave a zoomed picture). The
    visibility channel is encoded ±1; a point counts as visible where it is above ``visibility_threshold``
    (0, halfway, by default; a generated channel hedges between the two, so a higher cut hides more)."""
    lead = flow.shape[:-3]
    g = flow.shape[-1]
    channels = np.moveaxis(np.asarray(flow, np.float32), -3, -1).reshape(*lead, g * g, 3)
    origin = queries[:, 1:3].astype(np.float32)
    tracks = _decode_positions(channels[..., :2], origin, config)
    tracks = np.clip(tracks, 0.0, 1.0) if clip else tracks
    return tracks.astype(np.float32), channels[..., 2] > visibility_threshold


def _encode_positions(future: np.ndarray, origin: np.ndarray, config: FlowImageConfig) -> np.ndarray:
    if config.encoding == "absolute":
        return future * 2.0 - 1.0
    moved = future - origin[None]
    if config.encoding == "sqrt_displacement":
        return np.sign(moved) * np.sqrt(np.abs(moved)) * config.displacement_scale
    return moved * config.displacement_scale


def _decode_positions(positions: np.ndarray, origin: np.ndarray, config: FlowImageConfig) -> np.ndarray:
    if config.encoding == "absolute":
        return (positions + 1.0) / 2.0
    scaled = positions / config.displacement_scale
    if config.encoding == "sqrt_displacement":
        return origin + np.sign(scaled) * scaled**2
    return origin + scaled
