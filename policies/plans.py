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

from im2flow2act.core.registry import Registry
from im2flow2act.im2flow.generator import FlowGenerator, load_generator
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
) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, visibility) of a generated flow: ``num_flows`` samples for the scene, the medoid (closest to
    the others), its moving points. The box is the one the task's object prompt names. ``keep`` (bool, one
    per point of the generator's query grid) limits the plan to those points, e.g. the ones on the object's
    first-frame mask; the generator still sees the whole grid it was trained on. A point is moving when it
    moves more than ``moving_threshold_px`` and more than ``moving_fraction`` of the plan's 90th-percentile
    motion."""
    queries = grid_in_box(box, generator.config.flow.grid_size)
    keep = np.ones(len(queries), bool) if keep is None else np.asarray(keep, bool)
    if keep.shape != (len(queries),):
        raise ValueError(f"keep must have one entry per query point ({len(queries)}), got {keep.shape}")
    flows = generator.sample(image, text, queries, num_samples=num_flows, seed=seed)  # (K, T, N, 3)
    distance = np.linalg.norm(flows[:, None, ..., :2] - flows[None, ..., :2], axis=-1).mean(axis=(2, 3))
    chosen = flows[int(np.argmin(distance.sum(axis=1)))]
    tracks = np.concatenate([queries[None, :, 1:3], chosen[..., :2]]).astype(np.float32)
    vis = np.concatenate([np.ones((1, len(queries)), bool), chosen[..., 2] > 0.5])
    tracks, vis = tracks[:, keep], vis[:, keep]
    span = motion_span_px(tracks, vis)
    cut = max(moving_threshold_px, moving_fraction * float(np.percentile(span, 90)))
    kept = _kept(span > cut, np.ones(tracks.shape[1], bool))
    return tracks[:, kept], vis[:, kept]


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
        keep = None
        if c.plan_on_object:
            keep = on_object_mask(view, grid_in_box(box, self.generator.config.flow.grid_size))
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
        )
        return Plan(tracks, vis, scene)
