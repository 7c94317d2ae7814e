"""Flow metrics, in pixels of a 256-pixel frame on the points the true flow sees.

- ADE: mean distance over visible (t, point) pairs; FDE: the same at the last frame only.
- min-of-K ADE: the best of K samples — credits a model that covers several valid futures.
- visibility accuracy: how often the generated visibility bit agrees with the true one.
- moving-part ADE: ADE on the points whose true path spans more than ``MOVING_PX`` only. Where most of the
  box stands still (a drawer's cabinet, a cloth's still half), ADE rewards a flow that barely moves; this
  one does not.
"""

from __future__ import annotations

import numpy as np

from im2flow2act.preprocessing.tracks import motion_span_px

FRAME_PX = 256.0
MOVING_PX = 20.0
"""A point moves when its true visible path spans more than this (the reference's moving threshold)."""


def _errors(generated: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.linalg.norm(generated[..., :2] - true[..., :2], axis=-1) * FRAME_PX


def ade(generated: np.ndarray, true: np.ndarray) -> float:
    """generated, true (T, N, 3) as (x, y, visibility) → mean pixel error over the true visible points."""
    visible = true[..., 2] > 0.5
    if not visible.any():
        return float("nan")
    return float(_errors(generated, true)[visible].mean())


def moving_ade(generated: np.ndarray, true: np.ndarray) -> float:
    """ADE on the points the true flow moves more than ``MOVING_PX`` (NaN when none moves)."""
    visible = true[..., 2] > 0.5
    span = motion_span_px(true[..., :2].astype(np.float32), visible, int(FRAME_PX))
    moving = visible & (span > MOVING_PX)[None]
    if not moving.any():
        return float("nan")
    return float(_errors(generated, true)[moving].mean())


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
    }
