"""Closed-loop, demonstration-conditioned evaluation in the sim (the reference's §4.5).

For each held-out sphere-agent demonstration: the robot starts from the same layout (the demo's seed);
the plan is the object flow of the demo — extracted from its *video* by our preprocessing (a grid in the
demo's object box tracked with LK, moving points kept), or the simulator's ground truth; the points are
tracked online during the rollout (``oracle`` = simulator ground truth, ``lk`` = OpenCV on the rendered
frames); the policy predicts chunks of T actions of which Ta are executed; success is the task's check.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from im2flow2act.im2flow.generator import FlowGenerator, load_generator
from im2flow2act.policies.flow_policy import FlowPolicy
from im2flow2act.policies.sim.env import Action, SimEnv
from im2flow2act.policies.sim.ground_truth import attach_points
from im2flow2act.policies.sim.record import EMBODIMENT_LABEL
from im2flow2act.policies.sim.scene import SceneConfig
from im2flow2act.policies.train import load_policy
from im2flow2act.preprocessing.dataset import DatasetError, FlowDataset
from im2flow2act.preprocessing.trackers import TRACKERS, OnlineTracker, Tracker
from im2flow2act.preprocessing.tracks import (
    fill_lost_points,
    grid_in_box,
    moving_mask,
    pixel_indices,
    resample_tracks,
)
from im2flow2act.preprocessing.video import write_video
from im2flow2act.preprocessing.visualize import draw_tracks, draw_trajectories
from tqdm import tqdm


@dataclass
class EvalConfig:
    policy: str = "outputs/policy/policy_ema.pt"
    demos: str = "outputs/sim_demos/dataset.zarr"
    tasks: list[str] = field(default_factory=lambda: ["pick_place", "pour", "open_drawer", "fold_cloth"])
    episodes: int = 20
    """Demonstrations per task (the last ones of the dataset: keep them out of im2flow training)."""
    plan_source: str = "tracked"
    """tracked = LK on the demo video (what a human video gives); ground_truth = the simulator's tracks;
    generated = im2flow from the rendered initial scene and the instruction (language-conditioned)."""
    generator: str = "outputs/im2flow/generator_ema.pt"
    """The flow generator for plan_source=generated."""
    num_flows: int = 4
    """generated: flows sampled per episode; the medoid (closest to the others) is executed."""
    moving_threshold_px: float = 10.0
    """generated: points whose flow moves less than this (256-pixel frame) are dropped (reference §4.6)."""
    tracker: str = "oracle"
    """Online tracking during the rollout: oracle (simulator) or a registered online tracker (lk,
    cotracker3-online)."""
    tracker_args: dict[str, Any] = field(default_factory=dict)
    """Config of the online tracker, e.g. {checkpoint: models/cotracker3/scaled_online.pth}."""
    plan_tracker: str = "lk"
    """plan_source=tracked: the tracker run over the demo video (lk, cotracker3)."""
    plan_tracker_args: dict[str, Any] = field(default_factory=lambda: {"win_size": 15})
    """Config of the plan tracker. LK's 15-pixel window (its default is 21) straddles the drawer front's
    edge less: the filled plan's lag behind the simulator's flow fell from 6–8 to 4–6 px, and the drawer rose
    from 12 to 19 of 20 (on-object plan, medoid of 16)."""
    plan_on_object: bool = True
    """plan_source=tracked: track only the grid points that lie on the object in the demo's first-frame
    segmentation (what a SAM mask gives on a human video), not the whole box, whose table points pull
    the policy's object frame off the object. Measured (train_medium policy, oracle, README Results):
    pick & place 4 → 12 of 20 with the medoid of 16."""
    fill_lost: bool = True
    """Plan points the tracker lost move with their visible neighbours instead of standing where they
    were last seen (``preprocessing.tracks.fill_lost_points``), like the simulator's tracks behind an
    occluder, which the policy trained on. Measured (README, Results; with the sim texture fix): LK
    plan, drawer 4 → 18 of 20.
    Not done for the online tracker's points: there the arm covers the object, the neighbours ride on
    the arm, and the drawer fell from 13 to 1 of 20."""
    action_horizon: int = 8
    guidance_scale: float | None = None
    """Classifier-free guidance on the flow (None: the policy's own setting; see FlowPolicyConfig)."""
    max_chunks: int = 20
    action_samples: int = 16
    """Chunks sampled per replanning step; the medoid (closest on average to the others) is executed.
    More than 1 trades inference time for precision: the scatter between samples is about half of the
    grasp error. Pick & place (simulator's flow, oracle): 1 → 4, 8 → 9, 16 → 13 of 20; 32 gave no more
    than 16 (README, Results)."""
    num_points: int = 64
    """Plan points given to the policy (drawn with replacement when the plan has fewer)."""
    videos: bool = True
    seed: int = 0


@dataclass
class EpisodeResult:
    task: str
    demo: str
    success: bool
    steps: int
    seconds: float
    progress: dict[str, float] = field(default_factory=dict)
    """The task's progress measures at the end (e.g. mug height, distance to the plate)."""
    peak: dict[str, float] = field(default_factory=dict)
    """Their largest values during the episode (e.g. how high the mug was lifted)."""
    plan_error_px: float = float("nan")
    """How far the object's points end from where the plan's last frame puts them (mean, pixels of the
    frame, points visible in both): a task-free measure of following the flow, also for play plans."""
    motion_fraction: float = float("nan")
    """How much of the planned motion the object made: its points' displacement projected on the plan's,
    over the plan's squared (1 = all of it, below 1 = stopped short), points visible at both ends."""
    grasp_offset_cm: float = float("nan")
    """Where the gripper was first commanded closed: its distance to the nearest grasp point (the mug's
    centre, the drawer handle). NaN when it never closed."""
    held: bool = False
    """Whether the gripper held the object at some point: with ``grasp_offset_cm`` this separates a missed
    grasp from what goes wrong after it (a drop, a bad place)."""


def final_plan_error(
    plan: np.ndarray, plan_vis: np.ndarray, seen: np.ndarray, seen_vis: np.ndarray, size: tuple[int, int]
) -> float:
    """Mean pixel distance between the plan's last point positions and the tracked ones at the end."""
    both = plan_vis[-1] & seen_vis[-1]
    if not both.any():
        return float("nan")
    offset = (seen[-1][both] - plan[-1][both]) * np.asarray(size, np.float32)
    return float(np.linalg.norm(offset, axis=-1).mean())


def motion_fraction(
    plan: np.ndarray, plan_vis: np.ndarray, seen: np.ndarray, seen_vis: np.ndarray, size: tuple[int, int]
) -> float:
    """Σ (seen displacement · planned displacement) / Σ |planned displacement|² over the points visible at
    the start and the end of both (pixel units, so both image axes weigh the same)."""
    both = plan_vis[0] & plan_vis[-1] & seen_vis[0] & seen_vis[-1]
    scale = np.asarray(size, np.float32)
    planned = (plan[-1][both] - plan[0][both]) * scale
    done = (seen[-1][both] - seen[0][both]) * scale
    total = float((planned**2).sum())
    return float((done * planned).sum()) / total if total > 0 else float("nan")


def on_object(view, queries: np.ndarray) -> np.ndarray:
    """The queries that lie on a tracked object in the first frame's segmentation (all when the episode
    has none). A box also holds table and background: 30–50 % of the LK plan's moving points were off the
    object (6 demos per task), and they pull the policy's object frame (their mean 3-D position) off it."""
    if "segmentation" not in set(view.keys()):
        return queries
    labels = view.array("segmentation", 0)
    h, w = labels.shape
    px = pixel_indices(queries[:, 1:3], (w, h))
    label = labels[px[:, 1], px[:, 0]]
    keep = (label >= 0) & (label != EMBODIMENT_LABEL)
    return queries[keep] if keep.any() else queries


def plan_from_demo(
    view,
    source: str,
    grid: int = 32,
    tracker: Tracker | None = None,
    on_object_only: bool = False,
    fill_lost: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, visibility) of the demo's moving object points, from its video or from the simulator."""
    if source not in ("tracked", "ground_truth"):
        raise ValueError(f"plan_source must be tracked, ground_truth or generated, got {source!r}")
    if source == "ground_truth":
        tracks, vis = view.tracks, view.visibility
    else:
        frames = np.asarray(view.frames[...])
        queries = grid_in_box(view.attrs["bbox"], grid)
        if on_object_only:
            queries = on_object(view, queries)
        tracks, vis = (tracker or TRACKERS.build("lk")).track(frames, queries)
        if fill_lost:
            tracks = fill_lost_points(tracks, vis)
    moving = moving_mask(tracks, vis) & vis[0]
    keep = np.flatnonzero(moving) if moving.any() else np.flatnonzero(vis[0])
    return tracks[:, keep], vis[:, keep]


def plan_from_generator(
    generator: FlowGenerator, image: np.ndarray, text: str, box, cfg: EvalConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, visibility) of a generated flow: K samples for the scene, the medoid, its moving points.

    The box is the one the task's object prompt names (from the simulator, as a manifest would give it).
    """
    queries = grid_in_box(box, generator.config.flow.grid_size)
    flows = generator.sample(image, text, queries, num_samples=cfg.num_flows, seed=seed)  # (K, T, N, 3)
    distance = np.linalg.norm(flows[:, None, ..., :2] - flows[None, ..., :2], axis=-1).mean(axis=(2, 3))
    chosen = flows[int(np.argmin(distance.sum(axis=1)))]
    tracks = np.concatenate([queries[None, :, 1:3], chosen[..., :2]]).astype(np.float32)
    vis = np.concatenate([np.ones((1, len(queries)), bool), chosen[..., 2] > 0.5])
    moving = moving_mask(tracks, vis, cfg.moving_threshold_px)
    keep = np.flatnonzero(moving) if moving.any() else np.arange(len(queries))
    return tracks[:, keep], vis[:, keep]


class OnlineOracle:
    """Simulator ground truth for given image points: attached to what they lie on at the start."""

    def __init__(self, env: SimEnv, xy: np.ndarray) -> None:
        self.env = env
        r = env.renderer
        self.camera = env.camera()
        self.points = attach_points(
            env.model,
            env.data,
            self.camera,
            r.depth(env.data),
            r.segmentation(env.data),
            env.task.tracked,
            xy,
        )

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = self.env.renderer
        return self.points.observe(
            self.env.model, self.env.data, self.camera, r.depth(self.env.data), r.segmentation(self.env.data)
        )


def grasp_offset_cm(env: SimEnv) -> float:
    """Distance (cm) from the end effector to the nearest of the task's grasp points."""
    here, _ = env.ee_pose()
    points = env.task.grasp_points(env.model, env.data).values()
    return 100.0 * min((float(np.linalg.norm(p - here)) for p in points), default=float("nan"))


def medoid_chunk(chunks: np.ndarray) -> np.ndarray:
    """(K, T, A) sampled chunks → the one whose positions are closest on average to the others'.

    Unlike the mean, the medoid is always a chunk the policy sampled, so two modes (grasp left or right
    of a handle) are never averaged into a path between them."""
    positions = chunks[..., :3]
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1).mean(axis=-1)
    return chunks[int(np.argmin(distance.sum(axis=1)))]


def build_online_tracker(name: str, args: dict[str, Any]) -> OnlineTracker | None:
    """The rollout's point tracker, built once per evaluation (None = the simulator's oracle)."""
    if name == "oracle":
        return None
    tracker = TRACKERS.build(name, args)
    if not isinstance(tracker, OnlineTracker):
        raise ValueError(f"tracker {name!r} cannot track online; use oracle, lk or cotracker3-online")
    return tracker


def rollout(
    policy: FlowPolicy,
    env: SimEnv,
    view,
    cfg: EvalConfig,
    out_dir: Path | None,
    generator: FlowGenerator | None = None,
    trackers: tuple[Tracker | None, OnlineTracker | None] = (None, None),
) -> EpisodeResult:
    """One closed-loop episode; ``trackers`` = (plan tracker for the demo video, online tracker)."""
    started = time.perf_counter()
    pc = policy.config
    seed = int(view.attrs["seed"])
    env.reset(seed)
    if generator is not None:
        scene = env.render()
        tracks, vis = plan_from_generator(generator, scene, view.task, view.attrs["bbox"], cfg, seed)
    else:
        scene = np.asarray(view.frame(0))
        tracks, vis = plan_from_demo(
            view,
            cfg.plan_source,
            tracker=trackers[0],
            on_object_only=cfg.plan_on_object,
            fill_lost=cfg.fill_lost,
        )
    rng = np.random.default_rng((cfg.seed, seed))
    pick = rng.choice(tracks.shape[1], size=cfg.num_points, replace=tracks.shape[1] < cfg.num_points)
    tracks, vis = tracks[:, pick], vis[:, pick]
    plan_xy, plan_vis, _ = resample_tracks(tracks, vis, pc.plan_frames)
    plan = np.concatenate([plan_xy, plan_vis[..., None]], axis=-1).astype(np.float32)
    first = env.render()
    depth = env.renderer.depth(env.data)
    camera = env.camera()
    h, w = depth.shape
    points_3d = camera.lift(tracks[0], depth).astype(np.float32)
    end_3d = camera.lift(plan_xy[-1], depth).astype(np.float32)
    online = trackers[1]
    if online is None:
        online = OnlineOracle(env, tracks[0])
    else:
        online.reset(first, tracks[0])
    current_xy, current_vis = tracks[0], np.ones(len(pick), bool)
    proprio = [env.proprio()] * pc.obs_horizon
    frames, seen, seen_vis = [first], [current_xy], [current_vis]
    steps = 0
    peak = env.progress()
    grasp_offset, held = float("nan"), False
    for _ in range(cfg.max_chunks):
        obs = {
            "plan": torch.from_numpy(plan)[None],
            "current": torch.from_numpy(
                np.concatenate([current_xy, current_vis[:, None]], -1).astype(np.float32)
            )[None],
            "points_3d": torch.from_numpy(points_3d)[None],
            "end_3d": torch.from_numpy(end_3d)[None],
            "proprio": torch.from_numpy(np.stack(proprio[-pc.obs_horizon :]))[None],
        }
        noise = torch.Generator().manual_seed(seed + steps)
        obs = {k: v.expand(cfg.action_samples, *v.shape[1:]) for k, v in obs.items()}
        chunk = medoid_chunk(policy.predict_action(obs, noise, cfg.guidance_scale).numpy())
        for vector in chunk[: cfg.action_horizon]:
            action = Action.from_vector(vector)
            if np.isnan(grasp_offset) and action.closes:
                grasp_offset = grasp_offset_cm(env)
            env.step(action)
            held = held or env.held is not None
            steps += 1
            peak = {k: max(v, peak[k]) for k, v in env.progress().items()}
            frame = env.render()
            current_xy, current_vis = online.step(frame)
            proprio.append(env.proprio())
            frames.append(frame)
            seen.append(current_xy)
            seen_vis.append(current_vis)
        if env.success():
            break
    success = env.success()
    if out_dir is not None:
        name = f"{env.task.name}_{view.name}_{cfg.tracker}.mp4"
        drawn = draw_tracks(np.stack(frames), np.stack(seen).astype(np.float32), np.stack(seen_vis), trail=6)
        planned = draw_trajectories(scene, tracks.astype(np.float32), vis)  # the plan on its image
        t, hh, ww = drawn.shape[:3]
        side = np.concatenate(
            [np.repeat(planned[None], t, axis=0), np.full((t, hh, 4, 3), 255, np.uint8), drawn], axis=2
        )
        write_video(out_dir / "videos" / name, side, fps=env.scene.control_hz)
    error = final_plan_error(tracks, vis, np.stack(seen), np.stack(seen_vis), (w, h))
    fraction = motion_fraction(tracks, vis, np.stack(seen), np.stack(seen_vis), (w, h))
    return EpisodeResult(
        env.task.name,
        view.name,
        bool(success),
        steps,
        time.perf_counter() - started,
        env.progress(),
        peak,
        error,
        fraction,
        grasp_offset,
        held,
    )


def _mean_of(measures) -> dict[str, float]:
    rows = list(measures)
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]} if rows else {}


def _median(values: list[float]) -> float | None:
    """Median of the finite values; None when there are none (JSON has no NaN)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _format(value: float | None, spec: str) -> str:
    """A median for the Markdown summary: "—" when no episode had one."""
    return "—" if value is None else spec.format(value)


def _describe(measures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in measures.items()) or "—"


def evaluate(cfg: EvalConfig, out_dir: str | Path, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    policy = load_policy(cfg.policy)
    generator = load_generator(cfg.generator) if cfg.plan_source == "generated" else None
    demos = FlowDataset(cfg.demos)
    if demos.kind not in ("sim_demo", "play"):
        raise DatasetError(cfg.demos, f"is a {demos.kind!r} dataset; evaluation needs sim_demo or play")
    plan_tracker = (
        TRACKERS.build(cfg.plan_tracker, cfg.plan_tracker_args) if cfg.plan_source == "tracked" else None
    )
    trackers = (plan_tracker, build_online_tracker(cfg.tracker, cfg.tracker_args))
    results: list[EpisodeResult] = []
    for task in cfg.tasks:
        views = [v for v in demos if v.attrs.get("task_name") == task][-cfg.episodes :]
        env = SimEnv(task, "robot", SceneConfig(image_size=views[0].frame_size if views else (256, 256)))
        for view in tqdm(views, desc=f"eval {task} ({cfg.tracker})", disable=not progress):
            results.append(
                rollout(policy, env, view, cfg, out_dir if cfg.videos else None, generator, trackers)
            )
        env.close()
    summary = {
        "plan_source": cfg.plan_source,
        "tracker": cfg.tracker,
        "tasks": {
            t: {
                "episodes": len(rs),
                "successes": sum(r.success for r in rs),
                "success_rate": sum(r.success for r in rs) / len(rs) if rs else None,
                "mean_steps": float(np.mean([r.steps for r in rs])) if rs else None,
                "mean_progress": _mean_of(r.progress for r in rs),
                "mean_peak": _mean_of(r.peak for r in rs),
                "median_plan_error_px": _median([r.plan_error_px for r in rs]),
                "median_motion_fraction": _median([r.motion_fraction for r in rs]),
                "median_grasp_offset_cm": _median([r.grasp_offset_cm for r in rs]),
                "held": sum(r.held for r in rs),
                "per_episode": [
                    {
                        "demo": r.demo,
                        "success": r.success,
                        "progress": r.progress,
                        "peak": r.peak,
                        "plan_error_px": r.plan_error_px if np.isfinite(r.plan_error_px) else None,
                        "motion_fraction": r.motion_fraction if np.isfinite(r.motion_fraction) else None,
                        "grasp_offset_cm": r.grasp_offset_cm if np.isfinite(r.grasp_offset_cm) else None,
                        "held": r.held,
                    }
                    for r in rs
                ],
            }
            for t in cfg.tasks
            if (rs := [r for r in results if r.task == t])
        },
    }
    stem = f"summary_{cfg.plan_source}_{cfg.tracker}"
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"| task | episodes | success rate ({cfg.tracker} tracking, {cfg.plan_source} plan) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t} | {row['episodes']} | {row['success_rate']:.0%} |" for t, row in summary["tasks"].items()
    ]
    lines += ["", "How far the episodes got (means; peak = the largest value during an episode):", ""]
    lines += [
        f"- {t}: at the end {_describe(row['mean_progress'])}; peak {_describe(row['mean_peak'])}; "
        f"median distance to the plan's last frame {_format(row['median_plan_error_px'], '{:.1f} px')}; "
        f"planned motion made {_format(row['median_motion_fraction'], '{:.0%}')} (median); "
        f"object held in {row['held']} of {row['episodes']}, the gripper first closed "
        f"{_format(row['median_grasp_offset_cm'], '{:.1f} cm')} from the grasp point (median)"
        for t, row in summary["tasks"].items()
    ]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return summary
