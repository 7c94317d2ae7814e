"""The robot: a UR5e arm with a parallel-jaw gripper, built from primitives (no mesh download).

Link offsets are the published UR5e kinematics (d1 = 0.1625, a2 = 0.425, a3 = 0.3922, d4 = 0.1333,
d5 = 0.0997, d6 = 0.0996 m, written as the usual MuJoCo chain with shoulder/elbow offsets), joint
limits ±2π (elbow ±π). Geometry is capsules and boxes, enough for contacts and for the camera; a
user who has the real meshes can pass their own MJCF instead (``SceneConfig.robot_mjcf``).

The gripper has two fingers on slide joints, each with its own position servo; both get half the
commanded ``width`` (metres between the finger pads), so they close symmetrically on an object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ARM_JOINTS = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow",
    "wrist_1",
    "wrist_2",
    "wrist_3",
)
GRIPPER_JOINTS = ("finger_left", "finger_right")
EE_SITE = "ee"
"""Site between the finger pads: the end-effector pose targets refer to it."""
MAX_WIDTH = 0.08
HOME_QPOS = (1.5708, -1.5708, 1.5708, -1.5708, -1.5708, 0.0)
"""Elbow up, gripper pointing down over the table in front of the base."""


@dataclass(frozen=True)
class RobotPlacement:
    base_pos: tuple[float, float, float] = (0.0, -0.5, 0.0)
    base_yaw_deg: float = 90.0
    """Yaw of the base; 90° makes the arm reach along +y, towards the middle of the table."""


def ur5e_body(placement: RobotPlacement = RobotPlacement()) -> str:
    """MJCF ``<body>`` of the arm and gripper, for a model compiled with ``angle="radian"``."""
    x, y, z = placement.base_pos
    finger = MAX_WIDTH / 2
    return f"""
    <body name="ur5e_base" pos="{x} {y} {z}" euler="0 0 {math.radians(placement.base_yaw_deg)}">
      <geom class="robot" type="cylinder" size="0.075 0.04" pos="0 0 0.04" rgba="0.3 0.3 0.32 1"/>
      <body name="shoulder_link" pos="0 0 0.163">
        <joint name="shoulder_pan" axis="0 0 1" range="-6.2832 6.2832"/>
        <geom class="robot" type="cylinder" size="0.06 0.07" rgba="0.45 0.6 0.75 1"/>
        <body name="upper_arm_link" pos="0 0.138 0" quat="1 0 1 0">
          <joint name="shoulder_lift" axis="0 1 0" range="-6.2832 6.2832"/>
          <geom class="robot" type="capsule" fromto="0 0 0 0 0 0.425" size="0.055" rgba="0.75 0.75 0.78 1"/>
          <body name="forearm_link" pos="0 -0.131 0.425">
            <joint name="elbow" axis="0 1 0" range="-3.1416 3.1416"/>
            <geom class="robot" type="capsule" fromto="0 0 0 0 0 0.392" size="0.045" rgba="0.75 0.75 0.78 1"/>
            <body name="wrist_1_link" pos="0 0 0.392" quat="1 0 1 0">
              <joint name="wrist_1" axis="0 1 0" range="-6.2832 6.2832"/>
              <geom class="robot" type="cylinder" size="0.04 0.05" pos="0 0.07 0" euler="1.5708 0 0"
                    rgba="0.45 0.6 0.75 1"/>
              <body name="wrist_2_link" pos="0 0.127 0">
                <joint name="wrist_2" axis="0 0 1" range="-6.2832 6.2832"/>
                <geom class="robot" type="cylinder" size="0.04 0.05" pos="0 0 0.1" rgba="0.45 0.6 0.75 1"/>
                <body name="wrist_3_link" pos="0 0 0.1">
                  <joint name="wrist_3" axis="0 1 0" range="-6.2832 6.2832"/>
                  <geom class="robot" type="cylinder" size="0.04 0.02" pos="0 0.08 0" euler="1.5708 0 0"
                        rgba="0.3 0.3 0.32 1"/>
                  <body name="gripper" pos="0 0.1 0" quat="-1 1 0 0">
                    <geom class="robot" type="box" size="0.05 0.02 0.03" pos="0 0 0.03" rgba="0.2 0.2 0.22 1"/>
                    <site name="{EE_SITE}" pos="0 0 0.15" size="0.005" rgba="1 0 0 0"/>
                    <body name="finger_left_link" pos="0 0 0.06">
                      <joint name="finger_left" type="slide" axis="1 0 0" range="0 {finger}"/>
                      <geom class="finger" type="box" size="0.006 0.02 0.045" pos="0.006 0 0.05"/>
                    </body>
                    <body name="finger_right_link" pos="0 0 0.06">
                      <joint name="finger_right" type="slide" axis="-1 0 0" range="0 {finger}"/>
                      <geom class="finger" type="box" size="0.006 0.02 0.045" pos="-0.006 0 0.05"/>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def robot_defaults() -> str:
    """MJCF ``<default>`` classes the robot body uses."""
    return """
    <default class="robot">
      <geom contype="2" conaffinity="1" group="1" density="500"/>
      <joint damping="2" armature="0.1"/>
    </default>
    <default class="finger">
      <geom contype="2" conaffinity="1" group="1" friction="2 0.05 0.001" rgba="0.15 0.15 0.15 1"
            condim="4" density="800" solimp="0.95 0.99 0.001" solref="0.004 1"/>
    </default>"""


def robot_actuators() -> str:
    """Joint position servos for the arm and for each finger (opening per side)."""
    gains = (2000, 2000, 1500, 500, 500, 500)
    arm = "\n".join(
        f'    <position name="{j}" joint="{j}" kp="{kp}" kv="{kp // 10}" ctrlrange="-6.2832 6.2832"/>'
        for j, kp in zip(ARM_JOINTS, gains, strict=True)
    )
    fingers = "\n".join(
        f'    <position name="{j}" joint="{j}" kp="1500" kv="50" ctrlrange="0 {MAX_WIDTH / 2}"/>'
        for j in GRIPPER_JOINTS
    )
    return arm + "\n" + fingers


def robot_equality() -> str:
    """No equality constraints: each finger has its own servo, both get the same command."""
    return ""
