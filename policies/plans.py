"""Plan sources: where an evaluation episode's object flow comes from, picked by name.

A plan is the flow the policy is asked to follow: the tracks (T, N, 2) and visibility (T, N) of the object's
moving points, and the image they start on. Registered sources (``PLAN_SOURCES``):

- ``tracked``: a tracker run over the demonstration's video — all a human video gives;
- ``ground_truth``: the simulator's own tracks of the demonstration (an upper bound);
- ``generated``: the flow generator, from the rendered initial scene and the instruction.

A new source is a config dataclass and a factory, ``@PLAN_SOURCES.register("name", NameConfig)``, whose
product answers ``plan(view, env)``; evaluation then takes ``plan_source=name``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from im2flow2act.core.config import check_range
from im2flow2act.core.registry import Registry
from im2flow2act.im2flow.generator import FlowGenerator, load_generator
from im2flow2act.policies.rigid_tracking import lies_flat
from im2flow2act.policies.sim.env import SimEnv
from im2flow2act.policies.sim.record import EMBODIMENT_LABEL
from im2flow2act.preprocessing.dataset import EpisodeView
from im2flow2act.preprocessing.trackers import TRACKERS, Tracker
from im2flow2act.preprocessing.tracks import (
    fill_lost_points,
    grid_in_box,
    motion_span_px,
    moving_mask,
    pixel_indices,
)


@dataclass
class Plan:
    """One episode's plan: normalised tracks (T, N, 2), visibility (T, N), and the frame they start on."""

    tracks: np.ndarray
    visibility: np.ndarray
    image: np.ndarray
    """uint8 (H, W, 3): the demonstration's first frame, or the rendered scene a generated flow starts on."""

    def subset(self, index: np.ndarray) -> Plan:
        return Plan(self.tracks[:, index], self.visibility[:, index], self.image)


class PlanSource(ABC):
    """Makes the plan of an episode; built once per evaluation from its config."""

    @abstractmethod
    def plan(self, view: EpisodeView, env: SimEnv) -> Plan:
        """The plan for demonstration ``view``; ``env`` is already reset to the demonstration's layout."""


PLAN_SOURCES: Registry[PlanSource] = Registry("plan source")


def _kept(moving: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The indices of the moving points, or of the ``fallback`` ones when none moves."""
    return np.flatnonzero(moving) if moving.any() else np.flatnonzero(fallback)


def on_object_mask(view: EpisodeView, queries: np.ndarray) -> np.ndarray:
    """bool (N,): which queries lie on a tracked object in the first frame's segmentation (all when the
    episode has none, or when none does). A box also holds table and background, whose points pull the
    policy's object frame (their mean 3-D position) off the object."""
    if "segmentation" not in set(view.keys()):
        return np.ones(len(queries), bool)
    labels = view.array("segmentation", 0)
    h, w = labels.shape
    px = pixel_indices(queries[:, 1:3], (w, h))
    label = labels[px[:, 1], px[:, 0]]
    keep = (label >= 0) & (label != EMBODIMENT_LABEL)
    return keep if keep.any() else np.ones(len(queries), bool)


def on_object(view: EpisodeView, queries: np.ndarray) -> np.ndarray:
    """The queries on the object in the first frame (``on_object_mask``)."""
    return queries[on_object_mask(view, queries)]


def moving_points(tracks: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A demonstration's moving points visible at the start (its visible ones when none moves)."""
    moving = moving_mask(tracks, vis) & vis[0]
    keep = _kept(moving, vis[0])
    return tracks[:, keep], vis[:, keep]


def plan_from_demo(
    view: EpisodeView,
    source: str,
    grid: int = 32,
    tracker: Tracker | None = None,
    on_object_only: bool = False,
    fill_lost: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, visibility) of the demo's moving object points, from its video (``tracked``) or from the
    simulator (``ground_truth``)."""
    if source not in ("tracked", "ground_truth"):
        raise ValueError(f"plan_from_demo: source must be tracked or ground_truth, got {source!r}")
    if source == "ground_truth":
        return moving_points(view.tracks, view.visibility)
    return track_demo(view, tracker or TRACKERS.build("lk"), grid, on_object_only, fill_lost)


def track_demo(
    view: EpisodeView, tracker: Tracker, grid: int, on_object_only: bool, fill_lost: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Track a grid in the demo's object box through its video; its moving points."""
    frames = np.asarray(view.frames[...])
    queries = grid_in_box(view.attrs["bbox"], grid)
    if on_object_only:
        queries = on_object(view, queries)
    tracks, vis = tracker.track(frames, queries)
    if fill_lost:
        tracks = fill_lost_points(tracks, vis)
    return moving_points(tracks, vis)


def upsample_grid_flow(box, flow: np.ndarray, dense_grid: int) -> np.ndarray:
    """A flow (T, g*g, 3) of ``grid_in_box(box, g)``'s points resampled onto ``grid_in_box(box, dense_grid)``:
    each dense point moves by the bilinear blend of its coarse neighbours' displacements (visibility blended
    and cut at 0.5). The generator's grid is the one it was trained on; a denser plan gives the policy the
    point density its play had, instead of a few points each repeated several times."""
    steps, n, _ = flow.shape
    grid = round(n**0.5)
    if grid * grid != n:
        raise ValueError(f"flow must hold a square grid of points, got {n}")
    coarse = grid_in_box(box, grid)[:, 1:3]
    dense = grid_in_box(box, dense_grid)[:, 1:3]
    field = np.concatenate([flow[..., :2] - coarse[None], flow[..., 2:3]], axis=-1)  # (T, N, 3)
    field = torch.from_numpy(field.astype(np.float32)).reshape(steps, grid, grid, 3).permute(0, 3, 1, 2)
    # grid_sample's (x, y) in [-1, 1] with align_corners=False puts -1 and 1 on the outer cell edges, so a
    # cell centre of either grid maps to 2 * its box fraction - 1.
    centres = (torch.arange(dense_grid, dtype=torch.float32) + 0.5) / dense_grid * 2 - 1
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    where = torch.stack([gx, gy], dim=-1)[None].expand(steps, -1, -1, -1)
    sampled = F.grid_sample(field, where, mode="bilinear", padding_mode="border", align_corners=False)
    sampled = sampled.permute(0, 2, 3, 1).reshape(steps, dense_grid * dense_grid, 3).numpy()
    out = np.empty_like(sampled)
    out[..., :2] = dense[None] + sampled[..., :2]
    out[..., 2] = (sampled[..., 2] > 0.5).astype(np.float32)
    return out


PLAN_SMOOTHING = ("none", "affine", "neighbours")


def smooth_plan(tracks: np.ndarray, vis: np.ndarray, method: str, neighbours: int = 8) -> np.ndarray:
    """Tracks (T, N, 2) with each frame's point-to-point noise of a generated flow taken out. The generator
    draws every point's path on its own, so the points of one rigid part scatter around their common motion
    (docs/results/policies.md). ``affine``: each frame is the first one moved by the 2-D affine map fitted
    (least squares, refitted without the points it fits worst) to the visible points: one rigid part, seen
    from afar.
    ``neighbours``: each point moves by the median displacement of its ``neighbours`` nearest first-frame
    neighbours (itself included) — local, so a folding cloth keeps its fold."""
    if method not in PLAN_SMOOTHING:
        raise ValueError(f"plan smoothing must be one of {PLAN_SMOOTHING}, got {method!r}")
    if method == "none" or tracks.shape[1] < 3:
        return tracks
    start = tracks[0]
    out = tracks.copy()
    if method == "neighbours":
        k = min(neighbours, tracks.shape[1])
        near = np.argsort(np.linalg.norm(start[:, None] - start[None], axis=-1), axis=1)[:, :k]  # (N, k)
        out[1:] = start[None] + np.median((tracks - start)[1:, near], axis=2)
        return out
    return affine_paths(tracks, vis, start)


def affine_paths(tracks: np.ndarray, vis: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Paths (T, M, 2) of first-frame points ``targets`` (M, 2) moved, frame by frame, by the 2-D affine map
    fitted to the points of ``tracks`` (T, N, 2) visible at the start and then (least squares, refitted
    without the points it fits worst)."""
    start = tracks[0]
    design = np.concatenate([start, np.ones((len(start), 1))], axis=1)  # (N, 3): x, y, 1
    moved = np.concatenate([targets, np.ones((len(targets), 1))], axis=1)
    out = np.empty((len(tracks), len(targets), 2), np.float64)
    out[0] = targets
    for t in range(1, len(tracks)):
        use = vis[t] & vis[0]
        if use.sum() < 3:
            use = np.ones(len(start), bool)
        for _ in range(2):  # least squares, then again without the points it fits worst
            affine = np.linalg.lstsq(design[use], tracks[t, use], rcond=None)[0]  # (3, 2)
            error = np.linalg.norm(design @ affine - tracks[t], axis=1)
            trimmed = use & (error <= 2.5 * np.median(error[use]) + 1e-9)
            if trimmed.sum() < 3:
                break
            use = trimmed
        out[t] = moved @ affine
    return out.astype(tracks.dtype)


def plan_from_generator(
    generator: FlowGenerator,
    image: np.ndarray,
    text: str,
    box,
    num_flows: int,
    moving_threshold_px: float,
    seed: int,
    keep: np.ndarray | None = None,
    moving_fraction: float = 0.0,
    dense_grid: int | None = None,
    smoothing: str = "none",
    visibility_threshold: float = 0.0,
    complete_rigid: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, visibility) of a generated flow: ``num_flows`` samples for the scene, the medoid (closest to
    the others), its moving points. The box is the one the task's object prompt names. ``dense_grid``
    resamples the medoid onto a denser grid in the box (``upsample_grid_flow``). ``keep`` (bool, one per
    point of the plan's grid: the dense one when given, else the generator's) limits the plan to those
    points, e.g. the ones on the object's first-frame mask; the generator still sees the whole grid it was
    trained on. A point is moving when it moves more than ``moving_threshold_px`` and more than
    ``moving_fraction`` of the plan's 90th-percentile motion."""
    queries = grid_in_box(box, generator.config.flow.grid_size)
    flows = generator.sample(image, text, queries, num_flows, seed, visibility_threshold)  # (K, T, N, 3)
    distance = np.linalg.norm(flows[:, None, ..., :2] - flows[None, ..., :2], axis=-1).mean(axis=(2, 3))
    chosen = flows[int(np.argmin(distance.sum(axis=1)))]
    if dense_grid:
        queries, chosen = grid_in_box(box, dense_grid), upsample_grid_flow(box, chosen, dense_grid)
    keep = np.ones(len(queries), bool) if keep is None else np.asarray(keep, bool)
    if keep.shape != (len(queries),):
        raise ValueError(f"keep must have one entry per plan point ({len(queries)}), got {keep.shape}")
    tracks = np.concatenate([queries[None, :, 1:3], chosen[..., :2]]).astype(np.float32)
    vis = np.concatenate([np.ones((1, len(queries)), bool), chosen[..., 2] > 0.5])
    tracks, vis = tracks[:, keep], vis[:, keep]
    span = motion_span_px(tracks, vis)
    cut = max(moving_threshold_px, moving_fraction * float(np.percentile(span, 90)))
    kept = _kept(span > cut, np.ones(tracks.shape[1], bool))
    if complete_rigid and 3 <= len(kept) < tracks.shape[1]:
        # every kept point moves with its object's one motion, fitted to the points the flow moves
        return affine_paths(tracks[:, kept], vis[:, kept], tracks[0]).astype(np.float32), vis
    tracks, vis = tracks[:, kept], vis[:, kept]
    return smooth_plan(tracks, vis, smoothing).astype(np.float32), vis


# ----- the registered sources -----------------------------------------------------------------------------
@dataclass
class TrackedPlanConfig:
    plan_tracker: str = "lk"
    """The offline tracker run over the demo video (a ``TRACKERS`` name: lk, cotracker3)."""
    plan_tracker_args: dict[str, Any] = field(default_factory=lambda: {"win_size": 15})
    """Its config. LK's window is smaller than its default: it straddles the drawer front's edge less
    (docs/results/policies.md)."""
    plan_on_object: bool = True
    """Track only the grid points on the object in the demo's first-frame segmentation (what a SAM mask
    gives on a human video), not the whole box."""
    fill_lost: bool = True
    """Points the tracker lost move with their visible neighbours (``preprocessing.tracks.fill_lost_points``),
    like the simulator's tracks behind an occluder, which the policy trained on."""
    grid: int = 32
    """Side of the query grid in the demo's object box."""


@PLAN_SOURCES.register("tracked", TrackedPlanConfig)
class TrackedPlan(PlanSource):
    """A tracker on the demonstration's video: the plan a human video gives."""

    def __init__(self, config: TrackedPlanConfig) -> None:
        self.config = config
        self.tracker = TRACKERS.build(config.plan_tracker, config.plan_tracker_args)

    def plan(self, view: EpisodeView, env: SimEnv) -> Plan:
        c = self.config
        tracks, vis = track_demo(view, self.tracker, c.grid, c.plan_on_object, c.fill_lost)
        return Plan(tracks, vis, view.frame(0))


@dataclass
class GroundTruthPlanConfig:
    """Nothing to set: the demonstration's recorded simulator tracks."""


@PLAN_SOURCES.register("ground_truth", GroundTruthPlanConfig)
class GroundTruthPlan(PlanSource):
    """The simulator's own flow of the demonstration: an upper bound on what a tracker can give."""

    def __init__(self, config: GroundTruthPlanConfig) -> None:
        self.config = config

    def plan(self, view: EpisodeView, env: SimEnv) -> Plan:
        tracks, vis = moving_points(view.tracks, view.visibility)
        return Plan(tracks, vis, view.frame(0))


@dataclass
class GeneratedPlanConfig:
    generator: str = "models/generator-full"
    """The exported flow generator."""
    num_flows: int = 4
    """Flows sampled per episode; the medoid (closest to the others) is executed."""
    moving_threshold_px: float = 10.0
    """Points whose flow moves less than this (256-pixel frame) are dropped (as the reference does)."""
    moving_fraction: float = 0.0
    """Points that move less than this fraction of the plan's 90th-percentile motion are dropped too: the
    generator smears a little motion onto the still part of a drawer or a cloth, which the fixed threshold
    keeps and the policy then reads as an object that hardly moves."""
    plan_on_object: bool = True
    """Follow only the generated flow of grid points on the object in the scene's first-frame segmentation
    (what a SAM mask of the named object gives), not the table and background in its box."""
    dense_grid: int = 0
    """When > 0, resample the generated flow onto this denser grid in the box before the on-object and
    moving cuts (``upsample_grid_flow``); 0 keeps the generator's own grid."""
    visibility_threshold: float = 0.0
    """Where the generator's ±1 visibility channel is cut (``im2flow.flow_image.decode``)."""
    complete_rigid: bool = True
    """Keep every point on the object (``plan_on_object``), each moved by the 2-D affine motion fitted to
    the points the generated flow moves: the object as one rigid part. The generator moves only a patch of
    a drawer's textureless front, and the policy, anchored on the plan's points, then grasps below the
    handle (docs/results/policies.md). Skipped where the object's
    first-frame points, lifted with the robot camera's depth, lie flat on the table (a cloth, which does
    not move as one part: ``rigid_tracking.lies_flat``)."""
    smoothing: str = "none"
    """Take the generator's point-to-point noise out of the plan (``smooth_plan``): none, affine (one rigid
    part), neighbours (local). A completed plan (``complete_rigid``) is already one affine motion."""

    def __post_init__(self) -> None:
        if self.smoothing not in PLAN_SMOOTHING:
            raise ValueError(f"smoothing must be one of {PLAN_SMOOTHING}, got {self.smoothing!r}")
        check_range("dense_grid", self.dense_grid, low=0)


@PLAN_SOURCES.register("generated", GeneratedPlanConfig)
class GeneratedPlan(PlanSource):
    """The flow generator on the rendered initial scene and the instruction (language-conditioned)."""

    def __init__(self, config: GeneratedPlanConfig) -> None:
        self.config = config
        self.generator = load_generator(config.generator)

    def plan(self, view: EpisodeView, env: SimEnv) -> Plan:
        c = self.config
        scene = env.render()
        seed = int(view.attrs["seed"])
        box = view.attrs["bbox"]
        queries = grid_in_box(box, c.dense_grid or self.generator.config.flow.grid_size)
        keep = on_object_mask(view, queries) if c.plan_on_object else np.ones(len(queries), bool)
        complete = c.complete_rigid and not self._lies_flat(env, queries[keep, 1:3])
        tracks, vis = plan_from_generator(
            self.generator,
            scene,
            view.task,
            box,
            c.num_flows,
            c.moving_threshold_px,
            seed,
            keep,
            c.moving_fraction,
            c.dense_grid or None,
            c.smoothing,
            c.visibility_threshold,
            complete,
        )
        return Plan(tracks, vis, scene)

    @staticmethod
    def _lies_flat(env: SimEnv, xy: np.ndarray) -> bool:
        """Whether the plan's object (its first-frame points ``xy``, lifted with the camera's depth) lies
        flat on the table."""
        return lies_flat(env.camera().lift(xy, env.renderer.depth(env.data)))
