"""The open-loop multimodality measures, on scripted chunks and on a tiny real policy's samples."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny_configs import tiny_policy_config

from im2flow2act.policies.data import PlayWindows, WindowConfig
from im2flow2act.policies.flow_policy import FlowPolicy
from im2flow2act.policies.multimodality import chunk_report, sample_chunks
from im2flow2act.policies.sim.robot import MAX_WIDTH


def scripted_chunk(offset_cm: float, gripper: float = MAX_WIDTH, steps: int = 16) -> np.ndarray:
    """A straight 10 cm reach along x, shifted ``offset_cm`` along y."""
    chunk = np.zeros((steps, 10))
    chunk[:, 0] = np.linspace(0.0, 0.10, steps)
    chunk[:, 1] = offset_cm / 100.0
    chunk[:, 9] = gripper
    return chunk


def test_two_ways_are_found_and_the_averaging_regressor_lands_between_them():
    rng = np.random.default_rng(0)
    left = [scripted_chunk(-5 + rng.normal(0, 0.2)) for _ in range(4)]
    right = [scripted_chunk(5 + rng.normal(0, 0.2)) for _ in range(4)]
    diffusion = np.stack([left + right])  # one window, 8 samples in two ways 10 cm apart
    middle = scripted_chunk(0.0)[None]
    report = chunk_report(diffusion, middle, scripted_chunk(-5.0)[None])
    assert report["bimodal"] == 1.0
    assert report["regression_to_middle_cm"] < 0.5 and report["regression_to_nearest_cm"] > 4.5
    assert report["spread_cm"] == pytest.approx(5.0, abs=0.5)
    assert report["diffusion_best_cm"] < 0.5 and report["regression_cm"] == pytest.approx(5.0, abs=0.1)
    assert report["gripper_split"] == 0.0

    one_way = np.stack([[scripted_chunk(rng.normal(0, 0.2)) for _ in range(8)]])
    report = chunk_report(one_way, middle, middle)
    assert report["bimodal"] == 0.0 and np.isnan(report["regression_to_middle_cm"])
    assert report["spread_cm"] < 0.5

    wide_blob = np.stack([[scripted_chunk(offset) for offset in rng.normal(0, 3.0, 16)]])
    assert chunk_report(wide_blob, middle, middle)["bimodal"] == 0.0  # spread, but one way

    timing = np.stack([[scripted_chunk(0.0, gripper=w) for w in (0.0, 0.0, MAX_WIDTH, MAX_WIDTH)]])
    assert chunk_report(timing, middle, middle)["gripper_split"] == 1.0


def test_diffusion_samples_differ_and_the_regressor_gives_one_chunk(play_root):
    windows = PlayWindows(play_root, WindowConfig(num_points=16, plan_frames=8))
    torch.manual_seed(0)
    policies = {
        objective: FlowPolicy(replace(tiny_policy_config(), objective=objective)).eval()
        for objective in ("diffusion", "regression")
    }
    for policy in policies.values():
        policy.normalizer.fit(windows.statistics())
    indices = [0, len(windows) - 1]
    diffusion, truth = sample_chunks(policies["diffusion"], windows, indices, samples=4)
    regression, _ = sample_chunks(policies["regression"], windows, indices, samples=2)
    assert diffusion.shape == (2, 4, 16, 10) and truth.shape == (2, 16, 10)
    assert np.isfinite(diffusion).all()
    assert np.abs(diffusion[:, 0] - diffusion[:, 1]).max() > 1e-4  # sampled, not one answer
    np.testing.assert_allclose(regression[:, 0], regression[:, 1], atol=1e-5)  # deterministic
    np.testing.assert_allclose(truth[1], windows[indices[1]]["action"].numpy())
    report = chunk_report(diffusion, regression[:, 0], truth)
    assert report["windows"] == 2 and report["spread_cm"] > 0.0
    assert report["diffusion_best_cm"] <= report["diffusion_first_cm"]
