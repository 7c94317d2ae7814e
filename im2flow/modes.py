"""Which demonstration mode a flow follows, and whether K samples cover the modes a regressor averages.

A demonstration task with discrete choices (the sphere's detour left or right of its longest move, the
cloth corner it folds: ``Task.modes`` in the simulator) has one true flow per mode for a layout. A flow is
classified as the mode whose true flow its object path lies nearest to: the path is the mean of the
points a flow sees, frame by frame, so tracking noise on single points does not decide, and the frames
count by how much the modes' paths differ there (a detour is a few frames of a long flow whose start and
end every mode shares; unweighted, the shared frames' tracking noise would outvote it). A regressor
trained with an MSE loss answers near the modes' mean; ``mode_report`` says how far an answer is from the
nearest mode and from that mean, so "lands between them" is a measured statement.

Flows are (T, N, 3) as (x, y, visibility), normalised to the frame, at the same query points and frames
as the true flows they are compared with; distances are in pixels of a 256-pixel frame.
"""

from __future__ import annotations

import numpy as np

from im2flow2act.im2flow.metrics import FRAME_PX


def object_path(flow: np.ndarray) -> np.ndarray:
    """(T, N, 3) flow → (T, 2): the mean position of the visible points per frame (all points where none
    is visible, so a path always exists)."""
    flow = np.asarray(flow, np.float64)
    visible = flow[..., 2] > 0.5
    weights = np.where(visible.any(axis=1, keepdims=True), visible, True).astype(np.float64)
    return (flow[..., :2] * weights[..., None]).sum(axis=1) / weights.sum(axis=1, keepdims=True)


def mode_distances(
    flow: np.ndarray, true_flows: dict[str, np.ndarray], others: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """Per mode (and per flow of ``others``, e.g. the modes' mean), the distance (px) of ``flow``'s object
    path to that one's, each frame weighted by how far the modes' paths lie from their mean there (equal
    weights when the modes do not differ at all)."""
    if not true_flows:
        raise ValueError("mode distances need at least one mode's true flow")
    paths = {mode: object_path(f) for mode, f in true_flows.items()}
    centre = np.mean(list(paths.values()), axis=0)
    weights = np.mean([np.linalg.norm(p - centre, axis=-1) for p in paths.values()], axis=0)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    weights = weights / weights.sum()
    paths |= {name: object_path(f) for name, f in (others or {}).items()}
    here = object_path(flow)
    return {
        name: float((np.linalg.norm(here - path, axis=-1) * weights).sum() * FRAME_PX)
        for name, path in paths.items()
    }


def classify_mode(flow: np.ndarray, true_flows: dict[str, np.ndarray]) -> str:
    """The mode (a key of ``true_flows``, one true flow per mode of the same layout) nearest to ``flow``."""
    distances = mode_distances(flow, true_flows)
    return min(distances, key=distances.get)


def mean_flow(true_flows: dict[str, np.ndarray]) -> np.ndarray:
    """The modes' average flow (x, y averaged, visible where every mode sees the point): what an MSE
    regressor trained on equally many demonstrations of each mode tends to."""
    stack = np.stack([np.asarray(f, np.float64) for f in true_flows.values()])
    mean = stack.mean(axis=0)
    mean[..., 2] = (stack[..., 2] > 0.5).all(axis=0)
    return mean


def mode_report(samples: np.ndarray, true_flows: dict[str, np.ndarray]) -> dict:
    """For K samples (K, T, N, 3) of one layout: each sample's mode, which modes the K cover, and for the
    first sample its distance to the nearest mode's true flow and to the modes' mean flow (px)."""
    modes = [classify_mode(s, true_flows) for s in samples]
    first = mode_distances(samples[0], true_flows, {"mean": mean_flow(true_flows)})
    to_mean = first.pop("mean")
    return {
        "modes": modes,
        "covered": sorted(set(modes)),
        "covers_all": set(modes) == set(true_flows),
        "to_nearest_mode_px": min(first.values()),
        "to_mean_px": to_mean,
        "modes_apart_px": _spread(true_flows),
    }


def _spread(true_flows: dict[str, np.ndarray]) -> float:
    """The smallest distance between two modes' true flows (px, weighted as above): how separable the
    modes are in this layout."""
    pairs = [mode_distances(true_flows[a], true_flows)[b] for a in true_flows for b in true_flows if a < b]
    return min(pairs) if pairs else 0.0
