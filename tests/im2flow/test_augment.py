"""im2flow augmentation: image, query grid and flow move together, on real clips from sim demonstrations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_generator import tiny_train_config
from tiny_configs import G, T

from im2flow2act.im2flow.augment import AugmentConfig, augment_batch, random_maps
from im2flow2act.im2flow.data import ClipConfig, build_clips
from im2flow2act.im2flow.flow_image import FlowImageConfig, decode
from im2flow2act.im2flow.train import FlowTrainer


@pytest.fixture(scope="module")
def clips(demos_root):
    config = ClipConfig(FlowImageConfig(grid_size=G, num_frames=T), held_out_per_task=1)
    return build_clips([demos_root], config, progress=False)[0]


def _augment(clips, config: AugmentConfig, encoding: str = "displacement", seed: int = 0):
    flow = FlowImageConfig(grid_size=G, num_frames=T, encoding=encoding)
    tensors = (torch.from_numpy(clips.images), torch.from_numpy(clips.queries), torch.from_numpy(clips.flows))
    return (*augment_batch(*tensors, config, flow, torch.Generator().manual_seed(seed)), flow)


def _positions(flows: np.ndarray, queries: np.ndarray, flow: FlowImageConfig) -> np.ndarray:
    """Unclipped (B, T, G², 2) track positions: a zoom may move a future point out of the frame."""
    return np.stack([decode(f, q, flow, clip=False)[0] for f, q in zip(flows, queries, strict=True)])


@pytest.mark.parametrize("encoding", ["absolute", "displacement", "sqrt_displacement"])
def test_tracks_follow_the_picture_and_the_grid_keeps_its_layout(clips, demos_root, encoding):
    if encoding != "displacement":  # the fixture's clips are displacement-encoded
        clip_config = ClipConfig(FlowImageConfig(grid_size=G, num_frames=T, encoding=encoding))
        clips = build_clips([demos_root], clip_config, progress=False)[0]
    config = AugmentConfig(flip_prob=0.5, min_crop=0.6)
    images, queries, flows, flow = _augment(clips, config, encoding, seed=0)
    maps = random_maps(torch.from_numpy(clips.queries), config, torch.Generator().manual_seed(0))
    images, queries, flows = images.numpy(), queries.numpy(), flows.numpy()
    scale, offset, flipped = (m.numpy() for m in maps)
    assert images.shape == clips.images.shape and images.dtype == np.uint8
    assert 0 < flipped.sum() < len(clips) and (np.abs(scale) < 1).all()  # both kinds of clip were drawn
    assert (queries[..., 1:3] >= -1e-6).all() and (queries[..., 1:3] <= 1 + 1e-6).all()  # grid kept in view
    before = _positions(clips.flows, clips.queries, flow)
    after = _positions(flows, queries, flow)
    for b in range(len(clips)):
        grid = queries[b, :, 1:3].reshape(G, G, 2)
        assert (np.diff(grid[..., 0], axis=1) > 0).all()  # column j is still left of column j + 1
        assert (np.diff(grid[..., 1], axis=0) > 0).all()  # row i is still above row i + 1
        # mapped back to the source picture, every new track is the old track of the same grid point
        old_tracks, old_vis = before[b], clips.flows[b, :, 2]
        if flipped[b]:
            old_tracks = old_tracks.reshape(T, G, G, 2)[:, :, ::-1].reshape(T, G * G, 2)
            old_vis = old_vis[..., ::-1]
        np.testing.assert_allclose(after[b] * scale[b] + offset[b], old_tracks, atol=1e-5)
        np.testing.assert_array_equal(flows[b, :, 2], old_vis)


def test_picture_content_moves_with_the_query_points(clips):
    """A bright dot drawn under one query point is found under that point after the warp."""
    marked = clips.subset(range(len(clips)))
    k = G * 2 + 1  # a grid point away from the corner
    for image, q in zip(marked.images, marked.queries, strict=True):
        x, y = q[k, 1:3] * image.shape[1]
        cv2.circle(image, (int(x), int(y)), 3, (255, 0, 255), -1, lineType=cv2.LINE_AA)
    images, queries, _, _ = _augment(marked, AugmentConfig(flip_prob=0.5, min_crop=0.7), seed=3)
    for image, q in zip(images.numpy(), queries.numpy(), strict=True):
        magenta = image[..., 0].astype(int) + image[..., 2] - 2 * image[..., 1].astype(int)
        ys, xs = np.nonzero(magenta > 0.8 * magenta.max())
        found = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / image.shape[1]
        index = np.argmin(np.abs(q[:, 1:3] - found).sum(1))
        # the point under the dot is the same grid point (column order reversed by a flip)
        same = {k, (k // G) * G + (G - 1 - k % G)}
        assert index in same, (index, same)
        assert np.abs(q[index, 1:3] - found).max() < 2.0 / image.shape[1]


def test_flipping_twice_is_the_identity_and_off_changes_nothing(clips):
    flip = AugmentConfig(flip_prob=1.0)
    once = _augment(clips, flip)[:3]
    flow = FlowImageConfig(grid_size=G, num_frames=T)
    twice = augment_batch(*once, flip, flow, torch.Generator().manual_seed(1))
    torch.testing.assert_close(twice[0], torch.from_numpy(clips.images))
    torch.testing.assert_close(twice[1], torch.from_numpy(clips.queries))
    torch.testing.assert_close(twice[2], torch.from_numpy(clips.flows))
    off = _augment(clips, AugmentConfig())
    for got, want in zip(off[:3], (clips.images, clips.queries, clips.flows), strict=True):
        assert np.array_equal(got.numpy(), want)
    with pytest.raises(ValueError, match="min_crop"):
        AugmentConfig(min_crop=0.0)
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)


def test_augmented_training_resumes_exactly(demos_root, tmp_path):
    augment = AugmentConfig(flip_prob=0.5, min_crop=0.7)
    full = FlowTrainer(tiny_train_config(demos_root, augment=augment), tmp_path / "a", progress=False)
    full.fit()
    half = FlowTrainer(tiny_train_config(demos_root, augment=augment), tmp_path / "b", progress=False)
    half.train_step()
    half.save()
    resumed = FlowTrainer(tiny_train_config(demos_root, augment=augment), tmp_path / "b", progress=False)
    resumed.fit()
    for a, b in zip(
        full.generator.denoiser.state_dict().values(),
        resumed.generator.denoiser.state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    plain = FlowTrainer(tiny_train_config(demos_root), tmp_path / "c", progress=False)
    assert not torch.equal(plain.batch(0)[0], full.batch(0)[0])  # the batch was really augmented
