"""The hand-object grounder on real clips: palms found by the MediaPipe model run with OpenCV, and the box
on the object the hand moves — not the hand, not the person."""

import json

import numpy as np
import pytest
from conftest import REPO, SHARED_VIDEOS
from test_grounding import moving_square_video

from im2flow2act.preprocessing.grounding import GROUNDERS, ModelNotAvailable
from im2flow2act.preprocessing.grounding.hands import PalmDetector, find_palm_model
from im2flow2act.preprocessing.video import read_video

LABELS = json.loads((REPO / "data" / "labels" / "human_clips.json").read_text())["clips"]

try:
    PALM = find_palm_model()
except ModelNotAvailable:  # scripts/setup.sh installs it
    PALM = None
needs_palm_model = pytest.mark.skipif(
    PALM is None, reason="palm model missing (pip install --no-deps mediapipe==0.10.14)"
)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def clip(name, frames=48):
    video, _, _ = read_video(SHARED_VIDEOS / LABELS[name]["video"], end=frames, size=(256, 256))
    return video


@needs_palm_model
def test_palm_detector_finds_the_hand_holding_the_backpack():
    frame = clip("backpack", 1)[0]
    palms = PalmDetector(PALM).detect(frame)
    assert palms, "no palm found"
    # the right hand holds the bag's handle at about (172, 60) of 256 (labels: the handle at (172, 74))
    assert any(p.xyxy[0] * 256 < 175 < p.xyxy[2] * 256 + 8 and p.xyxy[1] * 256 < 75 for p in palms)


@needs_palm_model
@pytest.mark.parametrize("name", ["cups", "backpack"])
def test_hand_object_grounder_boxes_the_carried_object_not_the_hand(name):
    """cups: still camera, the hand lowers a cup (motion alone boxes hand and cup together); backpack: a
    walking camera, the hand swings the bag beside the person."""
    label = LABELS[name]
    box = GROUNDERS.build("hand-object").ground(clip(name), label["prompt"])[0]
    found = np.array(box.xyxy) * 256
    assert box.label == "moved by a hand"
    assert iou(found, label["box"]) >= 0.5, f"{name}: box {found.round()} vs labelled {label['box']}"


@needs_palm_model
def test_hand_object_grounder_without_hands_answers_like_motion():
    frames = moving_square_video()
    boxes = GROUNDERS.build("hand-object").ground(frames, "square")
    assert boxes[0].label == "moving (no hand)" and boxes[0].area < 0.2


def test_missing_palm_model_says_how_to_get_it(tmp_path):
    with pytest.raises(
        ModelNotAvailable, match=r"no palm_detection_full.tflite in .*pip install --no-deps mediapipe"
    ):
        GROUNDERS.build("hand-object", {"models": str(tmp_path)})


def test_auto_grounder_uses_a_given_box_without_building_a_model():
    from im2flow2act.preprocessing.grounding import Box

    grounder = GROUNDERS.build("auto")
    given = Box((0.1, 0.2, 0.3, 0.4))
    assert grounder.ground(clip("cups", 2), "red cup", given) == [given]
    assert grounder._grounder is None and grounder.name == "manifest"


def test_auto_grounder_without_the_palm_model_falls_back_to_motion(tmp_path):
    grounder = GROUNDERS.build("auto", {"fallback_args": {"hand-object": {"models": str(tmp_path)}}})
    with pytest.warns(UserWarning, match="uses motion"):
        boxes = grounder.ground(moving_square_video(), "square")
    assert grounder.name == "motion" and boxes[0].area < 0.2


@needs_palm_model
def test_ingest_without_a_box_grounds_the_carried_cup_by_default(tmp_path):
    """The default ingest config on a real clip with no box: hand-object finds the cup, object-lk tracks."""
    from im2flow2act.preprocessing.dataset import FlowDataset
    from im2flow2act.preprocessing.ingest import IngestConfig, ingest_batch
    from im2flow2act.preprocessing.sources import VideoItem

    config = IngestConfig(grid_size=6, max_frames=48, overlay=False)
    assert (config.grounder, config.tracker) == ("auto", "object-lk")
    item = VideoItem(video=str(SHARED_VIDEOS / "cups.mp4"), task="cover the ball", object_prompt="red cup")
    [result] = ingest_batch([item], config, tmp_path, progress=False)
    assert result.status == "written", result
    view = FlowDataset(tmp_path / "dataset.zarr")[result.name]
    assert view.attrs["grounder"] == "hand-object" and view.attrs["tracker"] == "object-lk"
    box = np.array(view.attrs["bbox"]) * 256
    assert iou(box, LABELS["cups"]["box"]) >= 0.5, box.round()


@needs_palm_model
def test_hand_object_box_fits_the_cup_not_the_fingers_around_it():
    """The moving group's grid cells take in the fingers and the background they drag along (the box
    reaches x = 32 of 256; the cup starts at x = 51); GrabCut on the first frame trims the box to the cup,
    and switching it off gives the cells' box back."""
    label = LABELS["cups"]
    frames = clip("cups")
    grown = np.array(GROUNDERS.build("hand-object").ground(frames, "red cup")[0].xyxy) * 256
    cells = np.array(GROUNDERS.build("hand-object", {"grow": False}).ground(frames, "red cup")[0].xyxy) * 256
    assert iou(grown, label["box"]) >= 0.75 > iou(cells, label["box"]), (grown.round(), cells.round())
    assert grown[0] >= label["box"][0] - 6, f"the fingers left of the cup are still boxed: {grown.round()}"
