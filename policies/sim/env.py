"""The simulation environment: reset(seed), step(action), render(), success().

One class serves both embodiments. With the robot, an action is an absolute end-effector pose target
(position, rotation matrix, gripper width) reached through IK at ``control_hz`` with physics substeps
in between. With the sphere agent ("human" demonstrations), the same action moves the mocap sphere to
the position.

Grasping, for both: a gripper command below half open holds the nearest grasp point within reach (the
mug, the drawer handle, a cloth corner) with a weld at the current relative pose; opening releases it.
The robot's fingers still close on the object physically; the weld is a grasp assist that makes holds
reliable (a parallel jaw on a simulated cylinder or a thin cloth slips too easily to give clean play
data), the same for the expert, play and the learned policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from im2flow2act.policies.sim.ik import IKSolver
from im2flow2act.policies.sim.robot import ARM_JOINTS, EE_SITE, GRIPPER_JOINTS, HOME_QPOS, MAX_WIDTH
from im2flow2act.policies.sim.scene import SceneConfig, SceneRenderer, build_xml, camera_of
from im2flow2act.policies.sim.tasks import TASKS, Task

GRASP_RANGE = 0.06
"""The sphere attaches to a grasp point within this distance of its centre."""
ROBOT_GRASP_RANGE = 0.045
"""The gripper holds a grasp point within this distance of the point between its pads."""


@dataclass
class Action:
    """An absolute end-effector target."""

    position: np.ndarray
    rotation: np.ndarray
    gripper: float
    """Opening between the finger pads in metres (0 = closed, MAX_WIDTH = open)."""

    @property
    def closes(self) -> bool:
        """Below half open the gripper is told to close: the grasp hold starts, evaluation notes where."""
        return self.gripper < MAX_WIDTH / 2

    def as_vector(self) -> np.ndarray:
        """(10,) = position, the first two columns of the rotation (the 6-D rotation), gripper width."""
        rot = np.asarray(self.rotation)
        return np.concatenate([self.position, rot[:, 0], rot[:, 1], [self.gripper]]).astype(np.float32)

    @staticmethod
    def from_vector(vector: np.ndarray) -> Action:
        """Inverse of :meth:`as_vector`; the rotation is re-orthonormalised (Gram–Schmidt)."""
        v = np.asarray(vector, np.float64)
        a, b = v[3:6], v[6:9]
        x = a / np.linalg.norm(a)
        y = b - x * (x @ b)
        y /= np.linalg.norm(y)
        return Action(v[:3], np.stack([x, y, np.cross(x, y)], axis=1), float(v[9]))


TOP_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
"""Gripper pointing straight down, fingers closing along world x."""


class SimEnv:
    """A registered task in the tabletop scene, with the robot or the sphere agent."""

    def __init__(self, task: str | Task, embodiment: str = "robot", scene: SceneConfig | None = None) -> None:
        if embodiment not in ("robot", "sphere"):
            raise ValueError(f"embodiment must be 'robot' or 'sphere', got {embodiment!r}")
        self.task: Task = TASKS.build(task) if isinstance(task, str) else task
        self.embodiment = embodiment
        self.scene = scene or SceneConfig()
        self.scene.with_robot = embodiment == "robot"
        self.scene.with_sphere = embodiment == "sphere"
        assets, bodies = self.task.mjcf()
        holder = "gripper" if embodiment == "robot" else "sphere_agent"
        welds = [
            f'<weld name="attach_{name}" body1="{holder}" body2="{body}" active="false" solref="0.01 1"/>'
            for name, body in self.task.attachments().items()
        ]
        self.model = mujoco.MjModel.from_xml_string(build_xml(self.scene, assets, bodies, welds))
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, round(1.0 / (self.scene.control_hz * self.scene.timestep)))
        self._renderer: SceneRenderer | None = None
        if embodiment == "robot":
            self._arm_qpos = np.array([self.model.joint(j).qposadr[0] for j in ARM_JOINTS])
            self._arm_qvel = np.array([self.model.joint(j).dofadr[0] for j in ARM_JOINTS])
            self._finger_qpos = np.array([self.model.joint(j).qposadr[0] for j in GRIPPER_JOINTS])
            self._arm_ctrl = np.array([self.model.actuator(j).id for j in ARM_JOINTS])
            self._gripper_ctrl = np.array([self.model.actuator(j).id for j in GRIPPER_JOINTS])
            self.ik = IKSolver(home=np.array(HOME_QPOS))
            self._ee_site = self.model.site(EE_SITE).id
        else:
            self._mocap = self.model.body("sphere_agent").mocapid[0]
        self.seed: int | None = None
        self.steps = 0
        self.held: str | None = None
        self._closing_steps = 0

    # ----- episode ---------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Home pose, then the task's randomised layout for ``seed``; settles the objects."""
        self.seed = seed
        self.steps = 0
        self.held = None
        self._closing_steps = 0
        mujoco.mj_resetData(self.model, self.data)
        if self.embodiment == "robot":
            self.data.qpos[self._arm_qpos] = HOME_QPOS
            self.data.ctrl[self._arm_ctrl] = HOME_QPOS
            self.data.qpos[self._finger_qpos] = MAX_WIDTH / 2
            self.data.ctrl[self._gripper_ctrl] = MAX_WIDTH / 2
        else:
            self.data.mocap_pos[self._mocap] = self.task.sphere_home
        self.task.reset_layout(self.model, self.data, np.random.default_rng(seed))
        mujoco.mj_forward(self.model, self.data)
        for _ in range(100):  # let objects settle on the table before the first frame
            mujoco.mj_step(self.model, self.data)

    def step(self, action: Action) -> None:
        """Apply one control step (1 / control_hz seconds of physics)."""
        self._update_grasp(action)
        if self.embodiment == "robot":
            q, _ = self.ik.solve(self.data.qpos[self._arm_qpos], action.position, action.rotation)
            self.data.ctrl[self._arm_ctrl] = q
            self.data.ctrl[self._gripper_ctrl] = np.clip(action.gripper / 2, 0.0, MAX_WIDTH / 2)
            for _ in range(self.substeps):
                mujoco.mj_step(self.model, self.data)
        else:
            self._sphere_step(action)
        self.steps += 1

    def advance_physics(self, substeps: int) -> None:
        """Step the physics alone, with the current controls (no IK, no rendering)."""
        for _ in range(substeps):
            mujoco.mj_step(self.model, self.data)

    def _sphere_step(self, action: Action) -> None:
        """Move the sphere; it turns with the commanded rotation (relative to the top-down grip)."""
        start = self.data.mocap_pos[self._mocap].copy()
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.ascontiguousarray(np.asarray(action.rotation) @ TOP_DOWN.T).ravel())
        self.data.mocap_quat[self._mocap] = quat
        for i in range(self.substeps):
            alpha = (i + 1) / self.substeps
            self.data.mocap_pos[self._mocap] = (1 - alpha) * start + alpha * np.asarray(action.position)
            mujoco.mj_step(self.model, self.data)

    def _update_grasp(self, action: Action) -> None:
        """Hold the nearest grasp point when the gripper is commanded closed; let go when opened."""
        closing = action.closes
        self._closing_steps = self._closing_steps + 1 if closing else 0
        # the robot's fingers get one control step to close on the object before the hold starts
        settle = 2 if self.embodiment == "robot" else 1
        if closing and self.held is None and self._closing_steps >= settle:
            self._attach()
        elif not closing and self.held is not None:
            self._detach()

    def _attach(self) -> None:
        """Weld the nearest grasp point within reach to the holder, at their current relative pose."""
        here, _ = self.ee_pose()
        reach = GRASP_RANGE if self.embodiment == "sphere" else ROBOT_GRASP_RANGE
        points = self.task.grasp_points(self.model, self.data)
        dists = {name: float(np.linalg.norm(p - here)) for name, p in points.items()}
        best = min(dists, key=dists.get, default=None)
        if best is None or dists[best] > reach:
            return
        eq = self.model.equality(f"attach_{best}").id
        holder, body = self.model.eq_obj1id[eq], self.model.eq_obj2id[eq]
        inv = np.zeros(4)
        mujoco.mju_negQuat(inv, self.data.xquat[holder])
        rel_pos, rel_quat = np.zeros(3), np.zeros(4)
        mujoco.mju_rotVecQuat(rel_pos, self.data.xpos[body] - self.data.xpos[holder], inv)
        mujoco.mju_mulQuat(rel_quat, inv, self.data.xquat[body])
        weld = self.model.eq_data[eq]
        weld[:] = 0.0
        weld[3:6], weld[6:10], weld[10] = rel_pos, rel_quat, 1.0  # body2's pose in body1's frame
        self.data.eq_active[eq] = True
        self.held = best

    def _detach(self) -> None:
        self.data.eq_active[self.model.equality(f"attach_{self.held}").id] = False
        self.held = None

    # ----- observation -----------------------------------------------------------------------
    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Current end-effector (position, rotation) — the sphere's centre for the sphere agent."""
        if self.embodiment == "robot":
            return self.data.site_xpos[self._ee_site].copy(), self.data.site_xmat[self._ee_site].reshape(
                3, 3
            ).copy()
        return self.data.mocap_pos[self._mocap].copy(), np.eye(3)

    def gripper_width(self) -> float:
        if self.embodiment == "robot":
            return float(self.data.qpos[self._finger_qpos].sum())
        return 0.0 if self.held else MAX_WIDTH

    def proprio(self) -> np.ndarray:
        """(10,) end-effector position, 6-D rotation and gripper width — the action's own layout."""
        pos, rot = self.ee_pose()
        return Action(pos, rot, self.gripper_width()).as_vector()

    def success(self) -> bool:
        return bool(self.task.success(self.model, self.data))

    def progress(self) -> dict[str, float]:
        return self.task.progress(self.model, self.data)

    # ----- rendering -------------------------------------------------------------------------
    @property
    def renderer(self) -> SceneRenderer:
        if self._renderer is None:
            self._renderer = SceneRenderer(self.model, self.scene.image_size)
        return self._renderer

    def render(self) -> np.ndarray:
        return self.renderer.rgb(self.data)

    def camera(self):
        return camera_of(self.model, self.data, size=self.scene.image_size)

    def close(self) -> None:
        """Free the GL renderer now (on this thread), instead of whenever the garbage collector runs."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
