"""``rigid-lk``: Lucas–Kanade held on the object by depth and a robust rigid fit, for tracking in the loop.

Plain LK (``lk``) follows image patches, so when the mug is lifted and tilted its points slide onto the
table or the gripper, or are lost, and the policy is steered by them. This tracker uses what else the
robot's camera gives (docs/design.md §10): the depth image and the camera's intrinsics and pose. It never
reads the simulator.

Each step:

1. LK, frame to frame with a forward–backward check, moves every point that was visible.
2. The tracked points are lifted into 3-D (world frame) with the current depth image; a point whose depth
   jumped away from where it was predicted (it slid onto the table, the background or the gripper) is
   rejected.
3. The object's rigid motion from the first frame's 3-D points to the current ones is fitted robustly:
   RANSAC over minimal 3-point sets (plus the last motion as a hypothesis), then a least-squares
   (Kabsch) refit on the inliers. With too few inliers the last motion is kept.
4. Every point, lost ones too, is moved by the motion and projected. It is visible when it lands in the
   image and the depth image there does not show a surface in front of it (the convention of the
   simulator's ground truth, ``policies/sim/ground_truth.py``).
5. Points that were lost, rejected or hidden are re-seeded at their projections, so LK picks them up
   again; inliers keep their own LK positions (so drift is averaged over many independent tracks).

Cloth is not rigid, and a rigid fit would pin its moving half to the still one. With ``motion="auto"``
(the default) the first frame decides, from depth alone: points that lie on one thin, level plane (a
cloth or a sheet lying on the table) are followed locally, everything else (the mug, the drawer, whose
front is a plane but an upright one) rigidly. Locally, each accepted point keeps its own lifted LK
measurement when it agrees with its neighbours, and every other point moves with the median 3-D
displacement of its nearest accepted neighbours (neighbours by first-frame 3-D distance). A per-frame
choice by how much of the measurements one rigid motion explains does not work: a fold hides the moving
half, so the still half keeps that share high, while an opening drawer's points caught on the cabinet
lower it.

Pixel quantities (LK window, forward–backward threshold) are stated for a 256-pixel frame and scaled
(docs/design.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from im2flow2act.policies.online_tracking import ONLINE_TRACKERS, CameraObservation, RolloutTracker
from im2flow2act.preprocessing.trackers.lucas_kanade import forward_backward, pyramid_params, to_gray
from im2flow2act.preprocessing.tracks import pixel_indices, to_normalized, to_pixels

MOTIONS = ("auto", "rigid", "local")


@dataclass
class RigidLKConfig:
    motion: str = "auto"
    """``rigid``: one rigid motion for all points; ``local``: per-point neighbour motion (cloth);
    ``auto``: local when the first frame's points lie on a thin level plane, rigid otherwise."""
    win_size: int = 21
    """LK window side (pixels of a 256 frame; scaled, odd, at least 7)."""
    max_level: int = 3
    fb_threshold_px: float = 1.0
    """Largest LK forward–backward error (pixels of a 256 frame) for a measurement to count."""
    min_eigen_threshold: float = 1e-4
    depth_jump_m: float = 0.03
    """A measurement whose depth differs this much from the point's predicted depth slid off the object."""
    ransac_iterations: int = 100
    inlier_threshold_m: float = 0.01
    """A measurement is an inlier of a rigid motion when the moved first-frame point lies this close."""
    min_inliers: int = 6
    """Fewer inliers than this: the last motion is kept."""
    flat_thickness_m: float = 0.005
    """``auto``: the first frame's points count as one thin plane when their spread off it is below this."""
    level_tilt_deg: float = 30.0
    """``auto``: ... and that plane is level when its normal is within this of the world's up (+z)."""
    neighbours: int = 8
    """``local``: how many accepted neighbours move a point."""
    local_threshold_m: float = 0.02
    """``local``: a measurement this far from its neighbours' motion is rejected."""
    depth_tolerance_m: float = 0.015
    """A point is hidden when the depth image shows a surface this much in front of it."""
    seed: int = 0
    """RANSAC's random generator is reseeded with this at every reset: same inputs, same tracks."""

    def __post_init__(self) -> None:
        if self.motion not in MOTIONS:
            raise ValueError(f"motion must be one of {list(MOTIONS)}, got {self.motion!r}")


@ONLINE_TRACKERS.register("rigid-lk", RigidLKConfig)
class RigidLKTracker(RolloutTracker):
    """LK measurements, lifted with depth, regularised by a robust rigid fit (or a local one for cloth)."""

    def __init__(self, config: RigidLKConfig | None = None) -> None:
        self.config = config or RigidLKConfig()
        self.mode = "rigid"
        """``rigid`` or ``local``: the motion model, chosen at reset."""
        self.last_mode = "rigid"
        """What the last step did: ``rigid``, ``local`` or ``kept`` (too few inliers: the last motion)."""

    # ----- the RolloutTracker interface ---------------------------------------------------------
    def reset(self, observation: CameraObservation, queries: np.ndarray) -> None:
        xy = np.asarray(queries, np.float32)[:, -2:]
        self._size = observation.size
        self._set_lk_params(self._size)
        self._rng = np.random.default_rng(self.config.seed)
        self._gray = to_gray(observation.rgb)
        self._points0 = observation.camera.lift(xy, observation.depth)  # (N, 3) world, first frame
        self._world = self._points0.copy()
        self._rotation, self._translation = np.eye(3), np.zeros(3)
        self._px = to_pixels(xy, self._size).astype(np.float32)  # where LK looks for each point next
        self._visible = np.ones(len(xy), bool)
        d0 = np.linalg.norm(self._points0[:, None] - self._points0[None], axis=-1)
        self._by_distance = np.argsort(d0, axis=1)  # each point's first-frame neighbours, nearest first
        self.mode = self.config.motion if self.config.motion != "auto" else self._choose_motion()

    def step(self, observation: CameraObservation) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_points0"):
            raise RuntimeError("call reset(observation, queries) before step(observation)")
        c = self.config
        gray, depth, camera = to_gray(observation.rgb), observation.depth, observation.camera
        measured_px, tracked = self._lk(self._gray, gray, self._px)
        measured_xy = to_normalized(measured_px, self._size)
        measured = camera.lift(np.clip(measured_xy, 0.0, 1.0), depth)
        seen_depth = _depth_at(depth, measured_xy, self._size)
        _, predicted_depth = camera.project(self._world)
        accepted = tracked & self._visible & (np.abs(seen_depth - predicted_depth) < c.depth_jump_m)

        if self.mode == "local":
            self._world, keep = self._local_motion(accepted, measured)
            self.last_mode = "local"
        else:
            rotation, translation, inliers = self._fit_rigid(accepted, measured)
            if inliers.sum() >= c.min_inliers:
                self._rotation, self._translation = rotation, translation
                self.last_mode = "rigid"
            else:
                self.last_mode = "kept"
            self._world = self._points0 @ self._rotation.T + self._translation
            keep = inliers if self.last_mode == "rigid" else np.zeros_like(inliers)

        xy, point_depth = camera.project(self._world)
        visible = _visible(xy, point_depth, depth, self._size, c.depth_tolerance_m)
        # inliers go on from their own LK positions; every other point is re-seeded at its projection
        self._px = np.where((keep & visible)[:, None], measured_px, to_pixels(xy, self._size)).astype(
            np.float32
        )
        self._visible = visible
        self._gray = gray
        return np.clip(xy, 0.0, 1.0).astype(np.float32), visible

    # ----- parts ---------------------------------------------------------------------------------
    def _choose_motion(self) -> str:
        """``local`` when the first frame's points lie on one thin, level plane (cloth on the table)."""
        c = self.config
        return "local" if lies_flat(self._points0, c.flat_thickness_m, c.level_tilt_deg) else "rigid"

    def _set_lk_params(self, size: tuple[int, int]) -> None:
        c, scale = self.config, size[0] / 256
        win = max(7, int(round(c.win_size * scale)) | 1)
        self._fb_px = c.fb_threshold_px * scale
        self._lk_params = pyramid_params(win, c.max_level, c.min_eigen_threshold)

    def _lk(self, prev: np.ndarray, frame: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame-to-frame LK with a forward–backward check: new positions (N, 2) px and which passed."""
        p1, valid, fb_error = forward_backward(prev, frame, p0, self._lk_params)
        return np.where(valid[:, None], p1, p0), valid & (fb_error < self._fb_px)

    def _fit_rigid(
        self, accepted: np.ndarray, measured: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RANSAC over 3-point sets and the last motion, refit on the inliers: (R, t, inlier mask (N,))."""
        c = self.config
        idx = np.flatnonzero(accepted)
        src, dst = self._points0[idx], measured[idx]
        hypotheses_r, hypotheses_t = [self._rotation[None]], [self._translation[None]]
        if len(idx) >= 3:
            triples = np.stack(
                [self._rng.choice(len(idx), 3, replace=False) for _ in range(c.ransac_iterations)]
            )
            r, t = kabsch(src[triples], dst[triples])
            hypotheses_r.append(r)
            hypotheses_t.append(t)
        rs, ts = np.concatenate(hypotheses_r), np.concatenate(hypotheses_t)
        residual = np.linalg.norm(np.einsum("hij,nj->hni", rs, src) + ts[:, None] - dst[None], axis=-1)
        best = int(np.argmax((residual < c.inlier_threshold_m).sum(axis=1)))
        rotation, translation = rs[best], ts[best]
        for _ in range(2):  # refit on the inliers, then once more on the refit's inliers
            inl = np.linalg.norm(src @ rotation.T + translation - dst, axis=1) < c.inlier_threshold_m
            if inl.sum() < 3:
                break
            r, t = kabsch(src[inl][None], dst[inl][None])
            rotation, translation = r[0], t[0]
        mask = np.zeros(len(accepted), bool)
        mask[idx] = np.linalg.norm(src @ rotation.T + translation - dst, axis=1) < c.inlier_threshold_m
        return rotation, translation, mask

    def _local_motion(self, accepted: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Deforming frame: each point moves with the median displacement of its nearest accepted
        neighbours; an accepted point that agrees with them keeps its own measurement."""
        c = self.config
        displacement = measured - self._points0
        world = self._world.copy()
        if not accepted.any():
            return world, np.zeros_like(accepted)
        neighbour_of = np.where(accepted[self._by_distance], self._by_distance, -1)
        keep = np.zeros_like(accepted)
        for i in range(len(world)):
            near = neighbour_of[i][neighbour_of[i] >= 0]
            near = near[near != i][: c.neighbours]
            if len(near) == 0:
                continue
            moved = self._points0[i] + np.median(displacement[near], axis=0)
            if accepted[i] and np.linalg.norm(measured[i] - moved) < c.local_threshold_m:
                world[i], keep[i] = measured[i], True
            else:
                world[i] = moved
        return world, keep


def lies_flat(points: np.ndarray, thickness_m: float = 0.005, level_tilt_deg: float = 30.0) -> bool:
    """Whether 3-D points (N, 3), world frame with z up, lie on one thin plane within ``level_tilt_deg`` of
    level: a cloth or a sheet on the table, not a rigid body (a drawer's front is a plane, but upright)."""
    if len(points) < 3:
        return False
    _, spread, axes = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)
    thickness = spread[-1] / np.sqrt(len(points))  # the points' standard deviation off their plane
    level = abs(axes[-1, 2]) > np.cos(np.radians(level_tilt_deg))
    return bool(thickness < thickness_m and level)


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid motions (B, 3, 3), (B, 3) taking point sets src (B, K, 3) onto dst (B, K, 3)."""
    cs, cd = src.mean(axis=1, keepdims=True), dst.mean(axis=1, keepdims=True)
    h = np.einsum("bki,bkj->bij", src - cs, dst - cd)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("bji,bkj->bik", vt, u)))  # det(V Uᵀ): −1 would be a reflection
    fix = np.ones((len(src), 3))
    fix[:, 2] = np.where(d == 0, 1.0, d)
    rotation = np.einsum("bji,bj,bkj->bik", vt, fix, u)  # V diag(1, 1, d) Uᵀ
    translation = cd[:, 0] - np.einsum("bij,bj->bi", rotation, cs[:, 0])
    return rotation, translation


def _depth_at(depth: np.ndarray, xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    px = pixel_indices(np.clip(xy, 0.0, 1.0), size)
    return depth[px[:, 1], px[:, 0]]


def _visible(
    xy: np.ndarray, point_depth: np.ndarray, depth: np.ndarray, size: tuple[int, int], tolerance: float
) -> np.ndarray:
    """In the image, in front of the camera, and no surface in the depth image in front of it."""
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < 1) & (xy[:, 1] >= 0) & (xy[:, 1] < 1) & (point_depth > 0)
    return inside & (_depth_at(depth, xy, size) > point_depth - tolerance)
