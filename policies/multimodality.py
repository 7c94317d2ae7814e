"""Open-loop look at a policy's multimodality: from one play state, how far apart are its sampled chunks?

A diffusion policy samples a chunk of actions; from a state where play went on in more than one way (reach
left or right, grasp now or later), its samples should spread over those ways. A policy trained with an MSE
objective gives one chunk per state, and where the ways differ that chunk lies between them. These
measures compare the two on the same windows, in centimetres of end-effector path.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from im2flow2act.policies.flow_policy import FlowPolicy
from im2flow2act.policies.sim.robot import MAX_WIDTH

BIMODAL_APART_CM = 3.0
"""Two clusters of sampled paths must be further apart than this (mean over the chunk) …"""
BIMODAL_SEPARATION = 5.0
"""… and this many times further apart than their samples lie from their own cluster's mean path, for a
window to count as bimodal (a wide single blob also splits in two, with its halves about 3× apart)."""


def sample_chunks(
    policy: FlowPolicy, windows: Dataset, indices: list[int], samples: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` chunks per window → (chunks (W, K, T, A), the play's own actions (W, T, A))."""
    chunks, truth = [], []
    generator = torch.Generator().manual_seed(seed)
    for i in indices:
        item = windows[i]
        batch = {k: v[None].repeat(samples, *[1] * v.ndim) for k, v in item.items()}
        chunks.append(policy.predict_action(batch, generator=generator).numpy())
        truth.append(item["action"].numpy())
    return np.stack(chunks), np.stack(truth)


def path_distance_cm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean distance between end-effector paths (…, T, A) over the chunk, in cm."""
    return 100.0 * np.linalg.norm(a[..., :3] - b[..., :3], axis=-1).mean(axis=-1)


def two_means(paths: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(K, T, A) chunks → (labels (K,), the two clusters' mean paths (2, T, 3)), started from the two
    samples furthest apart."""
    positions = paths[..., :3]
    apart = path_distance_cm(positions[:, None], positions[None])
    first, second = np.unravel_index(np.argmax(apart), apart.shape)
    centres = positions[[first, second]]
    labels = np.zeros(len(paths), dtype=int)
    for _ in range(iterations):
        labels = np.argmin(path_distance_cm(positions[:, None], centres[None]), axis=1)
        centres = np.stack(
            [positions[labels == c].mean(axis=0) if (labels == c).any() else centres[c] for c in (0, 1)]
        )
    return labels, centres


def chunk_report(diffusion: np.ndarray, regression: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Diffusion samples (W, K, T, A), the regressor's chunk (W, T, A) and the play's own (W, T, A) →

    - ``spread_cm``: mean distance of a diffusion sample's path from the samples' mean path;
    - ``diffusion_first_cm`` / ``diffusion_best_cm`` / ``regression_cm``: distance to the play's path of
      the first sample, of the nearest of the K samples, and of the regressor's chunk;
    - ``bimodal``: share of windows whose samples split into two clusters (each with at least two
      samples) more than ``BIMODAL_APART_CM`` and ``BIMODAL_SEPARATION`` × their own spread apart; on
      those, ``regression_to_nearest_cm`` and ``regression_to_middle_cm``: the regressor's path to the
      nearer cluster's mean path and to the point halfway between the two (a regressor that averages the
      ways lands near the middle);
    - ``gripper_split``: share of windows where some samples end the chunk with the gripper closed and
      others open (a timing mode: grasp now or later).
    """
    mean_path = diffusion.mean(axis=1, keepdims=True)
    report = {
        "windows": len(diffusion),
        "samples": diffusion.shape[1],
        "spread_cm": float(path_distance_cm(diffusion, mean_path).mean()),
        "diffusion_first_cm": float(path_distance_cm(diffusion[:, 0], truth).mean()),
        "diffusion_best_cm": float(path_distance_cm(diffusion, truth[:, None]).min(axis=1).mean()),
        "regression_cm": float(path_distance_cm(regression, truth).mean()),
    }
    to_nearest, to_middle = [], []
    for samples, answer in zip(diffusion, regression, strict=True):
        labels, centres = two_means(samples)
        sizes = np.bincount(labels, minlength=2)
        apart = path_distance_cm(centres[0], centres[1])
        within = path_distance_cm(samples[..., :3], centres[labels]).mean()
        if sizes.min() < 2 or apart <= max(BIMODAL_APART_CM, BIMODAL_SEPARATION * within):
            continue
        to_nearest.append(path_distance_cm(answer[None, :, :3], centres).min())
        to_middle.append(path_distance_cm(answer[:, :3], centres.mean(axis=0)))
    closed = diffusion[:, :, -1, 9] < MAX_WIDTH / 2
    nan = float("nan")
    report |= {
        "bimodal": len(to_nearest) / len(diffusion),
        "regression_to_nearest_cm": float(np.mean(to_nearest)) if to_nearest else nan,
        "regression_to_middle_cm": float(np.mean(to_middle)) if to_middle else nan,
        "gripper_split": float((closed.any(axis=1) & ~closed.all(axis=1)).mean()),
    }
    return report
