"""The flow metrics on scripted flows: the moving-part ADE sees what ADE hides on a part-moving object."""

import numpy as np

from im2flow2act.im2flow.metrics import ade, flow_metrics, moving_ade, moving_reach, still_drift


def drawer_like(front_px: float, cabinet_px: float, frames: int = 16) -> np.ndarray:
    """(T, N, 3): 10 front points slide ``front_px`` right, 30 cabinet points drift ``cabinet_px``."""
    start = np.stack([np.linspace(0.3, 0.6, 40), np.full(40, 0.5)], axis=-1)
    shift = np.where(np.arange(40) < 10, front_px, cabinet_px) / 256.0
    t = np.linspace(0.0, 1.0, frames)[:, None]
    positions = start[None].repeat(frames, axis=0)
    positions[..., 0] += t * shift[None]
    return np.concatenate([positions, np.ones((frames, 40, 1))], axis=-1).astype(np.float32)


def test_moving_part_ade_catches_a_flow_that_under_moves_the_moving_part():
    truth = drawer_like(front_px=50.0, cabinet_px=0.0)
    under_moved = drawer_like(front_px=20.0, cabinet_px=8.0)  # the shape im2flow gave the drawer
    still = drawer_like(front_px=0.0, cabinet_px=0.0)
    # ADE, averaged over a box that mostly stands still, ranks doing nothing above the under-moved flow
    assert ade(still, truth) < ade(under_moved, truth) < 10.0
    # on the moving part the errors are what they are: the front's missing 30 px and 50 px (mean over time)
    assert abs(moving_ade(under_moved, truth) - 15.0) < 0.5
    assert abs(moving_ade(still, truth) - 25.0) < 0.5
    assert moving_ade(under_moved, truth) < moving_ade(still, truth)  # the moving-part ADE ranks them right
    assert moving_ade(truth, truth) == 0.0
    assert np.isnan(moving_ade(truth, still))  # nothing moves in the truth: undefined, not zero
    hidden = truth.copy()
    hidden[:, :10, 2] = 0.0  # the front is never seen: nothing moving to score
    assert np.isnan(moving_ade(under_moved, hidden))
    metrics = flow_metrics(np.stack([under_moved, truth]), truth)
    assert metrics["moving_ade"] == moving_ade(under_moved, truth) and metrics["min_ade"] == 0.0


def test_reach_and_drift_name_the_drawer_shape_im2flow_gave():
    truth = drawer_like(front_px=50.0, cabinet_px=0.0)
    under_moved = drawer_like(front_px=20.0, cabinet_px=8.0)
    assert abs(moving_reach(truth, truth) - 1.0) < 1e-6
    assert abs(moving_reach(under_moved, truth) - 0.4) < 0.01  # the front goes 20 of its 50 px
    assert still_drift(truth, truth) == 0.0
    assert abs(still_drift(under_moved, truth) - 8.0) < 0.01  # the cabinet drifts 8 px
    assert np.isnan(still_drift(truth, drawer_like(front_px=50.0, cabinet_px=50.0)))  # nothing still
    assert np.isnan(moving_reach(truth, drawer_like(front_px=0.0, cabinet_px=0.0)))  # nothing moves
    metrics = flow_metrics(under_moved[None], truth)
    assert metrics["moving_reach"] == moving_reach(under_moved, truth)
    assert metrics["still_drift"] == still_drift(under_moved, truth)


def test_reach_is_end_to_end_so_a_jittery_short_flow_does_not_look_far_reaching():
    truth = drawer_like(front_px=50.0, cabinet_px=0.0)
    short = drawer_like(front_px=10.0, cabinet_px=0.0)
    short[1:-1:2, :10, 0] += 30.0 / 256  # the front jumps 30 px back and forth on the way
    assert abs(moving_reach(short, truth) - 0.2) < 0.01
