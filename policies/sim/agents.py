"""Who acts in the sim without a learned policy: waypoint following, and random play primitives.

:func:`follow` turns waypoints into per-step absolute actions (linear in position, spherical in
rotation), the same for the robot expert and the sphere agent. :func:`play_actions` strings together
task-agnostic primitives — reach, grasp whatever is there, lift, move, place, push, pull, tilt, drag —
with no goal, for the policy's play data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import mujoco
import numpy as np

from im2flow2act.policies.sim.env import TOP_DOWN, Action, SimEnv
from im2flow2act.policies.sim.tasks import OPEN, Waypoint

CLOSED = 0.0


def slerp(r0: np.ndarray, r1: np.ndarray, alpha: float) -> np.ndarray:
    """Rotation matrix a fraction ``alpha`` of the way from r0 to r1 (shortest arc)."""
    q0, q1 = np.zeros(4), np.zeros(4)
    mujoco.mju_mat2Quat(q0, np.ascontiguousarray(r0).ravel())
    mujoco.mju_mat2Quat(q1, np.ascontiguousarray(r1).ravel())
    if q0 @ q1 < 0:
        q1 = -q1
    dot = float(np.clip(q0 @ q1, -1.0, 1.0))
    if dot > 0.9995:
        q = q0 + alpha * (q1 - q0)
    else:
        theta = math.acos(dot)
        q = (math.sin((1 - alpha) * theta) * q0 + math.sin(alpha * theta) * q1) / math.sin(theta)
    q /= np.linalg.norm(q)
    out = np.zeros(9)
    mujoco.mju_quat2Mat(out, q)
    return out.reshape(3, 3)


def follow(env: SimEnv, waypoints: list[Waypoint]) -> Iterator[Action]:
    """Per-step actions that move from the current pose through ``waypoints``."""
    pos, rot = env.ee_pose()
    if env.embodiment == "sphere":
        rot = TOP_DOWN
    for w in waypoints:
        target_rot = rot if w.rotation is None else w.rotation
        for k in range(w.steps):
            alpha = (k + 1) / w.steps
            yield Action(
                (1 - alpha) * pos + alpha * np.asarray(w.position), slerp(rot, target_rot, alpha), w.gripper
            )
        pos, rot = np.asarray(w.position, float), target_rot


# ----------------------------------------------------------------------------- play
def _rot(yaw: float, tilt: float = 0.0) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    ct, st = math.cos(tilt), math.sin(tilt)
    ry = np.array([[ct, 0.0, st], [0.0, 1.0, 0.0], [-st, 0.0, ct]])
    return ry @ rz @ TOP_DOWN


def _random_spot(rng: np.random.Generator, z: float) -> np.ndarray:
    return np.array([rng.uniform(-0.28, 0.28), rng.uniform(-0.15, 0.2), z])


PLAY_KINDS = ("grasp_move", "push", "reach")
DEFAULT_PLAY_MIX = ("grasp_move", "grasp_move", "reach")
"""Primitive kinds drawn uniformly from this list: a kind listed twice is drawn twice as often. Pushes are
left out of the default: with or without them the policy did the same (docs/results/policies.md)."""


def check_play_mix(mix: Sequence[str]) -> None:
    """Refuse an empty mix or an unknown kind (it would otherwise be played as a grasp)."""
    unknown = sorted(set(mix) - set(PLAY_KINDS))
    if unknown or not mix:
        raise ValueError(f"play_mix {list(mix)}: each kind must be one of {list(PLAY_KINDS)}")


@dataclass(frozen=True)
class PlayStyle:
    """What random play does with what it grasps."""

    mix: Sequence[str] = DEFAULT_PLAY_MIX
    place_on: float = 0.0
    """Probability of setting a carried object down on another object's top instead of on the table."""
    hold: float = 0.0
    """Probability that an episode's last grasp ends holding the object up (tilted half the time, up to
    86°) instead of setting it down: pouring ends that way, and play that always lets go teaches a policy
    to put the mug down."""


def play_actions(
    env: SimEnv, rng: np.random.Generator, primitives: int = 3, style: PlayStyle | None = None
) -> Iterator[Action]:
    """Goal-free play: ``primitives`` random primitives, each planned from the state it starts in."""
    style = style or PlayStyle()
    check_play_mix(style.mix)
    for i in range(primitives):
        last = i == primitives - 1
        yield from follow(env, random_primitive(env, rng, style if last else replace(style, hold=0.0)))


def _set_down_spot(env: SimEnv, rng: np.random.Generator, z: float, place_on: float) -> np.ndarray:
    """Where a carried object goes: with probability ``place_on`` onto one of the scene's other tops
    (anywhere it stands on it), else anywhere on the table; ``z`` is its set-down height on the table."""
    surfaces = env.task.surfaces(env.model, env.data)
    if surfaces and place_on > 0 and rng.random() < place_on:
        top = surfaces[str(rng.choice(sorted(surfaces)))]
        angle, r = rng.uniform(0, 2 * math.pi), top.radius * math.sqrt(rng.random())
        return top.centre + np.array([r * math.cos(angle), r * math.sin(angle), z])
    return _random_spot(rng, z)


def random_primitive(env: SimEnv, rng: np.random.Generator, style: PlayStyle | None = None) -> list[Waypoint]:
    """One random primitive on whatever the scene holds now: grasp-and-move, push, or reach.

    A carried object is brought upright at height before it goes down, and held still a moment before
    the fingers open: a mug set down while it still swings in the grasp topples as the fingers open."""
    style = style or PlayStyle()
    points = env.task.grasp_points(env.model, env.data)
    kind = rng.choice(list(style.mix))
    name = str(rng.choice(sorted(points))) if points else None
    yaw = rng.uniform(-0.6, 0.6)
    if name == "drawer":  # align the fingers with the handle bar, as the expert does
        bar = env.data.xmat[env.model.body("drawer_cabinet").id].reshape(3, 3)[:, 0]
        yaw = math.atan2(bar[1], bar[0])
    if kind == "reach" or name is None:
        return [
            Waypoint(_random_spot(rng, rng.uniform(0.08, 0.3)), OPEN, int(rng.integers(8, 16)), _rot(yaw))
        ]
    target = points[name].copy()
    if kind == "push" and name != "drawer":
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction)
        start = np.array([*(target[:2] - 0.09 * direction), 0.04])
        end = start + np.array([*(rng.uniform(0.06, 0.15) * direction), 0.0])
        return [
            Waypoint(start + [0, 0, 0.12], CLOSED, 10, _rot(yaw)),
            Waypoint(start, CLOSED, 6, _rot(yaw)),
            Waypoint(end, CLOSED, int(rng.integers(6, 12)), _rot(yaw)),
            Waypoint(end + [0, 0, 0.12], CLOSED, 6, _rot(yaw)),
        ]
    grasp = target + [0, 0, 0.005 if name == "drawer" else 0.01]
    if name == "drawer":  # pull out or push in along the slide
        out = env.data.xaxis[env.model.joint("drawer_slide").id]
        lift = grasp
        place = grasp + rng.uniform(-0.02, 0.17) * out
        move = place
    else:
        lift = grasp + [0, 0, rng.uniform(0.08, 0.18)]
        place = _set_down_spot(env, rng, grasp[2] + 0.02, style.place_on)
        move = np.array([place[0], place[1], lift[2]])
    holds = name != "drawer" and style.hold > 0 and rng.random() < style.hold
    chance, most = (0.5, 1.5) if holds else (0.3, 1.2)  # how often a mug is tilted, and up to what (rad)
    tilt = rng.uniform(-most, most) if (name == "mug" and rng.random() < chance) else 0.0
    carry = [
        Waypoint(grasp + [0, 0, 0.12], OPEN, int(rng.integers(8, 14)), _rot(yaw)),
        Waypoint(grasp, OPEN, 7, _rot(yaw)),
        Waypoint(grasp, CLOSED, 4, _rot(yaw)),
        Waypoint(lift, CLOSED, 6, _rot(yaw)),
        Waypoint(move, CLOSED, int(rng.integers(8, 16)), _rot(yaw, tilt)),
    ]
    if holds:
        return [*carry, Waypoint(move, CLOSED, 6, _rot(yaw, tilt))]
    upright = [Waypoint(move, CLOSED, 6, _rot(yaw))] if tilt else []
    return [
        *carry,
        *upright,
        Waypoint(place, CLOSED, 6, _rot(yaw)),
        Waypoint(place, CLOSED, 2, _rot(yaw)),
        Waypoint(place, OPEN, 3, _rot(yaw)),
        Waypoint(place + [0, 0, 0.1], OPEN, 5, _rot(yaw)),
    ]
