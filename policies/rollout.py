"""One closed-loop episode, in its parts: the plan's points, the policy's observation, the control loop,
the video and the episode's measures. :func:`rollout` chains them.

The vocabulary is Diffusion Policy's: the policy sees ``obs_horizon`` proprioceptive states, predicts a
chunk of ``pred_horizon`` actions, and ``action_horizon`` of them are executed before it predicts again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from im2flow2act.policies.flow_policy import FlowPolicy
from im2flow2act.policies.metrics import EpisodeResult, final_plan_error, grasp_offset_cm, motion_fraction
from im2flow2act.policies.online_tracking import CameraObservation, RolloutTracker
from im2flow2act.policies.plans import Plan, PlanSource
from im2flow2act.policies.sim.env import Action, SimEnv
from im2flow2act.preprocessing.dataset import EpisodeView
from im2flow2act.preprocessing.tracks import resample_tracks
from im2flow2act.preprocessing.video import write_video
from im2flow2act.preprocessing.visualize import draw_tracks, draw_trajectories


@dataclass
class LoopConfig:
    """How the control loop runs (the evaluation's fields of the same names)."""

    action_horizon: int = 8
    max_chunks: int = 20
    action_samples: int = 16
    guidance_scale: float | None = None


# ----- plan construction -----------------------------------------------------------------------------------
def sample_points(plan: Plan, num_points: int, rng: np.random.Generator) -> Plan:
    """``num_points`` of the plan's points (drawn with replacement when it has fewer)."""
    n = plan.tracks.shape[1]
    return plan.subset(rng.choice(n, size=num_points, replace=n < num_points))


@dataclass
class PlanInputs:
    """The plan as the policy reads it: resampled to its frames, with x, y, visibility per point, and the
    3-D positions (from the first depth image) of the points at the start and at the plan's end."""

    plan: np.ndarray
    """float32 (plan_frames, N, 3)."""
    points_3d: np.ndarray
    end_3d: np.ndarray

    @classmethod
    def build(cls, plan: Plan, first: CameraObservation, plan_frames: int) -> PlanInputs:
        xy, vis, _ = resample_tracks(plan.tracks, plan.visibility, plan_frames)
        stacked = np.concatenate([xy, vis[..., None]], axis=-1).astype(np.float32)
        camera, depth = first.camera, first.depth
        start = camera.lift(plan.tracks[0], depth).astype(np.float32)
        return cls(stacked, start, camera.lift(xy[-1], depth).astype(np.float32))


# ----- observation building --------------------------------------------------------------------------------
def policy_observation(
    inputs: PlanInputs,
    current_xy: np.ndarray,
    current_vis: np.ndarray,
    proprio: list[np.ndarray],
    samples: int,
) -> dict[str, torch.Tensor]:
    """The policy's batch for one replanning step, repeated ``samples`` times (one chunk sampled each);
    ``proprio`` holds the last ``obs_horizon`` states."""
    current = np.concatenate([current_xy, current_vis[:, None]], -1).astype(np.float32)
    obs = {
        "plan": torch.from_numpy(inputs.plan)[None],
        "current": torch.from_numpy(current)[None],
        "points_3d": torch.from_numpy(inputs.points_3d)[None],
        "end_3d": torch.from_numpy(inputs.end_3d)[None],
        "proprio": torch.from_numpy(np.stack(proprio))[None],
    }
    return {k: v.expand(samples, *v.shape[1:]) for k, v in obs.items()}


def medoid_chunk(chunks: np.ndarray) -> np.ndarray:
    """(K, T, A) sampled chunks → the one whose positions are closest on average to the others'.

    Unlike the mean, the medoid is always a chunk the policy sampled, so two modes (grasp left or right
    of a handle) are never averaged into a path between them."""
    positions = chunks[..., :3]
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1).mean(axis=-1)
    return chunks[int(np.argmin(distance.sum(axis=1)))]


# ----- the control loop ------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """What one episode's loop saw: frames, the tracked points per frame, and what the measures need."""

    frames: list[np.ndarray] = field(default_factory=list)
    seen: list[np.ndarray] = field(default_factory=list)
    seen_vis: list[np.ndarray] = field(default_factory=list)
    steps: int = 0
    peak: dict[str, float] = field(default_factory=dict)
    grasp_offset_cm: float = float("nan")
    held: bool = False

    def add(self, frame: np.ndarray, xy: np.ndarray, vis: np.ndarray) -> None:
        self.frames.append(frame)
        self.seen.append(xy)
        self.seen_vis.append(vis)


def control_loop(
    policy: FlowPolicy,
    env: SimEnv,
    inputs: PlanInputs,
    tracker: RolloutTracker,
    first: CameraObservation,
    queries: np.ndarray,
    loop: LoopConfig,
    noise_seed: int,
) -> Trajectory:
    """Predict a chunk, execute its first ``action_horizon`` actions while ``tracker`` follows the points,
    until the task succeeds or ``max_chunks`` chunks ran. Chunk noise is seeded by ``noise_seed`` + step."""
    tracker.reset(first, queries)
    current_xy, current_vis = queries, np.ones(len(queries), bool)
    horizon = policy.config.obs_horizon
    proprio = [env.proprio()] * horizon
    out = Trajectory(peak=env.progress())
    out.add(first.rgb, current_xy, current_vis)
    for _ in range(loop.max_chunks):
        obs = policy_observation(inputs, current_xy, current_vis, proprio[-horizon:], loop.action_samples)
        noise = torch.Generator().manual_seed(noise_seed + out.steps)
        chunk = medoid_chunk(policy.predict_action(obs, noise, loop.guidance_scale).numpy())
        for vector in chunk[: loop.action_horizon]:
            action = Action.from_vector(vector)
            if np.isnan(out.grasp_offset_cm) and action.closes:
                out.grasp_offset_cm = grasp_offset_cm(env)
            env.step(action)
            out.held = out.held or env.held is not None
            out.steps += 1
            out.peak = {k: max(v, out.peak[k]) for k, v in env.progress().items()}
            frame = env.render()
            current_xy, current_vis = tracker.step(CameraObservation.from_env(env, frame))
            proprio.append(env.proprio())
            out.add(frame, current_xy, current_vis)
        if env.success():
            break
    return out


# ----- video and measures ----------------------------------------------------------------------------------
def write_rollout_video(path: Path, plan: Plan, trajectory: Trajectory, fps: float) -> Path:
    """Side by side: the plan drawn on its image, and the rollout with the tracked points' trails."""
    seen = np.stack(trajectory.seen).astype(np.float32)
    drawn = draw_tracks(np.stack(trajectory.frames), seen, np.stack(trajectory.seen_vis), trail=6)
    planned = draw_trajectories(plan.image, plan.tracks.astype(np.float32), plan.visibility)
    t, h, w = drawn.shape[:3]
    gap = np.full((t, h, 4, 3), 255, np.uint8)
    write_video(path, np.concatenate([np.repeat(planned[None], t, axis=0), gap, drawn], axis=2), fps=fps)
    return path


def episode_result(
    env: SimEnv, demo: str, plan: Plan, trajectory: Trajectory, size: tuple[int, int], seconds: float
) -> EpisodeResult:
    """The episode's measures from the env's final state, the plan and what the loop saw."""
    seen, seen_vis = np.stack(trajectory.seen), np.stack(trajectory.seen_vis)
    return EpisodeResult(
        env.task.name,
        demo,
        env.success(),
        trajectory.steps,
        seconds,
        env.progress(),
        trajectory.peak,
        final_plan_error(plan.tracks, plan.visibility, seen, seen_vis, size),
        motion_fraction(plan.tracks, plan.visibility, seen, seen_vis, size),
        trajectory.grasp_offset_cm,
        trajectory.held,
    )


# ----- one episode -----------------------------------------------------------------------------------------
def rollout(
    policy: FlowPolicy,
    env: SimEnv,
    view: EpisodeView,
    plans: PlanSource,
    tracker: RolloutTracker,
    loop: LoopConfig,
    num_points: int = 64,
    seed: int = 0,
    video: Path | None = None,
) -> EpisodeResult:
    """One closed-loop episode from demonstration ``view``'s layout (its seed), following ``plans``' plan
    of it; ``tracker`` must be bound to ``env``. ``video``: where to write the rollout video."""
    started = time.perf_counter()
    layout = int(view.attrs["seed"])
    env.reset(layout)
    plan = sample_points(plans.plan(view, env), num_points, np.random.default_rng((seed, layout)))
    first = CameraObservation.from_env(env)
    inputs = PlanInputs.build(plan, first, policy.config.plan_frames)
    trajectory = control_loop(policy, env, inputs, tracker, first, plan.tracks[0], loop, layout)
    if video is not None:
        write_rollout_video(video, plan, trajectory, fps=env.scene.control_hz)
    return episode_result(env, view.name, plan, trajectory, first.size, time.perf_counter() - started)
