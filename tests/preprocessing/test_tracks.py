import numpy as np
import pytest

from im2flow2act.preprocessing.tracks import (
    TrackShapeError,
    box_to_normalized,
    fill_lost_points,
    grid_in_box,
    grid_in_mask,
    moving_mask,
    pixel_indices,
    resample_tracks,
    to_normalized,
    to_pixels,
    validate_tracks,
)


def test_pixel_round_trip_and_pixel_centre_convention():
    px = np.array([[0.0, 0.0], [255.0, 127.0], [12.25, 3.5]], np.float32)
    norm = to_normalized(px, (256, 128))
    np.testing.assert_allclose(norm[0], [0.5 / 256, 0.5 / 128])
    np.testing.assert_allclose(norm[1], [255.5 / 256, 127.5 / 128])
    np.testing.assert_allclose(to_pixels(norm, (256, 128)), px, atol=1e-4)
    # the same normalised point lands on the same content after a 2x resize (centre of pixel 0 → 0.5)
    np.testing.assert_allclose(to_pixels(norm[:1], (512, 256)), [[0.5, 0.5]], atol=1e-5)


def test_pixel_indices_name_the_pixel_a_point_falls_in_and_stay_inside():
    points = np.array([[0.0, 0.0], [0.999, 0.5], [1.0, 1.0], [-0.2, 1.3], [12.5 / 256, 3.99 / 128]])
    np.testing.assert_array_equal(
        pixel_indices(points, (256, 128)), [[0, 0], [255, 64], [255, 127], [0, 127], [12, 3]]
    )


def test_box_to_normalized_checks_the_box():
    np.testing.assert_allclose(box_to_normalized((64, 0, 128, 90), (256, 180)), [0.25, 0, 0.5, 0.5])
    with pytest.raises(ValueError, match="outside the 256x180 image"):
        box_to_normalized((10, 10, 300, 20), (256, 180))
    with pytest.raises(ValueError, match="4 numbers"):
        box_to_normalized((1, 2, 3), (256, 180))


def test_grid_in_box_is_image_laid_out_and_inside():
    q = grid_in_box([0.25, 0.5, 0.75, 1.0], grid_size=4, t=2)
    assert q.shape == (16, 3) and q.dtype == np.float32
    assert np.all(q[:, 0] == 2)
    grid = q.reshape(4, 4, 3)
    assert np.all(np.diff(grid[:, :, 1], axis=1) > 0)  # x grows along a row
    assert np.all(np.diff(grid[:, :, 2], axis=0) > 0)  # y grows down the rows
    np.testing.assert_allclose(grid[0, 0, 1:], [0.25 + 0.5 / 8, 0.5 + 0.5 / 8])
    assert q[:, 1].min() > 0.25 and q[:, 1].max() < 0.75 and q[:, 2].max() < 1.0


def test_grid_in_mask_samples_exactly_n_points_inside_the_mask():
    mask = np.zeros((120, 160), bool)
    yy, xx = np.mgrid[:120, :160]
    mask[(xx - 60) ** 2 + (yy - 70) ** 2 < 35**2] = True  # a disc
    q = grid_in_mask(mask, num_points=200)
    assert q.shape == (200, 3)
    px = np.floor(to_pixels(q[:, 1:], (160, 120)) + 0.5).astype(int)
    assert mask[px[:, 1], px[:, 0]].all()
    # spread over the disc, not bunched: the samples' extent covers most of the disc
    assert np.ptp(px[:, 0]) > 50 and np.ptp(px[:, 1]) > 50
    tiny = np.zeros((10, 10), bool)
    tiny[2, 3] = tiny[5, 5] = True
    assert len(grid_in_mask(tiny, num_points=50)) == 2
    with pytest.raises(ValueError, match="empty"):
        grid_in_mask(np.zeros((4, 4), bool))


def test_resample_interpolates_linear_motion_and_is_strict_about_visibility():
    t = np.arange(10, dtype=np.float32)
    tracks = np.stack([np.stack([t / 10, t / 20], -1)] * 3, axis=1).astype(np.float32)  # (10, 3, 2)
    vis = np.ones((10, 3), bool)
    vis[4, 1] = False
    out, out_vis, times = resample_tracks(tracks, vis, 19)  # every half step
    assert out.shape == (19, 3, 2) and out_vis.shape == (19, 3)
    np.testing.assert_allclose(times, np.arange(19) / 2)
    np.testing.assert_allclose(out[:, 0, 0], times / 10, atol=1e-6)
    assert not out_vis[7, 1] and not out_vis[8, 1] and not out_vis[9, 1]  # 3.5, 4, 4.5 touch frame 4
    assert out_vis[6, 1] and out_vis[10, 1]
    down, down_vis, _ = resample_tracks(tracks, vis, 4)
    np.testing.assert_allclose(down[:, 0, 0], [0, 0.3, 0.6, 0.9], atol=1e-6)
    assert down_vis.all()


def test_validate_tracks_names_the_problem():
    tracks = np.zeros((5, 4, 2), np.float32)
    vis = np.ones((5, 4), bool)
    validate_tracks(tracks, vis, np.zeros((4, 3), np.float32))
    with pytest.raises(TrackShapeError, match="float32"):
        validate_tracks(tracks.astype(np.float64), vis)
    with pytest.raises(TrackShapeError, match="visibility must be"):
        validate_tracks(tracks, vis[:, :3])
    with pytest.raises(TrackShapeError, match="queries must be"):
        validate_tracks(tracks, vis, np.zeros((3, 3), np.float32))
    bad = tracks.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(TrackShapeError, match="NaN"):
        validate_tracks(bad, vis)


def test_moving_mask_uses_visible_positions_in_256_pixels():
    t = 10
    tracks = np.full((t, 3, 2), 0.5, np.float32)
    tracks[:, 0, 0] = np.linspace(0.5, 0.52, t)  # 5.1 px in a 256 frame: moving
    tracks[:, 1, 0] = np.linspace(0.5, 0.505, t)  # 1.3 px: still
    tracks[5, 2, 0] = 0.9  # a jump, but only while not visible: still
    vis = np.ones((t, 3), bool)
    vis[5, 2] = False
    np.testing.assert_array_equal(moving_mask(tracks, vis), [True, False, False])
    np.testing.assert_array_equal(moving_mask(tracks, vis, threshold_px=1.0), [True, True, False])


def test_lost_points_follow_their_visible_neighbours_and_stay_not_visible():
    t = np.arange(6, dtype=np.float32)
    # three points moving right by 0.01 per frame, a fourth far away standing still
    tracks = np.zeros((6, 4, 2), np.float32)
    tracks[:, :3, 0] = 0.2 + 0.01 * t[:, None] + np.array([0.0, 0.02, 0.04])
    tracks[:, :3, 1] = 0.5
    tracks[:, 3] = 0.9
    vis = np.ones((6, 4), bool)
    vis[3:, 1] = False  # lost from frame 3: a tracker leaves it at its frame-2 position
    tracks[3:, 1] = tracks[2, 1]
    filled = fill_lost_points(tracks, vis, neighbours=2)
    expected_x = 0.2 + 0.02 + 0.01 * t[3:]
    np.testing.assert_allclose(filled[3:, 1, 0], expected_x, atol=1e-5)  # it keeps moving with them
    np.testing.assert_array_equal(filled[:, [0, 2, 3]], tracks[:, [0, 2, 3]])  # the seen ones are kept
    np.testing.assert_array_equal(filled[:3], tracks[:3])
    # causal: a frame is filled from the past only, so filling a prefix gives the same frames
    np.testing.assert_allclose(fill_lost_points(tracks[:4], vis[:4], neighbours=2), filled[:4], atol=1e-6)


def test_points_without_a_seen_neighbour_keep_their_positions():
    tracks = np.random.default_rng(0).random((4, 3, 2)).astype(np.float32)
    vis = np.ones((4, 3), bool)
    vis[2:, :] = False  # nobody seen at frames 2-3: nothing to follow
    vis[:, 2] = False  # never seen
    np.testing.assert_array_equal(fill_lost_points(tracks, vis), tracks)
