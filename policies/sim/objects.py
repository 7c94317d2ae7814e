"""MJCF for the task objects: a mug, a plate, a bowl, a drawer cabinet and a cloth.

Every object is textured (random speckles over its base colour) so a point tracker has something to
follow, and every object's geoms carry its name as a prefix, so segmentation maps pixels to objects.
Sizes are chosen for the gripper: the mug body is 6 cm across (the gripper opens to 10 cm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Pose2D:
    """Where an object stands on the table: x, y (m) and yaw (rad)."""

    x: float
    y: float
    yaw: float = 0.0


MUG_RADIUS = 0.03
MUG_HEIGHT = 0.09
PLATE_RADIUS = 0.09
BOWL_RADIUS = 0.08
PLATE_HALF_HEIGHT = 0.006
BOWL_BASE_TOP = 0.01
DRAWER_TRAVEL = 0.2
CLOTH_COUNT = 11
CLOTH_SPACING = 0.025


def speckle_material(name: str, rgb: tuple[float, float, float], mark: tuple[float, float, float]) -> str:
    """A texture of random speckles: trackable, yet the object keeps its colour.

    ``rgb2`` too: a flat cube texture paints one face with it (MuJoCo's default grey), which left the
    drawer's front a dull grey that LK could not hold (tested)."""
    r, g, b = rgb
    mr, mg, mb = mark
    return f"""
    <texture name="{name}_tex" type="cube" builtin="flat" width="128" height="128" rgb1="{r} {g} {b}"
             rgb2="{r} {g} {b}" mark="random" random="0.12" markrgb="{mr} {mg} {mb}"/>
    <material name="{name}_mat" texture="{name}_tex" texuniform="false"/>"""


def mug(pose: Pose2D, name: str = "mug") -> tuple[str, str]:
    """A red mug (solid body and a handle) on a free joint → (asset xml, body xml)."""
    h, r = MUG_HEIGHT, MUG_RADIUS
    asset = speckle_material(name, (0.8, 0.12, 0.1), (1.0, 0.9, 0.8))
    body = f"""
    <body name="{name}" pos="{pose.x} {pose.y} {h / 2 + 0.001}" euler="0 0 {pose.yaw}">
      <freejoint name="{name}_joint"/>
      <geom name="{name}_body" type="cylinder" size="{r} {h / 2}" material="{name}_mat" mass="0.15"
            friction="1.5 0.02 0.001" condim="4"/>
      <geom name="{name}_handle" type="capsule" fromto="{r} 0 {h / 4} {r + 0.025} 0 {-h / 4 + 0.01}" size="0.008"
            material="{name}_mat" mass="0.02"/>
    </body>"""
    return asset, body


def plate(pose: Pose2D, name: str = "plate") -> tuple[str, str]:
    """A flat white-blue plate fixed on the table."""
    asset = speckle_material(name, (0.85, 0.88, 0.95), (0.2, 0.3, 0.8))
    body = f"""
    <body name="{name}" pos="{pose.x} {pose.y} {PLATE_HALF_HEIGHT}">
      <geom name="{name}_disc" type="cylinder" size="{PLATE_RADIUS} {PLATE_HALF_HEIGHT}" material="{name}_mat"/>
    </body>"""
    return asset, body


def bowl(pose: Pose2D, name: str = "bowl") -> tuple[str, str]:
    """A green bowl: a base and a ring of wall segments, fixed on the table."""
    asset = speckle_material(name, (0.15, 0.6, 0.25), (0.95, 0.95, 0.6))
    walls = []
    segments = 12
    for i in range(segments):
        a = 2 * math.pi * i / segments
        x, y = (BOWL_RADIUS - 0.005) * math.cos(a), (BOWL_RADIUS - 0.005) * math.sin(a)
        walls.append(
            f'<geom name="{name}_wall{i}" type="box" size="0.006 {BOWL_RADIUS * 0.28} 0.03" '
            f'pos="{x:.4f} {y:.4f} 0.035" euler="0 0 {a:.4f}" material="{name}_mat"/>'
        )
    body = f"""
    <body name="{name}" pos="{pose.x} {pose.y} 0">
      <geom name="{name}_base" type="cylinder" size="{BOWL_RADIUS * 0.7} {BOWL_BASE_TOP / 2}" pos="0 0 {BOWL_BASE_TOP / 2}"
            material="{name}_mat"/>
      {"".join(walls)}
    </body>"""
    return asset, body


def drawer(pose: Pose2D, name: str = "drawer") -> tuple[str, str]:
    """A cabinet fixed on the table with one drawer sliding out towards −y (the robot side)."""
    asset = speckle_material(name, (0.75, 0.15, 0.12), (1.0, 0.85, 0.3)) + speckle_material(
        f"{name}_cabinet", (0.55, 0.42, 0.3), (0.2, 0.15, 0.1)
    )
    w, d, h = 0.14, 0.14, 0.07  # half sizes of the cabinet
    body = f"""
    <body name="{name}_cabinet" pos="{pose.x} {pose.y} 0" euler="0 0 {pose.yaw}">
      <geom name="{name}_cabinet_top" type="box" size="{w} {d} 0.01" pos="0 0 {2 * h + 0.01}" material="{name}_cabinet_mat"/>
      <geom name="{name}_cabinet_left" type="box" size="0.01 {d} {h}" pos="{-w + 0.01} 0 {h + 0.01}"
            material="{name}_cabinet_mat"/>
      <geom name="{name}_cabinet_right" type="box" size="0.01 {d} {h}" pos="{w - 0.01} 0 {h + 0.01}"
            material="{name}_cabinet_mat"/>
      <geom name="{name}_cabinet_back" type="box" size="{w} 0.01 {h}" pos="0 {d - 0.01} {h + 0.01}"
            material="{name}_cabinet_mat"/>
      <geom name="{name}_cabinet_bottom" type="box" size="{w} {d} 0.005" pos="0 0 0.005" material="{name}_cabinet_mat"/>
      <body name="{name}" pos="0 0 0.012">
        <joint name="{name}_slide" type="slide" axis="0 -1 0" range="0 {DRAWER_TRAVEL}" damping="5" frictionloss="0.5"/>
        <geom name="{name}_front" type="box" size="{w - 0.022} 0.01 {h - 0.014}" pos="0 {-d + 0.01} {h - 0.004}"
              material="{name}_mat"/>
        <geom name="{name}_floor" type="box" size="{w - 0.025} {d - 0.03} 0.004" pos="0 0.005 0.004" material="{name}_mat"
              mass="0.3"/>
        <geom name="{name}_handle" type="capsule" fromto="-0.04 {-d - 0.03} {h} 0.04 {-d - 0.03} {h}" size="0.008"
              material="{name}_mat"/>
        <geom name="{name}_handle_l" type="box" size="0.005 0.015 0.005" pos="-0.04 {-d - 0.015} {h}" material="{name}_mat"/>
        <geom name="{name}_handle_r" type="box" size="0.005 0.015 0.005" pos="0.04 {-d - 0.015} {h}" material="{name}_mat"/>
      </body>
    </body>"""
    return asset, body


def cloth(pose: Pose2D, name: str = "cloth") -> tuple[str, str]:
    """A square cloth (a 2-D MuJoCo flex grid) lying flat on the table."""
    asset = f"""
    <texture name="{name}_tex" type="2d" builtin="checker" width="256" height="256" rgb1="0.95 0.9 0.3"
             rgb2="0.2 0.35 0.75" mark="random" random="0.05" markrgb="1 1 1"/>
    <material name="{name}_mat" texture="{name}_tex" texrepeat="4 4"/>"""
    n, s = CLOTH_COUNT, CLOTH_SPACING
    body = f"""
    <flexcomp name="{name}" type="grid" count="{n} {n} 1" spacing="{s} {s} {s}" pos="{pose.x} {pose.y} 0.01"
              radius="0.003" dim="2" mass="0.08" material="{name}_mat">
      <contact condim="3" solref="0.003 1" selfcollide="none" friction="1.2 0.01 0.001"/>
      <edge equality="true" damping="0.002"/>
    </flexcomp>"""
    return asset, body
