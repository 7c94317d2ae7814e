"""Policy training windows over real recorded play, and the normaliser."""

import numpy as np
import pytest
import torch

from im2flow2act.policies.data import PlayWindows, WindowConfig
from im2flow2act.policies.normalizer import Normalizer
from im2flow2act.policies.sim.scene import camera_from_attrs
from im2flow2act.preprocessing.dataset import DatasetError, FlowDataset, FlowDatasetWriter


def test_windows_cover_every_step_with_padding_at_the_ends(play_root):
    cfg = WindowConfig(obs_horizon=2, pred_horizon=16, num_points=64, plan_frames=8)
    data = PlayWindows(play_root, cfg)
    lengths = [len(ep.action) for ep in data.episodes]
    assert len(data) == sum(lengths)
    first = data[0]
    assert first["proprio"].shape == (2, 10) and first["action"].shape == (16, 10)
    assert torch.equal(first["proprio"][0], first["proprio"][1])  # before the start: the first step repeated
    last = data[lengths[0] - 1]
    assert torch.equal(last["action"][0], last["action"][-1])  # past the end: the last action held
    ep = data.episodes[0]
    np.testing.assert_allclose(data[3]["action"].numpy(), ep.action[3:19])
    assert first["plan"].shape == (8, 64, 3) and first["remaining"].shape == (8, 64, 3)
    assert first["current"].shape == (64, 3) and first["points_3d"].shape == (64, 3)
    # at the last step the remaining flow is the current position, repeated
    assert torch.allclose(last["remaining"][:, :, :2], last["current"][None, :, :2].expand(8, -1, -1))
    # at step 0 the remaining flow is the whole plan
    assert torch.allclose(first["remaining"], first["plan"], atol=1e-6)
    assert torch.allclose(first["initial"], first["plan"][0])


def test_points_are_moving_object_points_and_lift_to_3d(play_root):
    data = PlayWindows(play_root, WindowConfig(num_points=32))
    views = {v.name: v for v in FlowDataset(play_root)}
    moved = [ep for ep in data.episodes if views[ep.name].array("moving").any()]
    assert moved, "no play episode moved an object"
    for still in data.episodes:  # an episode where nothing moved offers all its (static) points
        if not views[still.name].array("moving").any():
            assert len(still.object_points) == still.tracks.shape[1]
    ep = moved[0]
    view = views[ep.name]
    moving = view.array("moving")
    assert moving[ep.object_points].all() and len(ep.object_points) > 0
    camera = camera_from_attrs(view.attrs, view.frame_size)
    xy, _ = camera.project(ep.points_3d[ep.object_points])
    np.testing.assert_allclose(xy, view.tracks[0, ep.object_points], atol=1.5 / 96)  # lifted points reproject
    assert (ep.points_3d[ep.object_points, 2] > -0.01).all()  # on or above the table top
    # where each plan ends, lifted onto the first frame's depth: reprojects to that pixel, on the scene
    end_xy, _ = camera.project(ep.end_3d[ep.object_points])
    np.testing.assert_allclose(end_xy, ep.plan[-1, ep.object_points, :2], atol=1.5 / 96)
    assert (ep.end_3d[ep.object_points, 2] > -0.01).all()
    assert not np.allclose(ep.end_3d[ep.object_points], ep.points_3d[ep.object_points])  # the object moved
    i = next(k for k, (e, _) in enumerate(data.index) if data.episodes[e] is ep) + 5
    a, b = data[i], data[i]
    assert torch.equal(a["current"], b["current"])  # deterministic for the same index and epoch
    data.set_epoch(1)
    assert not torch.equal(a["current"], data[i]["current"])  # fresh points next epoch


def test_normalizer_round_trip_and_constant_dimensions():
    values = torch.stack(
        [torch.linspace(-3, 5, 50), torch.full((50,), 0.04), torch.linspace(0, 1, 50)], dim=1
    )
    norm = Normalizer({"action": 3}).fit({"action": values})
    scaled = norm.normalize("action", values)
    assert scaled[:, 0].min() == -1 and scaled[:, 0].max() == 1 and scaled[:, 2].max() == 1
    assert torch.allclose(scaled[:, 1], torch.zeros(50))  # a constant is centred, not divided by zero
    assert torch.allclose(norm.unnormalize("action", scaled), values, atol=1e-5)
    restored = Normalizer({"action": 3})
    restored.load_state_dict(norm.state_dict())
    assert torch.allclose(restored.normalize("action", values), scaled)


def play_without(play_root, folder, missing: str):
    """A copy of the first recorded play episode, written by the project's writer, lacking ``missing``
    (an array, or a camera attribute). Returns (store, episode name)."""
    view = FlowDataset(play_root)[0]
    episode = view.load()
    (episode.attrs if missing.startswith("camera_") else episode.arrays).pop(missing)
    root = folder / f"without_{missing}.zarr"
    FlowDatasetWriter(root, kind="play").write(view.name, episode)
    return root, view.name


@pytest.mark.parametrize("missing", ["depth", "moving", "robot", "action", "proprio", "camera_intrinsics"])
def test_play_lacking_what_training_reads_is_refused_by_name(play_root, tmp_path, missing):
    """Before: no depth trained on zero 3-D points, no moving/robot mask was silently defaulted."""
    root, name = play_without(play_root, tmp_path, missing)
    with pytest.raises(DatasetError) as err:
        PlayWindows(root, WindowConfig(num_points=16, plan_frames=8))
    message = str(err.value)
    assert str(root) in message and repr(name) in message and missing in message, message
