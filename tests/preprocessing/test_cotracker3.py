"""CoTracker3 in our code: the official checkpoints' layout, loading, building blocks and the trackers.

The checkpoints cannot be downloaded here, so models use random weights; the architecture is still the
official one (every key and shape is checked against the committed manifests of the real files).
Resolutions, frame counts and iterations are kept tiny so the file runs in well under a minute on 2 cores.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import moving_texture

from im2flow2act.core.config import ConfigError
from im2flow2act.preprocessing.pretrained import ModelNotAvailable
from im2flow2act.preprocessing.trackers import TRACKERS, OnlineTracker
from im2flow2act.preprocessing.trackers.cotracker3 import CoTracker3Config, CoTracker3OnlineConfig
from im2flow2act.preprocessing.trackers.cotracker3.model import (
    CORR_LEVELS,
    STRIDE,
    CoTracker3Offline,
    CoTracker3Online,
    track_in_windows,
)
from im2flow2act.preprocessing.trackers.cotracker3.sampling import (
    bilinear_sample,
    feature_pyramid,
    local_correlation,
    motion_encoding,
    support_features,
)
from im2flow2act.preprocessing.trackers.cotracker3.weights import load_weights

MANIFESTS = Path(__file__).resolve().parents[2] / "data" / "cotracker3"
RES = (32, 48)  # the smallest model resolution the 4-level pyramid allows
FAST = dict(random_weights=True, model_resolution=RES, device="cpu", iters=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy machine every parallel op waits for a
    descheduled thread (one CNN pass can take many times longer); one thread is both faster
    and steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def offline_model():
    torch.manual_seed(0)
    return CoTracker3Offline(RES).eval()


@pytest.fixture(scope="module")
def online_model():
    torch.manual_seed(0)
    return CoTracker3Online(RES).eval()


@pytest.fixture(scope="module")
def offline_tracker():
    return TRACKERS.build("cotracker3", FAST)


@pytest.fixture(scope="module")
def online_tracker():
    return TRACKERS.build("cotracker3-online", FAST)


def random_video(num_frames, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, num_frames, 3, *RES, generator=gen) * 255


# ----- the official checkpoints' layout and loading -------------------------------------------
@pytest.mark.parametrize("variant", ["offline", "online"])
def test_state_dict_matches_the_official_checkpoint_manifest(variant, offline_model, online_model):
    manifest = json.loads((MANIFESTS / f"scaled_{variant}_keys.json").read_text())
    model = offline_model if variant == "offline" else online_model
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest["keys"]
    assert len(ours) == manifest["num_keys"] == 188
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    assert [k for k, _ in model.named_buffers()] == manifest["buffers_in_state_dict"]


def test_checkpoint_round_trip_is_strict_and_exact(tmp_path, offline_tracker):
    frames, _ = moving_texture(num_frames=4, size=48)
    queries = np.array([[0, 0.3, 0.4], [2, 0.6, 0.5]], np.float32)
    state = offline_tracker.model.state_dict()
    bare, wrapped = tmp_path / "scaled_offline.pth", tmp_path / "wrapped.pth"
    torch.save(state, bare)
    torch.save({"model": state}, wrapped)
    expected = offline_tracker.track(frames, queries)

    reloaded = TRACKERS.build("cotracker3", {**FAST, "random_weights": False, "checkpoint": str(bare)})
    for key, value in reloaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    got = reloaded.track(frames, queries)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    # a folder holding the official file name works too, and so does the {"model": ...} wrapper
    assert TRACKERS.build("cotracker3", {**FAST, "checkpoint": str(tmp_path)}).model is not None
    fresh = CoTracker3Offline(RES)
    load_weights(fresh, str(wrapped), "offline")
    assert torch.equal(fresh.updateformer.virual_tracks, state["updateformer.virual_tracks"])


def test_the_wrong_variants_file_is_refused_by_name(tmp_path, online_model):
    path = tmp_path / "scaled_online.pth"
    torch.save(online_model.state_dict(), path)
    with pytest.raises(ValueError, match=r"time_emb.*looks like scaled_online\.pth"):
        TRACKERS.build("cotracker3", {**FAST, "checkpoint": str(path)})
    sd = {k: v for k, v in online_model.state_dict().items() if not k.startswith("corr_mlp")}
    torch.save(sd, path)
    with pytest.raises(ValueError, match="4 missing keys"):
        TRACKERS.build("cotracker3-online", {**FAST, "checkpoint": str(path)})


def test_missing_weights_say_what_to_download_and_where_to_point(tmp_path, monkeypatch):
    with pytest.raises(ModelNotAvailable) as err:
        TRACKERS.build("cotracker3", {"checkpoint": str(tmp_path / "nope.pth")})
    message = str(err.value)
    assert "nope.pth does not exist" in message
    assert "scaled_offline.pth" in message and "https://huggingface.co/facebook/cotracker3" in message
    assert "tracker_args.checkpoint=" in message

    with pytest.raises(ModelNotAvailable, match=r"no checkpoint given.*scaled_online\.pth.*random_weights"):
        TRACKERS.build("cotracker3-online")

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1: no retries
    with pytest.raises(ModelNotAvailable) as err:
        TRACKERS.build("cotracker3-online", {"checkpoint": "facebook/cotracker3"})
    message = str(err.value)
    assert "cannot get scaled_online.pth from the Hub repo 'facebook/cotracker3'" in message
    assert "resolve/main/scaled_online.pth" in message


# ----- building blocks: properties that hold for any weights -----------------------------------
def manual_bilinear(image, x, y):
    """Independent reference: bilinear interpolation with edge clamping, pixel centres at integers."""
    h, w = image.shape[-2:]
    x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
    x0, y0 = min(int(np.floor(x)), w - 2), min(int(np.floor(y)), h - 2)
    fx, fy = x - x0, y - y0
    top = image[..., y0, x0] * (1 - fx) + image[..., y0, x0 + 1] * fx
    bottom = image[..., y0 + 1, x0] * (1 - fx) + image[..., y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def test_bilinear_sampling_matches_grid_sample_and_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 5, 9, 13, generator=gen)
    points = torch.rand(2, 7, 3, 2, generator=gen) * torch.tensor([16.0, 12.0]) - 1.5  # some outside
    ours = bilinear_sample(maps, points)
    assert ours.shape == (2, 7, 3, 5)
    grid = points / torch.tensor([12.0, 8.0]) * 2 - 1
    reference = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)
    torch.testing.assert_close(ours, reference.permute(0, 2, 3, 1))
    for b, i, j in [(0, 0, 0), (1, 3, 2), (1, 6, 1)]:
        x, y = points[b, i, j].tolist()
        torch.testing.assert_close(ours[b, i, j], manual_bilinear(maps[b], x, y))
    # 5-D: (t, x, y) with integer t reads exactly that frame
    video = torch.randn(1, 5, 4, 9, 13, generator=gen)  # (B, C, T, H, W)
    t = torch.tensor([0.0, 3.0, 2.0])
    xy = torch.rand(1, 3, 2, generator=gen) * 8
    sampled = bilinear_sample(video, torch.cat([t[None, :, None], xy], dim=-1))
    for k in range(3):
        expected = bilinear_sample(video[:, :, int(t[k])], xy[:, k : k + 1])[0, 0]
        torch.testing.assert_close(sampled[0, k], expected)
    grid5 = torch.cat([xy / torch.tensor([12.0, 8.0]) * 2 - 1, t[None, :, None] / 3 * 2 - 1], dim=-1)
    ref5 = F.grid_sample(video, grid5[:, None, None], padding_mode="border", align_corners=True)
    torch.testing.assert_close(sampled, ref5[:, :, 0, 0].transpose(1, 2))


def test_support_features_read_each_query_frame():
    gen = torch.Generator().manual_seed(1)
    fmaps = torch.randn(1, 4, 6, 10, 12, generator=gen)
    frames = torch.tensor([[2, 0, 2, 3]])
    xy = torch.rand(1, 4, 2, generator=gen) * 9
    ours = support_features(fmaps, frames, xy, radius=3)
    assert ours.shape == (1, 4, 49, 6)
    offsets = torch.stack(torch.meshgrid(torch.arange(-3.0, 4), torch.arange(-3.0, 4), indexing="ij"), -1)
    points = xy[:, :, None] + offsets.reshape(-1, 2)  # x offset on the slow axis
    t = frames[..., None, None].float().expand(1, 4, 49, 1)
    reference = bilinear_sample(fmaps.transpose(1, 2), torch.cat([t, points], dim=-1))
    torch.testing.assert_close(ours, reference)


def normalized_features(shape, seed):
    f = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return f / f.norm(dim=2, keepdim=True)


def test_correlation_peaks_at_zero_offset_and_follows_a_shift():
    fmaps = normalized_features((1, 1, 32, 20, 24), seed=2)  # (B, T, C, H, W), unit vectors per cell
    query = torch.tensor([[[10.0, 9.0]]])  # (x, y) in cells, away from the borders
    support = support_features(fmaps, torch.zeros(1, 1, dtype=torch.long), query, radius=3)
    corr = local_correlation(fmaps, query[:, None], support, radius=3).reshape(49, 49)
    torch.testing.assert_close(corr.diagonal(), torch.ones(49))  # each cell matched with itself
    assert (corr.argmax(dim=0) == torch.arange(49)).all()  # every support cell peaks at zero offset
    assert int(corr[:, 24].argmax()) == 24  # the query's own feature: the centre of the 7x7 neighbourhood
    # content moved by (dx, dy) = (2, 1): the query's centre feature is now found at target offset (2, 1),
    # which sits at index (2 + 3) * 7 + (1 + 3) because the x offset is the slow axis
    moved = torch.roll(fmaps, shifts=(1, 2), dims=(3, 4))
    corr = local_correlation(moved, query[:, None], support, radius=3).reshape(49, 49)
    assert int(corr[:, 24].argmax()) == 5 * 7 + 4
    torch.testing.assert_close(corr[5 * 7 + 4, 24], torch.tensor(1.0))


def test_feature_pyramid_averages_two_by_two():
    fmaps = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(1, 2, 3, 8, 8)
    levels = feature_pyramid(fmaps, 4)
    assert [tuple(f.shape[-2:]) for f in levels] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    torch.testing.assert_close(levels[1][0, 1, 2, 0, 0], fmaps[0, 1, 2, :2, :2].mean())
    torch.testing.assert_close(levels[3][0, 0, 0, 0, 0], fmaps[0, 0, 0].mean())


def test_time_embedding_is_the_sin_cos_formula(offline_model, online_model):
    for model, length in ((offline_model, 60), (online_model, 16)):
        emb = model.time_emb.numpy()
        assert emb.shape == (1, length, 1110)
        omega = 1.0 / 10000 ** (np.arange(555) / 555.0)
        angles = np.arange(length)[:, None] * omega[None]
        np.testing.assert_allclose(emb[0], np.concatenate([np.sin(angles), np.cos(angles)], 1), atol=1e-6)
    assert offline_model.time_embedding(60) is offline_model.time_emb
    resampled = offline_model.time_embedding(30)  # linear, half-pixel centres: mean of pairs
    torch.testing.assert_close(resampled[0, 5], offline_model.time_emb[0, 10:12].mean(0))


def test_motion_encoding_layout():
    coords = torch.tensor([[0.0, 0.0], [3.0, -2.0], [4.0, 2.0]])[None, :, None]  # (B, T, N, 2)
    scale = torch.tensor([8.0, 4.0])
    enc = motion_encoding(coords, scale)
    assert enc.shape == (1, 3, 1, 84)
    v = torch.tensor([(3 - 4) / 8, (-2 - 2) / 4, (3 - 0) / 8, (-2 - 0) / 4])  # frame 1: forward, backward
    torch.testing.assert_close(enc[0, 1, 0, :4], v)
    for s in range(10):
        for k in range(4):
            torch.testing.assert_close(enc[0, 1, 0, 4 + 4 * s + k], torch.sin(v[k] * 2**s))
            cosine = enc[0, 1, 0, 44 + 4 * s + k]
            torch.testing.assert_close(cosine, torch.cos(v[k] * 2**s), atol=1e-5, rtol=0)
    assert (enc[0, 0, 0, 2:4] == 0).all() and (enc[0, 2, 0, 0:2] == 0).all()  # no past / no future


# ----- windowing ------------------------------------------------------------------------------
def single_window(model, video, queries, length, iters=1):
    """The model on one block of frames, the last frame repeated up to ``length``: no windowing code."""
    if video.shape[1] < length:
        video = torch.cat([video, video[:, -1:].expand(-1, length - video.shape[1], -1, -1, -1)], dim=1)
    pyramid = feature_pyramid(model.encode(video), CORR_LEVELS)
    xy = queries[..., 1:] / STRIDE
    support = model.query_support(pyramid, queries[..., 0].long(), xy)
    coords = xy[:, None].expand(1, length, -1, -1)
    zeros = torch.zeros(coords.shape[:3])
    coords, vis, conf = model.refine(pyramid, support, coords, zeros, zeros, iters)
    return coords * STRIDE, vis, conf


@torch.inference_mode()
def test_windows_equal_one_window_when_the_video_fits(online_model, offline_model):
    queries = torch.tensor([[[0, 10.0, 12.0], [5, 30.0, 20.0], [9, 40.0, 8.0]]])
    video = random_video(12)
    windowed = online_model(video, queries, iters=1)
    whole = single_window(online_model, video, queries, 16)
    for a, b in zip(windowed, whole, strict=True):
        assert a.shape[1] == 12
        torch.testing.assert_close(a[0], b[0, :12])
    # a longer video: frames before the second window starts come from the first window alone
    video = random_video(20, seed=1)
    windowed = online_model(video, queries, iters=1)
    assert windowed[0].shape == (1, 20, 3, 2)
    first = single_window(online_model, video[:, :16], queries, 16)
    torch.testing.assert_close(windowed[0][0, :8], first[0][0, :8])
    assert not torch.allclose(windowed[0][0, 8:16], first[0][0, 8:16])  # the second window refined them
    # the offline model: windows as long as the clip reproduce the joint pass exactly
    video = random_video(6, seed=2)
    joint = offline_model(video, queries[:, :2], iters=1)
    windowed = track_in_windows(offline_model, lambda a, b: video[:, a:b], 6, queries[:, :2], 6, iters=1)
    for a, b in zip(joint, windowed, strict=True):
        torch.testing.assert_close(a, b)


def test_online_steps_equal_tracking_the_frames_seen_so_far(online_tracker):
    frames, _ = moving_texture(num_frames=8, size=48)
    points = np.array([[0.3, 0.4], [0.55, 0.5], [0.7, 0.3]], np.float32)
    queries = np.concatenate([np.zeros((3, 1), np.float32), points], axis=1)
    assert isinstance(online_tracker, OnlineTracker)
    with pytest.raises(RuntimeError, match="reset"):
        TRACKERS.build("cotracker3-online", FAST).step(frames[0])

    def steps_and_tracks(times):
        online_tracker.reset(frames[0], points)
        steps = [online_tracker.step(f) for f in frames[1 : max(times) + 1]]
        for t in times:
            tracks, vis = online_tracker.track(frames[: t + 1], queries)
            np.testing.assert_allclose(steps[t - 1][0], tracks[-1], atol=1e-5)
            np.testing.assert_array_equal(steps[t - 1][1], vis[-1])
            assert steps[t - 1][0].dtype == np.float32 and steps[t - 1][1].dtype == np.bool_

    steps_and_tracks([2])  # inside the first window of 16
    # The buffering/commit logic does not depend on the window length, so check it through several
    # windows with windows of 4 frames (the time embedding is resampled): 16-frame ones cost too much here.
    online_tracker.model.window_len = 4
    try:
        steps_and_tracks([2, 3, 4, 6, 7])  # windows complete at frames 3, 5, 7
    finally:
        online_tracker.model.window_len = 16
    with pytest.raises(ValueError, match="first frame"):
        online_tracker.reset(frames[0], queries + np.array([1, 0, 0], np.float32))


# ----- the offline tracker end to end ---------------------------------------------------------
def test_offline_tracker_outputs_follow_the_track_contract(offline_tracker):
    frames, _ = moving_texture(num_frames=6, size=64)
    queries = np.array([[0, 0.3, 0.3], [3, 0.5, 0.6], [5, 0.8, 0.2], [0, 0.0, 1.0]], np.float32)
    tracks, vis = offline_tracker.track(frames, queries)
    assert tracks.shape == (6, 4, 2) and tracks.dtype == np.float32
    assert vis.shape == (6, 4) and vis.dtype == np.bool_
    assert np.isfinite(tracks).all()
    # untrained weights barely move points: tracks stay near their queries, inside the frame's scale
    assert np.abs(tracks - queries[None, :, 1:]).max() < 0.2
    # every track sits exactly on its query, visible, at its query frame
    np.testing.assert_array_equal(tracks[[0, 3, 5, 0], [0, 1, 2, 3]], queries[:, 1:])
    assert vis[[0, 3, 5, 0], [0, 1, 2, 3]].all()
    assert offline_tracker.track(frames, np.zeros((0, 3), np.float32))[0].shape == (6, 0, 2)


def test_backward_tracking_fills_frames_before_the_query(offline_tracker):
    frames, _ = moving_texture(num_frames=5, size=48)
    queries = np.array([[3, 0.4, 0.5], [0, 0.6, 0.4]], np.float32)
    forward = offline_tracker.track(frames, queries)
    offline_tracker.config = dataclasses.replace(offline_tracker.config, backward_tracking=True)
    try:
        both = offline_tracker.track(frames, queries)
    finally:
        offline_tracker.config = dataclasses.replace(offline_tracker.config, backward_tracking=False)
    assert both[0].shape == (5, 2, 2) and both[1].shape == (5, 2)
    np.testing.assert_array_equal(both[0][3:, 0], forward[0][3:, 0])  # from the query on: unchanged
    np.testing.assert_array_equal(both[0][:, 1], forward[0][:, 1])  # a frame-0 query: unchanged
    assert not np.allclose(both[0][:3, 0], forward[0][:3, 0])  # before it: the reversed pass


def test_long_clips_are_cut_into_windows(offline_tracker):
    frames, _ = moving_texture(num_frames=8, size=48)
    queries = np.array([[0, 0.4, 0.5], [6, 0.5, 0.5]], np.float32)
    joint = offline_tracker.track(frames, queries)
    offline_tracker.config = dataclasses.replace(offline_tracker.config, max_frames_per_window=4)
    try:
        windowed = offline_tracker.track(frames, queries)
    finally:
        offline_tracker.config = dataclasses.replace(offline_tracker.config, max_frames_per_window=60)
    assert windowed[0].shape == joint[0].shape and np.isfinite(windowed[0]).all()
    assert not np.allclose(windowed[0], joint[0])  # really windowed, not the joint pass


def test_options_are_checked():
    assert {"cotracker3", "cotracker3-online"} <= set(TRACKERS.names())
    assert TRACKERS.make_config("cotracker3") == CoTracker3Config()
    online = TRACKERS.make_config("cotracker3-online", {"model_resolution": [64, 96]})
    assert online.model_resolution == (64, 96) and online.visibility_threshold == 0.6
    assert online.visibility_uses_confidence and isinstance(online, CoTracker3OnlineConfig)
    offline = CoTracker3Config()
    assert offline.visibility_threshold == 0.9 and not offline.visibility_uses_confidence
    with pytest.raises(ConfigError, match="checkpoint"):
        TRACKERS.build("cotracker3", {"checkpiont": "x.pth"})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bfloat16 needs a CUDA device"):
            TRACKERS.build("cotracker3", {**FAST, "dtype": "bfloat16"})
    with pytest.raises(ValueError, match="multiples of 4"):
        TRACKERS.build("cotracker3", {**FAST, "model_resolution": [30, 48]})
