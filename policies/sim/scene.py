"""The tabletop world: table, lights, one fixed RGB-D-segmentation camera, the robot, task objects.

Rendering is offscreen on the CPU (``MUJOCO_GL=egl`` or ``osmesa``) with shadows, reflections and
multisampling off, which is what makes ~200 frames/s at 256² possible on a laptop core.

Camera conventions: intrinsics for the pixel-centre convention of ``im2flow2act.preprocessing.tracks`` (a point at
the principal axis projects to normalised (0.5, 0.5)); :meth:`Camera.project` maps world points
straight to normalised (x, y) and depth.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from im2flow2act.policies.sim.robot import robot_actuators, robot_defaults, robot_equality, ur5e_body
from im2flow2act.preprocessing.tracks import pixel_indices

CAMERA = "front"


@dataclass
class SceneConfig:
    image_size: tuple[int, int] = (256, 256)
    """(width, height) of rendered images."""
    camera_pos: tuple[float, float, float] = (0.0, 0.5, 0.7)
    camera_lookat: tuple[float, float, float] = (0.0, -0.08, 0.0)
    camera_fovy: float = 50.0
    timestep: float = 0.002
    control_hz: float = 10.0
    """End-effector targets per second; physics runs 1 / (timestep · control_hz) substeps in between."""
    with_robot: bool = True
    with_sphere: bool = False
    """The floating sphere agent of the 'human' demonstrations (replaces the robot)."""
    robot_mjcf: str | None = None
    """Optional path to a user-supplied MJCF ``<body>`` for the arm, e.g. with the real UR5e meshes. It must
    keep the joint names of ``im2flow2act.policies.sim.robot`` (ARM_JOINTS, GRIPPER_JOINTS), the ``gripper`` body and
    the ``ee`` site; mesh assets go in ``robot_assets``."""
    robot_assets: str | None = None
    """Optional path to an MJCF ``<asset>`` fragment (meshes, materials) the custom arm refers to."""


SPHERE_RADIUS = 0.03


def sphere_body() -> str:
    """The 'human' embodiment: a mocap-driven skin-coloured sphere."""
    return f"""
    <body name="sphere_agent" mocap="true" pos="0 -0.3 0.3">
      <geom name="sphere_agent_geom" type="sphere" size="{SPHERE_RADIUS}" rgba="0.93 0.75 0.6 1" contype="0"
            conaffinity="0"/>
    </body>"""


def build_xml(
    cfg: SceneConfig, assets: list[str], bodies: list[str], extra_equality: Sequence[str] = ()
) -> str:
    """The whole MJCF of a scene with the given object assets, bodies and extra equality constraints."""
    robot = robot_assets = ""
    actuators = equality = ""
    if cfg.with_robot:
        robot = Path(cfg.robot_mjcf).read_text() if cfg.robot_mjcf else ur5e_body()
        robot_assets = Path(cfg.robot_assets).read_text() if cfg.robot_assets else ""
        actuators, equality = robot_actuators(), robot_equality()
    sphere = sphere_body() if cfg.with_sphere else ""
    w, h = cfg.image_size
    return f"""
<mujoco model="im2flow2act_table">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{cfg.timestep}" integrator="implicitfast" cone="elliptic" impratio="10">
    <flag multiccd="enable"/>
  </option>
  <visual>
    <global offwidth="{w}" offheight="{h}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>{robot_defaults()}</default>
  <asset>
    <texture name="table_tex" type="2d" builtin="flat" width="256" height="256" rgb1="0.82 0.8 0.76"
             mark="random" random="0.03" markrgb="0.6 0.58 0.55"/>
    <material name="table_mat" texture="table_tex" texrepeat="3 3" reflectance="0"/>
    <texture name="floor_tex" type="2d" builtin="checker" width="128" height="128" rgb1="0.3 0.32 0.35"
             rgb2="0.25 0.27 0.3"/>
    <material name="floor_mat" texture="floor_tex" texrepeat="8 8" reflectance="0"/>
    {"".join(assets)}{robot_assets}
  </asset>
  <worldbody>
    <light name="top" pos="0 0 2.0" dir="0 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor_mat"/>
    <geom name="table" type="box" size="0.6 0.6 0.05" pos="0 -0.1 -0.05" material="table_mat" friction="1 0.01 0.001"/>
    <camera name="{CAMERA}" mode="fixed" pos="{_vec(cfg.camera_pos)}" xyaxes="{_vec(_xyaxes(cfg))}"
            fovy="{cfg.camera_fovy}"/>
    {robot}{sphere}{"".join(bodies)}
  </worldbody>
  <actuator>{actuators}</actuator>
  <equality>{equality}{"".join(extra_equality)}</equality>
</mujoco>"""


def _xyaxes(cfg: SceneConfig) -> tuple[float, ...]:
    """Camera x and y axes (MuJoCo cameras look along −z) for a look-at from camera_pos."""
    pos, target = np.array(cfg.camera_pos), np.array(cfg.camera_lookat)
    forward = target - pos
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return (*right, *up)


def _vec(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: intrinsics K (pixels) and world pose, with projection to normalised coords."""

    width: int
    height: int
    fovy_deg: float
    position: np.ndarray
    rotation: np.ndarray
    """Camera-to-world rotation; columns are the camera x (right), y (up) and z (backward) axes."""

    @property
    def focal(self) -> float:
        return (self.height / 2) / math.tan(math.radians(self.fovy_deg) / 2)

    @property
    def intrinsics(self) -> np.ndarray:
        """K in pixel-index coordinates (pixel centres at integers), OpenCV style."""
        f = self.focal
        return np.array([[f, 0, self.width / 2 - 0.5], [0, f, self.height / 2 - 0.5], [0, 0, 1]])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) → normalised image (x, y) (..., 2) and depth along the view axis (...,)."""
        local = (np.asarray(points) - self.position) @ self.rotation  # world → camera frame
        depth = -local[..., 2]
        safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
        x = 0.5 + self.focal * local[..., 0] / safe / self.width
        y = 0.5 - self.focal * local[..., 1] / safe / self.height
        return np.stack([x, y], axis=-1).astype(np.float32), depth

    def unproject(self, xy: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Normalised (x, y) and view depth → world points (inverse of :meth:`project`)."""
        xy = np.asarray(xy, np.float64)
        depth = np.asarray(depth, np.float64)
        cx = (xy[..., 0] - 0.5) * self.width / self.focal * depth
        cy = -(xy[..., 1] - 0.5) * self.height / self.focal * depth
        local = np.stack([cx, cy, -depth], axis=-1)
        return local @ self.rotation.T + self.position

    def lift(self, xy: np.ndarray, depth_image: np.ndarray) -> np.ndarray:
        """(N, 2) normalised image positions → (N, 3) world points: what the depth image shows there."""
        h, w = depth_image.shape
        px = pixel_indices(xy, (w, h))
        return self.unproject(xy, depth_image[px[:, 1], px[:, 0]])


def camera_from_attrs(attrs: dict, size: tuple[int, int]) -> Camera:
    """The camera an episode was recorded with, from the attrs the recorder stores."""
    focal = float(np.asarray(attrs["camera_intrinsics"])[1, 1])
    fovy = math.degrees(2 * math.atan(size[1] / 2 / focal))
    return Camera(
        size[0], size[1], fovy, np.asarray(attrs["camera_position"]), np.asarray(attrs["camera_rotation"])
    )


def camera_of(model: mujoco.MjModel, data: mujoco.MjData, name: str = CAMERA, size=(256, 256)) -> Camera:
    cam = model.camera(name)
    return Camera(
        width=size[0],
        height=size[1],
        fovy_deg=float(cam.fovy[0]),
        position=data.cam_xpos[cam.id].copy(),
        rotation=data.cam_xmat[cam.id].reshape(3, 3).copy(),
    )


def _check_gl_backend() -> None:
    """Fail clearly when mujoco was imported (before im2flow2act.policies.sim) without MUJOCO_GL on a headless machine."""
    from mujoco.rendering.classic import gl_context

    backend = getattr(getattr(gl_context, "GLContext", None), "__module__", "")
    if backend.endswith("glfw") and not os.environ.get("DISPLAY"):
        raise RuntimeError(
            "MuJoCo picked the windowed GLFW renderer but there is no display. Set MUJOCO_GL=egl (or osmesa) "
            "before starting Python, or import im2flow2act.policies.sim before mujoco."
        )


class SceneRenderer:
    """RGB, depth (metres along the view axis) and segmentation (geom ids, −1 = nothing) from one camera."""

    def __init__(
        self, model: mujoco.MjModel, size: tuple[int, int] = (256, 256), camera: str = CAMERA
    ) -> None:
        self.size = size
        self.camera = camera
        _check_gl_backend()
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size[0])
        model.vis.global_.offheight = max(model.vis.global_.offheight, size[1])
        self._renderer = mujoco.Renderer(model, height=size[1], width=size[0])
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False

    def rgb(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, self.camera)
        return self._renderer.render().copy()

    def depth(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.enable_depth_rendering()
        try:
            self._renderer.update_scene(data, self.camera)
            return self._renderer.render().astype(np.float32)
        finally:
            self._renderer.disable_depth_rendering()

    def segmentation(self, data: mujoco.MjData) -> np.ndarray:
        """(H, W, 2) int32: object id and ``mjtObj`` type per pixel (geoms: type 5, flexes: 9; −1 = none)."""
        self._renderer.enable_segmentation_rendering()
        try:
            self._renderer.update_scene(data, self.camera)
            return self._renderer.render().astype(np.int32)
        finally:
            self._renderer.disable_segmentation_rendering()

    def close(self) -> None:
        self._renderer.close()
