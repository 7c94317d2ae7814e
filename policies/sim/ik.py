"""End-effector pose → arm joint targets, by differential IK with ``mink``.

IK runs on a model of the robot alone (built from the same MJCF), so free-floating objects in the scene
never enter the optimisation, and its result is written into the scene's joint position servos.
A small posture task keeps the redundant wrist near a comfortable configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import mink
import mujoco
import numpy as np

from im2flow2act.policies.sim.robot import ARM_JOINTS, EE_SITE, robot_defaults, robot_equality, ur5e_body


@dataclass
class IKConfig:
    iterations: int = 40
    """Most solver iterations per control step (stops earlier when converged)."""
    dt: float = 0.05
    position_tolerance: float = 1e-3
    orientation_tolerance: float = 1e-2
    posture_cost: float = 1e-3
    damping: float = 1e-3


def robot_only_xml() -> str:
    return f"""<mujoco><compiler angle="radian"/><default>{robot_defaults()}</default>
    <worldbody>{ur5e_body()}</worldbody><equality>{robot_equality()}</equality></mujoco>"""


class IKSolver:
    """Solve for the six arm joints that put the ``ee`` site at a target pose."""

    def __init__(self, config: IKConfig | None = None, home: np.ndarray | None = None) -> None:
        self.config = config or IKConfig()
        self.model = mujoco.MjModel.from_xml_string(robot_only_xml())
        self.configuration = mink.Configuration(self.model)
        self._arm_qpos = np.array([self.model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self.ee_task = mink.FrameTask(
            EE_SITE, "site", position_cost=1.0, orientation_cost=0.5, lm_damping=1e-3
        )
        self.posture = mink.PostureTask(self.model, cost=self.config.posture_cost)
        q = self.configuration.q.copy()
        if home is not None:
            q[self._arm_qpos] = home
        self.posture.set_target(q)
        self.limits = [mink.ConfigurationLimit(self.model)]

    def solve(
        self, arm_q: np.ndarray, position: np.ndarray, rotation: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """From joint angles ``arm_q`` toward the pose → (joint angles, remaining position error in m)."""
        q = self.configuration.q.copy()
        q[self._arm_qpos] = arm_q
        self.configuration.update(q)
        target = mink.SE3.from_rotation_and_translation(
            mink.SO3.from_matrix(np.asarray(rotation)), np.asarray(position)
        )
        self.ee_task.set_target(target)
        cfg = self.config
        for _ in range(cfg.iterations):
            velocity = mink.solve_ik(
                self.configuration,
                [self.ee_task, self.posture],
                cfg.dt,
                "daqp",
                damping=cfg.damping,
                limits=self.limits,
            )
            self.configuration.integrate_inplace(velocity, cfg.dt)
            err = self.ee_task.compute_error(self.configuration)
            if (
                np.linalg.norm(err[:3]) < cfg.position_tolerance
                and np.linalg.norm(err[3:]) < cfg.orientation_tolerance
            ):
                break
        err = self.ee_task.compute_error(self.configuration)
        return self.configuration.q[self._arm_qpos].copy(), float(np.linalg.norm(err[:3]))

    def forward(self, arm_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector (position, rotation matrix) for joint angles ``arm_q``."""
        q = self.configuration.q.copy()
        q[self._arm_qpos] = arm_q
        self.configuration.update(q)
        pose = self.configuration.get_transform_frame_to_world(EE_SITE, "site")
        return pose.translation().copy(), pose.rotation().as_matrix().copy()
