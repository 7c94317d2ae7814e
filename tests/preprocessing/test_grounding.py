import numpy as np
import pytest
from conftest import SHARED_VIDEOS, moving_texture
from tiny_models import save_grounding_dino, save_owlv2, save_sam

from im2flow2act.preprocessing.grounding import GROUNDERS, Box, ModelNotAvailable, NoObjectFound
from im2flow2act.preprocessing.segmentation import SEGMENTERS
from im2flow2act.preprocessing.video import read_video


def moving_square_video(num_frames=24, size=128, seed=3):
    """A textured square sliding right over a static textured background (camera still)."""
    background, _ = moving_texture(num_frames=1, size=size, seed=seed, step=(0, 0))
    patch, _ = moving_texture(num_frames=1, size=32, seed=seed + 1, step=(0, 0))
    frames = []
    for t in range(num_frames):
        frame = background[0].copy()
        x = 30 + 2 * t
        frame[50:82, x : x + 32] = patch[0] // 2 + 120
        frames.append(frame)
    return np.stack(frames)


def test_motion_grounder_boxes_the_moving_object():
    frames = moving_square_video()
    boxes = GROUNDERS.build("motion", {"grid_size": 32}).ground(frames, "square")
    x0, y0, x1, y1 = boxes[0].xyxy
    # the square starts at x 30..62, y 50..82 of 128: the box should cover it, not the whole frame
    assert x0 <= 32 / 128 + 0.03 and x1 >= 60 / 128 - 0.03 and y0 <= 52 / 128 + 0.03 and y1 >= 80 / 128 - 0.03
    assert boxes[0].area < 0.2


def test_motion_grounder_reports_a_static_video():
    frames = np.repeat(moving_square_video()[:1], 12, axis=0)
    with pytest.raises(NoObjectFound, match="nothing moved"):
        GROUNDERS.build("motion").ground(frames, "anything")


def test_manifest_grounder_needs_a_box():
    g = GROUNDERS.build("manifest")
    box = Box((0.1, 0.2, 0.3, 0.4))
    assert g.ground(np.zeros((1, 8, 8, 3), np.uint8), "", box) == [box]
    with pytest.raises(NoObjectFound, match="needs a box"):
        g.ground(np.zeros((1, 8, 8, 3), np.uint8), "", None)


@pytest.fixture(scope="module")
def real_frame(clip_path):
    frames, _, _ = read_video(clip_path, end=1)
    return frames[0]


@pytest.mark.parametrize(("name", "save"), [("grounding-dino", save_grounding_dino), ("owlv2", save_owlv2)])
def test_tiny_detectors_load_from_a_folder_and_run_on_a_real_frame(tmp_path, real_frame, name, save):
    folder = save(tmp_path / name)
    threshold = {
        "grounding-dino": {"box_threshold": 0.0, "text_threshold": 0.0},
        "owlv2": {"threshold": 0.0},
    }[name]
    grounder = GROUNDERS.build(name, {"model": str(folder), **threshold})
    boxes = grounder.detect(real_frame, "red cup")
    assert boxes, "threshold 0 keeps every query's box"
    for box in boxes:
        x0, y0, x1, y1 = box.xyxy
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
    # a threshold nothing passes: the prompt finds nothing, clearly
    strict = {"grounding-dino": {"box_threshold": 1.01}, "owlv2": {"threshold": 1.01}}[name]
    with pytest.raises(NoObjectFound, match="nothing matching 'red cup'"):
        GROUNDERS.build(name, {"model": str(folder), **strict}).ground(real_frame[None], "red cup")


def test_tiny_sam_masks_inside_the_image(tmp_path, real_frame):
    folder = save_sam(tmp_path / "sam")
    segmenter = SEGMENTERS.build("sam", {"model": str(folder)})
    mask = segmenter.segment(real_frame, Box((0.2, 0.0, 0.36, 0.3)))
    assert mask.shape == real_frame.shape[:2] and mask.dtype == np.bool_


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(ModelNotAvailable, match=r"does not exist.*hf download.*grounder_args.model"):
        GROUNDERS.build("grounding-dino", {"model": str(tmp_path / "nothing-here")})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotAvailable, match="cannot load owlv2 from the folder"):
        GROUNDERS.build("owlv2", {"model": str(empty)})


def test_motion_grounder_ignores_parallax_of_a_still_person_when_the_camera_walks():
    """backpack.mp4: a hand-held camera moves around a person who swings a bag. The person shifts
    against the stairs (parallax) as much as the bag moves; only the bag breaks the epipolar geometry."""
    frames, _, _ = read_video(SHARED_VIDEOS / "backpack.mp4", end=48, size=(256, 256))
    x0, y0, x1, y1 = GROUNDERS.build("motion").ground(frames, "backpack")[0].xyxy
    bag_centre = (0.68, 0.5)  # first frame, normalised; the person stands at x < 0.35
    assert x0 < bag_centre[0] < x1 and y0 < bag_centre[1] < y1
    assert x0 > 0.3, f"the box {x0:.2f}..{x1:.2f} reaches into the person"
