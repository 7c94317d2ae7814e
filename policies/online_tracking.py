"""Online tracking in the loop: the plan's points followed frame by frame during a rollout, picked by name.

Per docs/design.md §10 a real tracker sees only what the robot's camera gives: a
:class:`CameraObservation` (RGB, depth, the camera's intrinsics and pose) and the first frame's queries.
``ONLINE_TRACKERS`` holds every online tracker of ``preprocessing`` (``lk``, ``cotracker3-online``: they
read the RGB) under its own name and config, ``rigid-lk`` (``policies/rigid_tracking.py``: RGB and depth),
plus ``oracle``, the simulator's ground truth — the one tracker that reads sim state, which it gets
through :meth:`RolloutTracker.bind`. A new tracker registers a
config dataclass and a factory of a :class:`RolloutTracker` here (or an ``OnlineTracker`` in
``preprocessing.trackers``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from im2flow2act.core.registry import Registry
from im2flow2act.policies.sim.env import SimEnv
from im2flow2act.policies.sim.ground_truth import TrackedPoints, attach_points
from im2flow2act.policies.sim.scene import Camera
from im2flow2act.preprocessing.trackers import TRACKERS, OnlineTracker


class CameraObservation:
    """What the robot's camera gives at one step. Depth (metres along the view axis) and the camera are
    read on first use, so a tracker that needs only RGB costs no depth render."""

    def __init__(
        self,
        rgb: np.ndarray,
        depth: np.ndarray | Callable[[], np.ndarray],
        camera: Camera | Callable[[], Camera],
    ) -> None:
        self.rgb = rgb
        self._depth = depth
        self._camera = camera

    @classmethod
    def from_env(cls, env: SimEnv, rgb: np.ndarray | None = None) -> CameraObservation:
        """The env's camera now (``rgb``: the frame already rendered at this step)."""
        return cls(env.render() if rgb is None else rgb, lambda: env.renderer.depth(env.data), env.camera)

    @property
    def depth(self) -> np.ndarray:
        """float32 (H, W)."""
        if callable(self._depth):
            self._depth = self._depth()
        return self._depth

    @property
    def camera(self) -> Camera:
        """Intrinsics (``camera.intrinsics``) and world pose (``position``, ``rotation``)."""
        if callable(self._camera):
            self._camera = self._camera()
        return self._camera

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


class RolloutTracker(ABC):
    """Follows image points through a rollout; built once per evaluation from its config."""

    def bind(self, env: SimEnv) -> None:  # noqa: B027  (a hook: camera trackers need nothing)
        """Called with each task's environment before its episodes. Only the oracle keeps it: a real
        tracker sees the camera's observations alone."""

    @abstractmethod
    def reset(self, observation: CameraObservation, queries: np.ndarray) -> None:
        """Start following ``queries`` (N, 2) normalised (x, y) from the first observation."""

    @abstractmethod
    def step(self, observation: CameraObservation) -> tuple[np.ndarray, np.ndarray]:
        """The next observation → positions (N, 2) normalised, visibility bool (N,)."""


ONLINE_TRACKERS: Registry[RolloutTracker] = Registry("online tracker")


class CameraTracker(RolloutTracker):
    """A ``preprocessing`` online tracker on the camera's RGB frames."""

    def __init__(self, tracker: OnlineTracker) -> None:
        self.tracker = tracker

    def reset(self, observation: CameraObservation, queries: np.ndarray) -> None:
        self.tracker.reset(observation.rgb, queries)

    def step(self, observation: CameraObservation) -> tuple[np.ndarray, np.ndarray]:
        return self.tracker.step(observation.rgb)


def _is_online(name: str) -> bool:
    factory = TRACKERS.entry(name).factory
    return isinstance(factory, type) and issubclass(factory, OnlineTracker)


def register_camera_trackers() -> None:
    """Register every online tracker of ``preprocessing.trackers`` not registered here yet, under its name
    and config (run on import, and again before building, for trackers registered later)."""
    for name in TRACKERS.names():
        if name not in ONLINE_TRACKERS.names() and _is_online(name):
            entry = TRACKERS.entry(name)
            ONLINE_TRACKERS.register(name, entry.config_cls)(
                lambda config, name=name: CameraTracker(TRACKERS.build(name, config))
            )


@dataclass
class OracleConfig:
    """Nothing to set: the simulator knows where every point is."""


@ONLINE_TRACKERS.register("oracle", OracleConfig)
class OracleTracker(RolloutTracker):
    """Simulator ground truth: each query is attached to what it lies on at the start (a body, the cloth,
    the world) and projected every step. An upper bound, never the headline (docs/design.md §10)."""

    def __init__(self, config: OracleConfig | None = None) -> None:
        self.config = config or OracleConfig()
        self.env: SimEnv | None = None
        self._camera: Camera | None = None
        self._points: TrackedPoints | None = None

    def bind(self, env: SimEnv) -> None:
        self.env = env

    def reset(self, observation: CameraObservation, queries: np.ndarray) -> None:
        env = self._bound()
        self._camera = observation.camera
        depth, seg = observation.depth, env.renderer.segmentation(env.data)
        self._points = attach_points(env.model, env.data, self._camera, depth, seg, env.task.tracked, queries)

    def step(self, observation: CameraObservation) -> tuple[np.ndarray, np.ndarray]:
        env = self._bound()
        if self._points is None:
            raise RuntimeError("call reset(observation, queries) before step(observation)")
        depth, seg = observation.depth, env.renderer.segmentation(env.data)
        return self._points.observe(env.model, env.data, self._camera, depth, seg)

    def _bound(self) -> SimEnv:
        if self.env is None:
            raise RuntimeError("the oracle reads the simulator: call bind(env) first")
        return self.env


def check_online_tracker(name: str) -> None:
    """Fail clearly, before any work, unless ``name`` is a registered online tracker."""
    register_camera_trackers()
    if name not in ONLINE_TRACKERS.names() and name in TRACKERS.names():
        raise ValueError(
            f"tracker {name!r} cannot track online; online trackers: {', '.join(ONLINE_TRACKERS.names())}"
        )
    ONLINE_TRACKERS.entry(name)


def build_online_tracker(name: str, args: dict[str, Any] | None = None) -> RolloutTracker:
    """The rollout's tracker by name; an offline tracker is refused with the online ones listed."""
    check_online_tracker(name)
    return ONLINE_TRACKERS.build(name, args)


register_camera_trackers()

from im2flow2act.policies import rigid_tracking  # noqa: E402, F401  (registers rigid-lk)
