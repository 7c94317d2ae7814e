"""Training samples for the flow-conditioned policy: windows over robot play episodes.

Vocabulary of Diffusion Policy: observation horizon ``To`` (steps of proprioception fed in), prediction
horizon ``T`` (actions predicted per sample) and action horizon ``Ta`` (actions executed before replanning;
used at rollout). A window starting at step t takes proprioception t−To+1..t (clamped at the episode
start) and actions t..t+T−1 (the last action repeated past the episode end, where the robot holds still).

Per sample, N object points are drawn (with replacement when there are fewer): points that move and are
not on the robot, by the episode's masks (segmentation-based in the sim — no pixel rules). For them:
- ``plan``: the whole episode's flow resampled to P frames — what the policy is told to do;
- ``remaining``: the flow from t to the end resampled to P frames — what is left (the alignment target);
- ``current``: the points' positions and visibility at t (what the online tracker reports);
- ``points_3d``: their 3-D positions at frame 0 from the depth image and the recorded camera;
- ``end_3d``: what the frame-0 depth image shows at the pixel where each point's plan ends
  (``plan_end_3d``, see ``FlowPolicyConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from im2flow2act.policies.sim.scene import camera_from_attrs
from im2flow2act.preprocessing.dataset import DatasetError, FlowDataset
from im2flow2act.preprocessing.tracks import resample_tracks


@dataclass
class WindowConfig:
    obs_horizon: int = 1
    pred_horizon: int = 16
    action_horizon: int = 8
    num_points: int = 64
    plan_frames: int = 16
    """Both cheaper than 128 points × 32 frames per training step, with the same success
    (docs/results/policies.md)."""


@dataclass
class _PlayEpisode:
    name: str
    tracks: np.ndarray  # (T, N, 2)
    visibility: np.ndarray  # (T, N)
    object_points: np.ndarray  # indices of moving, non-robot points
    points_3d: np.ndarray  # (N, 3)
    action: np.ndarray  # (T, A)
    proprio: np.ndarray  # (T, P)
    plan: np.ndarray  # (P, N, 3) whole-episode flow resampled, (x, y, vis)
    end_3d: np.ndarray  # (N, 3)


def _flow(tracks: np.ndarray, visibility: np.ndarray, frames: int) -> np.ndarray:
    resampled, vis, _ = resample_tracks(tracks, visibility, frames)
    return np.concatenate([resampled, vis[..., None].astype(np.float32)], axis=-1)


PLAY_ARRAYS = {
    "action": "the actions the policy learns",
    "proprio": "the proprioception the policy observes",
    "depth": "the points are lifted to 3-D from the first frame's depth",
    "moving": "it says which points move (the object points)",
    "robot": "it says which points lie on the robot (never object points)",
}
"""What policy training reads from a play episode, and why: a missing one is never silently defaulted."""
CAMERA_ATTRS = ("camera_intrinsics", "camera_position", "camera_rotation")


def check_play_episode(view) -> None:
    """Refuse an episode that lacks what training needs, naming the dataset, the episode and the array."""
    keys = set(view.keys())
    for key, why in PLAY_ARRAYS.items():
        if key not in keys:
            raise DatasetError(
                view.path,
                f"play episode {view.name!r} has no {key!r} array ({why}); policy training needs play "
                f"recorded by `im2flow2act sim play`, which stores {', '.join(PLAY_ARRAYS)}",
            )
    missing = [key for key in CAMERA_ATTRS if key not in view.attrs]
    if missing:
        raise DatasetError(
            view.path,
            f"play episode {view.name!r} has no {', '.join(missing)} attribute(s) (the recording camera, "
            f"needed to lift the points to 3-D); record play with `im2flow2act sim play`",
        )


def load_play_episode(view, plan_frames: int) -> _PlayEpisode:
    """Everything a window needs from one stored play episode, in memory."""
    check_play_episode(view)
    tracks, visibility = view.tracks, view.visibility
    moving, robot = view.array("moving").astype(bool), view.array("robot").astype(bool)
    chosen = np.flatnonzero(moving & ~robot)
    if len(chosen) == 0:  # nothing moved in this episode: every object point is a valid (static) target
        chosen = np.flatnonzero(~robot)
    depth = view.array("depth", 0).astype(np.float32)
    plan = _flow(tracks, visibility, plan_frames)
    camera = camera_from_attrs(view.attrs, view.frame_size)
    return _PlayEpisode(
        name=view.name,
        tracks=tracks,
        visibility=visibility,
        object_points=chosen,
        points_3d=camera.lift(tracks[0], depth).astype(np.float32),
        action=view.array("action").astype(np.float32),
        proprio=view.array("proprio").astype(np.float32),
        plan=plan,
        end_3d=camera.lift(plan[-1, :, :2], depth).astype(np.float32),
    )


class PlayWindows(Dataset):
    """All (episode, start step) windows of one or more play datasets."""

    def __init__(
        self, roots: list[str | Path] | str | Path, config: WindowConfig | None = None, seed: int = 0
    ):
        self.config = config or WindowConfig()
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        self.episodes = [
            load_play_episode(view, self.config.plan_frames)
            for root in roots
            for view in FlowDataset(root, kind="play")
        ]
        if not self.episodes:
            raise ValueError(f"no play episodes in {', '.join(map(str, roots))}")
        self.index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(len(ep.action))]
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Different point draws every epoch, the same ones for the same (seed, epoch, index)."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, t = self.index[i]
        ep, cfg = self.episodes[e], self.config
        rng = np.random.default_rng((self.seed, self.epoch, i))
        replace = len(ep.object_points) < cfg.num_points
        points = rng.choice(ep.object_points, size=cfg.num_points, replace=replace)
        length = len(ep.action)
        obs_steps = np.clip(np.arange(t - cfg.obs_horizon + 1, t + 1), 0, length - 1)
        act_steps = np.clip(np.arange(t, t + cfg.pred_horizon), 0, length - 1)
        current = np.concatenate(
            [ep.tracks[t, points], ep.visibility[t, points, None].astype(np.float32)], axis=-1
        )
        remaining = _flow(ep.tracks[t:, points], ep.visibility[t:, points], cfg.plan_frames)
        return {
            "plan": torch.from_numpy(ep.plan[:, points]),
            "remaining": torch.from_numpy(remaining),
            "current": torch.from_numpy(current),
            "initial": torch.from_numpy(ep.plan[0, points]),
            "points_3d": torch.from_numpy(ep.points_3d[points]),
            "end_3d": torch.from_numpy(ep.end_3d[points]),
            "proprio": torch.from_numpy(ep.proprio[obs_steps]),
            "action": torch.from_numpy(ep.action[act_steps]),
            "episode": torch.tensor(e),
            "step": torch.tensor(t),
        }

    def statistics(self) -> dict[str, torch.Tensor]:
        """What the normaliser is fitted on: every action, proprioception and initial 3-D point, and every
        end-effector position in its episode's object frame (relative to the object points' mean)."""
        in_object_frame = [
            np.concatenate([ep.action[:, :3], ep.proprio[:, :3]])
            - ep.points_3d[ep.object_points].mean(axis=0)
            for ep in self.episodes
        ]
        return {
            "object_position": torch.from_numpy(np.concatenate(in_object_frame)),
            "action": torch.from_numpy(np.concatenate([ep.action for ep in self.episodes])),
            "proprio": torch.from_numpy(np.concatenate([ep.proprio for ep in self.episodes])),
            "points_3d": torch.from_numpy(
                np.concatenate([ep.points_3d[ep.object_points] for ep in self.episodes])
            ),
        }
