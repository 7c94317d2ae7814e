"""Flow metrics, in pixels of a 256-pixel frame on the points the true flow sees.

- ADE: mean distance over visible (t, point) pairs; FDE: the same at the last frame only.
- min-of-K ADE: the best of K samples — credits a model that covers several valid futures.
- visibility accuracy: how often the generated visibility bit agrees with the true one.
- moving-part ADE: ADE on the points whose true path spans more than ``MOVING_PX`` only. Where most of the
  box stands still (a drawer's cabinet, a cloth's still half), ADE rewards a flow that barely moves; this
  one does not.
- moving-part reach: how far the generated flow carries those points from its first to its last frame, as a
  share of how far they truly go (medians; 1 = as far, below 1 = under-moved). End to end, not the path's
  span: a jittery flow that ends short must not look far-reaching.
- still-part drift: the median path span the generated flow gives the points the truth keeps within
  ``STILL_PX`` — a cabinet that seems to move with its drawer tells a policy to pull the wrong part.
"""

from __future__ import annotations

import numpy as np

from im2flow2act.preprocessing.tracks import motion_span_px

FRAME_PX = 256.0
MOVING_PX = 20.0
"""A point moves when its true visible path spans more than this (the reference's moving threshold)."""
STILL_PX = 5.0
"""A point stands still when its true visible path spans less than this."""


def _errors(generated: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.linalg.norm(generated[..., :2] - true[..., :2], axis=-1) * FRAME_PX


def ade(generated: np.ndarray, true: np.ndarray) -> float:
    """generated, true (T, N, 3) as (x, y, visibility) → mean pixel error over the true visible points."""
    visible = true[..., 2] > 0.5
    if not visible.any():
        return float("nan")
    return float(_errors(generated, true)[visible].mean())


def _true_spans(true: np.ndarray) -> np.ndarray:
    """(N,) each point's true path span over its visible frames, px (0 when seen fewer than twice)."""
    return motion_span_px(true[..., :2].astype(np.float32), true[..., 2] > 0.5, int(FRAME_PX))


def moving_ade(generated: np.ndarray, true: np.ndarray) -> float:
    """ADE on the points the true flow moves more than ``MOVING_PX`` (NaN when none moves)."""
    moving = (true[..., 2] > 0.5) & (_true_spans(true) > MOVING_PX)[None]
    if not moving.any():
        return float("nan")
    return float(_errors(generated, true)[moving].mean())


def _first_to_last(flow: np.ndarray) -> np.ndarray:
    return np.linalg.norm(flow[-1, :, :2] - flow[0, :, :2], axis=-1) * FRAME_PX


def moving_reach(generated: np.ndarray, true: np.ndarray) -> float:
    """Median first-to-last displacement, generated / true, on the points whose true path spans more than
    ``MOVING_PX`` and that are seen at both ends (NaN: none)."""
    moving = (_true_spans(true) > MOVING_PX) & (true[0, :, 2] > 0.5) & (true[-1, :, 2] > 0.5)
    if not moving.any():
        return float("nan")
    return float(np.median(_first_to_last(generated)[moving]) / np.median(_first_to_last(true)[moving]))


def still_drift(generated: np.ndarray, true: np.ndarray) -> float:
    """Median generated path span (px) on the points seen still (true span under ``STILL_PX``; NaN: none)."""
    still = ((true[..., 2] > 0.5).sum(axis=0) > 1) & (_true_spans(true) < STILL_PX)
    if not still.any():
        return float("nan")
    every = np.ones(generated.shape[:2], bool)
    span = motion_span_px(generated[..., :2].astype(np.float32), every, int(FRAME_PX))
    return float(np.median(span[still]))


def fde(generated: np.ndarray, true: np.ndarray) -> float:
    visible = true[-1, :, 2] > 0.5
    if not visible.any():
        return float("nan")
    return float(_errors(generated[-1], true[-1])[visible].mean())


def visibility_accuracy(generated: np.ndarray, true: np.ndarray) -> float:
    return float(((generated[..., 2] > 0.5) == (true[..., 2] > 0.5)).mean())


def flow_metrics(samples: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """samples (K, T, N, 3) for one clip → ADE/FDE/visibility of the first sample and min-of-K ADE."""
    per_sample = [ade(s, true) for s in samples]
    return {
        "ade": per_sample[0],
        "fde": fde(samples[0], true),
        "min_ade": float(np.nanmin(per_sample)),
        "visibility_acc": visibility_accuracy(samples[0], true),
        "moving_ade": moving_ade(samples[0], true),
        "moving_reach": moving_reach(samples[0], true),
        "still_drift": still_drift(samples[0], true),
    }
