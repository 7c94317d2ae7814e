"""Ground-truth object tracks from the simulator.

Queries are sampled like a tracker's would be: a uniform grid inside each tracked object's mask in the
first rendered frame (``im2flow2act.preprocessing.tracks.grid_in_mask``), so every query starts visible on the
object's surface. Each is back-projected with the depth image and attached to its body (rigid objects,
the drawer) or to its nearest cloth vertex (the flex). Every later step the attached points are projected
through the camera; a point is visible when it is inside the image, the rendered depth at its pixel
matches its own depth, and the segmentation there is its own object (the arm or the object itself in
front of it → not visible).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from im2flow2act.policies.sim.scene import Camera
from im2flow2act.preprocessing.tracks import grid_in_mask, pixel_indices

GEOM, FLEX = int(mujoco.mjtObj.mjOBJ_GEOM), int(mujoco.mjtObj.mjOBJ_FLEX)
ROBOT_BODIES_ROOT = "ur5e_base"
SPHERE_BODY = "sphere_agent"
DEPTH_TOLERANCE = 0.01
"""How far (m) the rendered surface may be in front of a point before the point counts as hidden."""


def object_labels(model: mujoco.MjModel, segmentation: np.ndarray, objects: tuple[str, ...]) -> np.ndarray:
    """Per-pixel label: index into ``objects`` (a body, its subtree, or the flex ``cloth``), −1 otherwise."""
    ids, types = segmentation[..., 0], segmentation[..., 1]
    labels = np.full(ids.shape, -1, np.int32)
    geom_owner = _geom_owner(model, objects)
    for k, name in enumerate(objects):
        if _is_flex(model, name):
            flex_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_FLEX, name)
            labels[(types == FLEX) & (ids == flex_id)] = k
        else:
            geoms = np.flatnonzero(geom_owner == k)
            labels[(types == GEOM) & np.isin(ids, geoms)] = k
    return labels


def embodiment_mask(model: mujoco.MjModel, segmentation: np.ndarray) -> np.ndarray:
    """Pixels of the robot arm and gripper, or of the sphere agent."""
    bodies = [
        b
        for b in range(model.nbody)
        if _in_subtree(model, b, ROBOT_BODIES_ROOT) or model.body(b).name == SPHERE_BODY
    ]
    geoms = np.flatnonzero(np.isin(model.geom_bodyid, bodies))
    return (segmentation[..., 1] == GEOM) & np.isin(segmentation[..., 0], geoms)


def _is_flex(model: mujoco.MjModel, name: str) -> bool:
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_FLEX, name) >= 0


def _in_subtree(model: mujoco.MjModel, body: int, root: str) -> bool:
    root_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, root)
    if root_id < 0:
        return False
    while body > 0:
        if body == root_id:
            return True
        body = model.body_parentid[body]
    return False


def _geom_owner(model: mujoco.MjModel, objects: tuple[str, ...]) -> np.ndarray:
    owner = np.full(model.ngeom, -1, np.int32)
    for k, name in enumerate(objects):
        if _is_flex(model, name):
            continue
        for g in range(model.ngeom):
            if _in_subtree(model, int(model.geom_bodyid[g]), name):
                owner[g] = k
    return owner


@dataclass
class TrackedPoints:
    """Query points attached to the simulated objects, projected on demand."""

    object_index: np.ndarray
    """(N,) which tracked object each point is on."""
    anchor: np.ndarray
    """(N,) body id (rigid) or flex vertex index (cloth) each point moves with."""
    is_flex: np.ndarray
    offset: np.ndarray
    """(N, 3) position in the body frame (rigid) or world offset from the vertex (cloth)."""
    objects: tuple[str, ...]

    def world(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        out = np.empty((len(self.anchor), 3))
        rigid = ~self.is_flex
        if rigid.any():
            bodies = self.anchor[rigid]
            rot = data.xmat[bodies].reshape(-1, 3, 3)
            out[rigid] = np.einsum("nij,nj->ni", rot, self.offset[rigid]) + data.xpos[bodies]
        if self.is_flex.any():
            out[self.is_flex] = data.flexvert_xpos[self.anchor[self.is_flex]] + self.offset[self.is_flex]
        return out

    def observe(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        camera: Camera,
        depth: np.ndarray,
        segmentation: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (x, y) (N, 2) and visibility (N,) of the points in the current state."""
        xy, point_depth = camera.project(self.world(model, data))
        h, w = depth.shape
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < 1) & (xy[:, 1] >= 0) & (xy[:, 1] < 1) & (point_depth > 0)
        px = pixel_indices(xy, (w, h))
        labels = object_labels(model, segmentation, self.objects)
        seen_depth = depth[px[:, 1], px[:, 0]]
        visible = inside & (seen_depth > point_depth - DEPTH_TOLERANCE)
        visible &= labels[px[:, 1], px[:, 0]] == self.object_index
        return np.clip(xy, 0.0, 1.0).astype(np.float32), visible


def sample_points(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    camera: Camera,
    depth: np.ndarray,
    segmentation: np.ndarray,
    objects: tuple[str, ...],
    num_points: int,
) -> tuple[TrackedPoints, np.ndarray]:
    """Grid-sample ``num_points`` queries over the objects' masks (split by area) and attach them.

    Returns the attached points and the queries (N, 3) with t = 0.
    """
    labels = object_labels(model, segmentation, objects)
    areas = np.array([(labels == k).sum() for k in range(len(objects))], float)
    if areas.sum() == 0:
        raise RuntimeError(f"none of {objects} is visible from the camera")
    budget = np.floor(num_points * areas / areas.sum()).astype(int)
    budget[np.argmax(areas)] += num_points - budget.sum()
    queries = np.concatenate(
        [
            grid_in_mask(labels == k, int(budget[k]))
            for k in range(len(objects))
            if budget[k] > 0 and areas[k] > 0
        ]
    ).astype(np.float32)
    return attach_points(model, data, camera, depth, segmentation, objects, queries[:, 1:]), queries


def attach_points(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    camera: Camera,
    depth: np.ndarray,
    segmentation: np.ndarray,
    objects: tuple[str, ...],
    xy: np.ndarray,
) -> TrackedPoints:
    """Attach image points (N, 2 normalised) to whatever they lie on: a tracked body, the cloth, or the world.

    Points off the tracked objects are attached to the world (they stay put) — the oracle for a plan point
    that a video tracker put on the background.
    """
    h, w = depth.shape
    labels = object_labels(model, segmentation, objects)
    px = pixel_indices(xy, (w, h))
    index = labels[px[:, 1], px[:, 0]].astype(np.int32)
    world = camera.lift(xy, depth)
    anchor = np.zeros(len(xy), np.int64)  # body 0 = the world
    is_flex = np.zeros(len(xy), bool)
    offset = world.copy()
    for k, name in enumerate(objects):
        sel = index == k
        if not sel.any():
            continue
        if _is_flex(model, name):
            flex_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_FLEX, name)
            start, count = model.flex_vertadr[flex_id], model.flex_vertnum[flex_id]
            verts = data.flexvert_xpos[start : start + count]
            nearest = np.argmin(np.linalg.norm(world[sel, None] - verts[None], axis=-1), axis=1)
            anchor[sel] = start + nearest
            offset[sel] = world[sel] - verts[nearest]
            is_flex[sel] = True
        else:
            body = model.body(name).id
            anchor[sel] = body
            offset[sel] = (world[sel] - data.xpos[body]) @ data.xmat[body].reshape(3, 3)
    return TrackedPoints(index, anchor, is_flex, offset, tuple(objects))
