"""The drift check on real footage: points that slid off the object become not visible, and ingest says so."""

import json

import numpy as np
import pytest
import zarr
from conftest import REPO, SHARED_VIDEOS

from im2flow2act.preprocessing.drift import DriftConfig, mark_drift, track_quality
from im2flow2act.preprocessing.ingest import IngestConfig, Ingestor, summary_table
from im2flow2act.preprocessing.sources import VideoItem
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import grid_in_box
from im2flow2act.preprocessing.video import read_video

LABELS = json.loads((REPO / "data" / "labels" / "human_clips.json").read_text())
CUPS = LABELS["clips"]["cups"]


@pytest.fixture(scope="module")
def cups_frames():
    """The first 48 frames of cups.mp4 at the ingest size: the held cup is lowered over the ball by 30."""
    frames, _, _ = read_video(SHARED_VIDEOS / "cups.mp4", end=48, size=(256, 256))
    return frames


def test_points_that_follow_their_surface_stay_visible(texture_video):
    frames, _ = texture_video
    queries = grid_in_box([0.2, 0.2, 0.7, 0.7], grid_size=12)
    tracks, visibility = TRACKERS.build("lk").track(frames, queries)
    assert visibility.all()
    assert mark_drift(frames, tracks, visibility, queries).all(), "a correct track was marked drifted"


def test_points_left_behind_by_the_moving_cup_become_not_visible(cups_frames):
    """A 'tracker' that never moves: the points stay where the cup was while the hand lowers it by
    ~110 px (labels). Once the cup has left, what lies under the points (shirt, hand, garden) no longer
    looks like the cup, and they must be marked not visible."""
    box = np.array(CUPS["box"], np.float32) / 256
    queries = grid_in_box(box, 8)
    stuck = np.repeat(queries[None, :, 1:], len(cups_frames), axis=0).astype(np.float32)
    claimed = np.ones(stuck.shape[:2], bool)
    visibility = mark_drift(cups_frames, stuck, claimed, queries)
    assert visibility[:3].mean() > 0.95, "the cup is still there in the first frames"
    assert visibility[40:].mean() < 0.3, f"{visibility[40:].mean():.0%} of left-behind points still visible"
    quality = track_quality(visibility, claimed)
    assert quality["kept_to_end"] < 0.3 and quality["drifted"] > 0.7


def test_points_that_stop_halfway_are_marked_from_where_they_slipped(cups_frames):
    """object-lk follows the cup down (labels: within 8 px at frames 15 and 30). Freeze its points at
    frame 15, as a tracker that lost the cup there would: the cup moves on ~80 px, the frozen points
    are left on the garden and the shirt, and must turn not visible soon after — not before."""
    box = np.array(CUPS["box"], np.float32) / 256
    queries = grid_in_box(box, 8)
    tracks, visibility = TRACKERS.build("object-lk").track(cups_frames, queries)
    assert visibility[:30].all()
    frozen = tracks.copy()
    frozen[15:] = tracks[15]
    checked = mark_drift(cups_frames, frozen, visibility, queries)
    assert checked[:15].mean() > 0.9, "points still on the cup were turned off"
    assert checked[40:].mean() < 0.3, f"{checked[40:].mean():.0%} of the frozen points still visible"


def test_drift_check_config_is_validated():
    with pytest.raises(ValueError, match="drift.patience"):
        DriftConfig(patience=0)
    with pytest.raises(ValueError, match="drift.warn_kept_to_end"):
        IngestConfig(drift=DriftConfig(warn_kept_to_end=2.0))


def test_ingest_reports_track_quality_and_warns(tmp_path):
    """The whole cups clip tracked by LK from the labelled box: almost nothing survives to frame 300,
    which the episode, the result and the summary table say."""
    cfg = IngestConfig(max_frames=120, overlay=False, tracker="lk")
    ingestor = Ingestor(cfg, tmp_path)
    w, h = 1280, 720
    x0, y0, x1, y1 = CUPS["box"]
    box_px = (x0 * w / 256, y0 * h / 256, x1 * w / 256, y1 * h / 256)
    result = ingestor.ingest(
        VideoItem(str(SHARED_VIDEOS / "cups.mp4"), object_prompt="red cup", box=box_px), False
    )
    assert result.written and result.kept_to_end < cfg.drift.warn_kept_to_end
    assert any("low track quality" in w for w in result.warnings)
    table = summary_table([result])
    assert "kept" in table.splitlines()[0] and "low track quality" in table
    episode = ingestor.writer.root / result.name
    attrs = zarr.open_group(str(episode), mode="r").attrs
    assert attrs["track_quality"]["kept_to_end"] == pytest.approx(result.kept_to_end)
