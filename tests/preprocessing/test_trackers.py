import numpy as np
import pytest
from conftest import moving_texture

from im2flow2act.preprocessing.trackers import TRACKERS, LKConfig, OnlineTracker
from im2flow2act.preprocessing.tracks import grid_in_box, to_pixels

SIZE = (256, 256)


def pixel_errors(tracks, queries, shifts):
    expected = to_pixels(queries[:, 1:], SIZE)[None] + shifts[:, None]
    return np.linalg.norm(to_pixels(tracks, SIZE) - expected, axis=-1)


# CoTracker3 needs its checkpoint to track anything (its tests build it with random weights instead)
NEED_WEIGHTS = {"cotracker3", "cotracker3-online"}


@pytest.mark.parametrize("name", sorted(set(TRACKERS.names()) - NEED_WEIGHTS))
def test_every_registered_tracker_follows_known_motion(name, texture_video):
    frames, shifts = texture_video
    queries = grid_in_box([0.25, 0.25, 0.6, 0.6], grid_size=12)
    tracks, vis = TRACKERS.build(name).track(frames, queries)
    assert tracks.shape == (len(frames), len(queries), 2) and tracks.dtype == np.float32
    assert vis.shape == (len(frames), len(queries)) and vis.dtype == np.bool_
    err = pixel_errors(tracks, queries, shifts)
    assert vis.mean() > 0.95
    assert err[vis].mean() < 0.5, f"{name}: mean error {err[vis].mean():.3f} px"


def test_lk_is_sub_pixel_accurate_on_a_moving_texture(texture_video):
    frames, shifts = texture_video
    queries = grid_in_box([0.2, 0.2, 0.7, 0.7], grid_size=16)
    tracks, vis = TRACKERS.build("lk").track(frames, queries)
    err = pixel_errors(tracks, queries, shifts)
    assert vis.all()
    assert err.max() < 0.5 and err.mean() < 0.1


def test_points_leaving_the_frame_are_not_visible():
    frames, shifts = moving_texture(num_frames=30, step=(6.0, 0.0))  # content slides right, 6 px/frame
    queries = np.array([[0, 0.9, 0.5], [0, 0.3, 0.5]], np.float32)  # x=230 px leaves after ~4 frames
    tracks, vis = TRACKERS.build("lk").track(frames, queries)
    assert vis[:3, 0].all() and not vis[8:, 0].any()
    assert vis[:, 1].all()
    assert (tracks >= 0).all() and (tracks <= 1).all()


def test_occluded_point_is_hidden_then_found_again(texture_video):
    frames, shifts = texture_video
    frames = frames.copy()
    queries = grid_in_box([0.4, 0.4, 0.5, 0.5], grid_size=2)
    frames[10:13, 90:150, 90:150] = 128  # a flat grey occluder over the points for three frames
    tracks, vis = TRACKERS.build("lk").track(frames, queries)
    assert not vis[10:13].any()
    assert vis[14:].all()
    err = pixel_errors(tracks, queries, shifts)
    assert err[14:].max() < 0.5


def test_online_steps_match_offline_tracking(texture_video):
    frames, _ = texture_video
    queries = grid_in_box([0.3, 0.3, 0.6, 0.6], grid_size=6)
    tracker = TRACKERS.build("lk")
    assert isinstance(tracker, OnlineTracker)
    offline, offline_vis = tracker.track(frames, queries)
    tracker.reset(frames[0], queries)
    online = [tracker.step(f) for f in frames[1:]]
    np.testing.assert_allclose(np.stack([p for p, _ in online]), offline[1:], atol=1e-6)
    np.testing.assert_array_equal(np.stack([v for _, v in online]), offline_vis[1:])
    with pytest.raises(RuntimeError, match="reset"):
        TRACKERS.build("lk").step(frames[0])


def test_queries_after_the_first_frame_are_tracked_both_ways(texture_video):
    frames, shifts = texture_video
    base = grid_in_box([0.3, 0.3, 0.5, 0.5], grid_size=3)
    t_q = 10
    moved = base.copy()
    moved[:, 0] = t_q
    moved[:, 1:] = (to_pixels(base[:, 1:], SIZE) + shifts[t_q] + 0.5) / np.array(SIZE)  # same content at t=10
    tracks, vis = TRACKERS.build("lk").track(frames, moved)
    err = pixel_errors(tracks, base, shifts)
    assert vis.all() and err.max() < 0.5


def test_bad_inputs_and_options_fail_clearly(texture_video):
    frames, _ = texture_video
    tracker = TRACKERS.build("lk", {"win_size": 15})
    assert tracker.config == LKConfig(win_size=15)
    with pytest.raises(ValueError, match="query times"):
        tracker.track(frames, np.array([[99, 0.5, 0.5]], np.float32))
    with pytest.raises(ValueError, match="uint8"):
        tracker.track(frames.astype(np.float32), np.zeros((1, 3), np.float32))
