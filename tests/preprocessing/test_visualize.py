import numpy as np
import pytest

from im2flow2act.preprocessing.tracks import to_pixels
from im2flow2act.preprocessing.video import probe_video, read_video
from im2flow2act.preprocessing.visualize import (
    draw_tracks,
    draw_trajectories,
    point_colors,
    side_by_side,
    write_overlay,
)


def simple_flow(t=6, n=3):
    xs = np.linspace(0.2, 0.8, n)
    tracks = np.stack([np.stack([xs, np.full(n, 0.2 + 0.1 * s)], -1) for s in range(t)]).astype(np.float32)
    vis = np.ones((t, n), bool)
    vis[3, 1] = False
    return tracks, vis


def test_points_are_drawn_in_their_colour_where_they_are():
    frames = np.zeros((6, 100, 120, 3), np.uint8)
    tracks, vis = simple_flow()
    out = draw_tracks(frames, tracks, vis, trail=0, occluded="hide")
    colors = point_colors(tracks[0])
    assert len({tuple(c) for c in colors}) == 3  # distinct colours per point
    px = np.rint(to_pixels(tracks, (120, 100))).astype(int)
    for t in range(6):
        for i in range(3):
            if vis[t, i]:
                np.testing.assert_array_equal(out[t, px[t, i, 1], px[t, i, 0]], colors[i])
    x, y = px[3, 1]
    assert not out[3, y - 1 : y + 2, x - 1 : x + 2].any()  # hidden when occluded
    assert not frames.any()  # input untouched


def test_occluded_points_are_hollow_rings():
    tracks, vis = simple_flow()
    out = draw_tracks(np.zeros((6, 200, 240, 3), np.uint8), tracks, vis, trail=0, occluded="hollow", radius=4)
    x, y = np.rint(to_pixels(tracks[3, 1], (240, 200))).astype(int)
    assert not out[3, y, x].any()  # the centre stays empty
    assert out[3, y - 4 : y + 5, x - 4 : x + 5].any()  # the ring is drawn


def test_trails_draw_the_recent_path():
    tracks, vis = simple_flow()
    frames = np.zeros((6, 100, 120, 3), np.uint8)
    with_trail = draw_tracks(frames, tracks, vis, trail=4)
    without = draw_tracks(frames, tracks, vis, trail=0)
    assert (with_trail[5] > 0).sum() > (without[5] > 0).sum()


def test_overlay_mp4_of_a_real_clip(tmp_path, clip_path):
    frames, _, _ = read_video(clip_path, end=10, size=(160, 90))
    tracks, vis = simple_flow(t=10, n=5)
    path = write_overlay(tmp_path / "overlay.mp4", frames, tracks, vis, fps=10)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (10, 160, 90)
    back, _, _ = read_video(path)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() > 0.5  # something was drawn


def test_side_by_side_and_still_trajectories(clip_path):
    frames, _, _ = read_video(clip_path, end=1, size=(160, 90))
    a = simple_flow()
    b = (a[0] + 0.05, a[1])
    panels = side_by_side(frames[0], [a, b], labels=("generated", "true"))
    assert panels.shape == (6, 90, 160 * 2 + 4, 3)
    assert not np.array_equal(panels[-1, :, :160], panels[-1, :, 164:])
    still = draw_trajectories(frames[0], *a)
    assert still.shape == frames[0].shape and not np.array_equal(still, frames[0])
    with pytest.raises(ValueError, match="same"):
        side_by_side(frames[0], [a, (a[0][:3], a[1][:3])], labels=("x", "y"))


def test_long_lost_points_stop_being_drawn():
    tracks, vis = simple_flow(t=30, n=2)
    tracks[:] = tracks[:1]  # standing still
    vis[:] = True
    vis[5:, 1] = False  # point 1 is lost from frame 5 on
    out = draw_tracks(np.zeros((30, 100, 120, 3), np.uint8), tracks, vis, trail=0, radius=3, hollow_frames=10)
    x, y = np.rint(to_pixels(tracks[0, 1], (120, 100))).astype(int)
    near = (slice(y - 4, y + 5), slice(x - 4, x + 5))
    assert out[10][near].any()  # recently lost: a hollow ring
    assert not out[20][near].any()  # lost for 15 frames: gone
