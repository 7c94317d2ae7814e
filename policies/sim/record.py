"""Roll out an agent in the sim and record it as a flow-dataset episode.

Frame t is rendered before action t is applied, as in the reference recorder; one last frame after the
final action is kept too, with the final action repeated for it, so every array has the same length T.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from im2flow2act.policies.sim.env import Action, SimEnv
from im2flow2act.policies.sim.ground_truth import embodiment_mask, object_labels, sample_points
from im2flow2act.preprocessing.dataset import Episode
from im2flow2act.preprocessing.tracks import moving_mask

Agent = Callable[[SimEnv, np.random.Generator], Iterator[Action]]
EMBODIMENT_LABEL = 100
MOVING_THRESHOLD_PX = 2.5
"""A point whose visible positions span more than this (pixels of a 256 frame) counts as moving."""


@dataclass
class RecordConfig:
    num_points: int = 256
    """Ground-truth points sampled on the tracked objects."""
    max_steps: int = 150
    """Stop a rollout after this many actions."""
    store_depth: bool = True


@dataclass
class Rollout:
    episode: Episode
    success: bool
    steps: int


def record(env: SimEnv, seed: int, agent: Agent, config: RecordConfig | None = None) -> Rollout:
    """Reset to ``seed``, run ``agent`` and return the recorded episode and whether the task succeeded."""
    cfg = config or RecordConfig()
    env.reset(seed)
    rng = np.random.default_rng(seed + 7919)
    renderer, camera = env.renderer, env.camera()
    depth, seg = renderer.depth(env.data), renderer.segmentation(env.data)
    points, queries = sample_points(env.model, env.data, camera, depth, seg, env.task.tracked, cfg.num_points)

    frames, tracks, visible, depths, labels, actions, proprio, qpos, qvel = ([] for _ in range(9))

    def observe(depth: np.ndarray, seg: np.ndarray) -> None:
        xy, vis = points.observe(env.model, env.data, camera, depth, seg)
        frames.append(renderer.rgb(env.data))
        labels.append(segmentation_labels(env, seg))
        tracks.append(xy)
        visible.append(vis)
        depths.append(depth.astype(np.float16))
        proprio.append(env.proprio())
        qpos.append(env.data.qpos.copy())
        qvel.append(env.data.qvel.copy())

    observe(depth, seg)
    for action in agent(env, rng):
        if len(actions) >= cfg.max_steps:
            break
        actions.append(action.as_vector())
        env.step(action)
        observe(renderer.depth(env.data), renderer.segmentation(env.data))
    actions.append(actions[-1] if actions else Action(*env.ee_pose(), env.gripper_width()).as_vector())

    tracks_arr, vis_arr = np.stack(tracks), np.stack(visible)
    arrays = {
        "action": np.stack(actions),
        "proprio": np.stack(proprio),
        "qpos": np.stack(qpos),
        "qvel": np.stack(qvel),
        "moving": moving_mask(tracks_arr, vis_arr, MOVING_THRESHOLD_PX),
        "robot": np.zeros(len(queries), bool),  # sampled on objects only, never on the embodiment
        "point_object": points.object_index,
        "segmentation": np.stack(labels),
    }
    if cfg.store_depth:
        arrays["depth"] = np.stack(depths)
    ys, xs = np.nonzero((labels[0] >= 0) & (labels[0] != EMBODIMENT_LABEL))
    w, h = env.scene.image_size
    bbox = [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]
    episode = Episode(
        frames=np.stack(frames),
        tracks=tracks_arr,
        visibility=vis_arr,
        queries=queries,
        task=env.task.instruction,
        fps=env.scene.control_hz,
        source=f"sim:{env.task.name}:{seed}",
        frame_indices=list(range(len(frames))),
        object_prompt=env.task.object_prompt,
        bbox=bbox,
        arrays=arrays,
        attrs={
            "seed": seed,
            "task_name": env.task.name,
            "layouts": env.task.config.layouts,
            "embodiment": env.embodiment,
            "success": env.success(),
            "tracked_objects": list(env.task.tracked),
            "camera_intrinsics": camera.intrinsics.tolist(),
            "camera_position": camera.position.tolist(),
            "camera_rotation": camera.rotation.tolist(),
            "action_layout": "xyz(3) + rot6d(6: first two columns of R) + gripper_width(1)",
        },
    )
    return Rollout(episode, bool(env.success()), len(actions) - 1)


def segmentation_labels(env: SimEnv, seg: np.ndarray) -> np.ndarray:
    """int8 (H, W): index of the tracked object, EMBODIMENT_LABEL on the robot or sphere, −1 elsewhere."""
    out = object_labels(env.model, seg, env.task.tracked).astype(np.int8)
    out[embodiment_mask(env.model, seg)] = EMBODIMENT_LABEL
    return out
