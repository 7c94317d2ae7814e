"""The four tasks: layout, instruction, success check in code, and scripted demonstrations.

Registered as ``pick_place``, ``pour``, ``open_drawer`` and ``fold_cloth``. Pick & place and pouring share
one layout (mug, plate and bowl on the table, placed from the seed alone), so the same first frame can
take either instruction — this is how instruction following is measured later.

Scripted demonstrations are lists of :class:`Waypoint` in end-effector space. The robot expert and the
sphere agent ("human") share them where they can; the sphere's are randomised (timing, path via left or
right, grasp point) so demonstrations are multimodal.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import mujoco
import numpy as np

from im2flow2act.core.registry import Registry
from im2flow2act.policies.sim.objects import (
    BOWL_RADIUS,
    CLOTH_COUNT,
    MUG_HEIGHT,
    MUG_RADIUS,
    PLATE_HALF_HEIGHT,
    PLATE_RADIUS,
    Pose2D,
    bowl,
    cloth,
    drawer,
    mug,
    plate,
)

TASKS: Registry[Task] = Registry("task")


def task_names() -> list[str]:
    """Every registered task, in the order registered: the default task list of every stage. Play seeds
    depend on a task's place in the list, so the order is kept (``TASKS.names()`` sorts)."""
    return TASKS.registered()


@dataclass
class Waypoint:
    """Move the end effector to ``position`` (and ``rotation``) over ``steps`` control steps."""

    position: np.ndarray
    gripper: float
    steps: int
    rotation: np.ndarray | None = None


@dataclass
class Surface:
    """A flat top that something can be set down on: play puts objects on other objects, not only on the
    table."""

    centre: np.ndarray
    """World position of the top's centre (z: the top's height)."""
    radius: float
    """How far from the centre a set-down object's centre may go and still stand on the top."""


DETOURS = ("left", "right")
"""The sphere's detour sides on its longest move (seen from above, facing the way it moves)."""


LAYOUT_SPLITS = ("all", "inside", "outside")


@dataclass
class TaskConfig:
    layouts: str = "all"
    """Which layouts a seed draws. ``all``: the whole range (every stage's default). ``inside`` and
    ``outside`` split that range in two, so a model trained on ``inside`` layouts can be tested on layouts
    no training clip is a near copy of (nearest-neighbour retrieval wins on ``all``): the table scene's
    arrangements of mug, plate and bowl over its three slots (two of the six are ``outside``; every object
    still visits every slot ``inside``), the drawer cabinet's sideways position (its last 4 of 12 cm are
    ``outside``) and the cloth's (its last 3 of 12 cm)."""

    def __post_init__(self) -> None:
        if self.layouts not in LAYOUT_SPLITS:
            raise ValueError(f"layouts must be one of {', '.join(LAYOUT_SPLITS)}, got {self.layouts!r}")


def split_range(low: float, high: float, cut: float, layouts: str) -> tuple[float, float]:
    """The part of [low, high] that split ``layouts`` draws from: below ``cut`` inside, above it outside."""
    return {"all": (low, high), "inside": (low, cut), "outside": (cut, high)}[layouts]


class Task(ABC):
    name: str = ""
    instruction: str = ""
    object_prompt: str = ""
    tracked: tuple[str, ...] = ()
    """Bodies (or the flex ``cloth``) whose surface points get ground-truth tracks."""
    sphere_home = np.array([0.0, -0.25, 0.3])
    modes: tuple[str, ...] = ()
    """The sphere demonstration's discrete choices (its multimodality): the side of its detour ("left" or
    "right" of the direction of the longest move, seen from above) and, for the cloth, which corner it
    folds, joined by "+". ``human(..., mode=...)`` forces one; ``last_mode`` is the one the last call took."""

    def __init__(self, config: TaskConfig | None = None) -> None:
        self.config = config or TaskConfig()
        self.last_mode = ""

    def _check_mode(self, mode: str | None) -> None:
        if mode is not None and mode not in self.modes:
            modes = ", ".join(self.modes) or "none"
            raise ValueError(f"{self.name}: unknown demonstration mode {mode!r}; modes: {modes}")

    @abstractmethod
    def mjcf(self) -> tuple[list[str], list[str]]:
        """(asset xml snippets, body xml snippets) of the task's objects."""

    @abstractmethod
    def reset_layout(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Place the objects for one episode."""

    @abstractmethod
    def success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool: ...

    @abstractmethod
    def expert(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> list[Waypoint]:
        """Waypoints of the scripted robot expert from the current state."""

    @abstractmethod
    def human(
        self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator, mode: str | None = None
    ) -> list[Waypoint]:
        """Waypoints of the sphere agent from the current state (randomised; ``mode`` forces its discrete
        choices, one of ``modes``, and leaves the rest of the draws as they would be)."""

    def grasp_points(self, model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """Where the sphere agent can take hold: attachment name → world position."""
        return {}

    def surfaces(self, model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, Surface]:
        """Flat tops (other than the table) that play may set a held object down on."""
        return {}

    def progress(self, model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, float]:
        """How far an attempt has got, in a few named numbers (cm, degrees): a success rate alone says
        nothing of whether the object was reached, lifted or carried; these do."""
        return {}

    def attachments(self) -> dict[str, str]:
        """Attachment name → the body the sphere welds to when it holds that thing."""
        return {}


def _flex_id(model, name: str) -> int:
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_FLEX, name)


def _body_pos(model, data, name: str) -> np.ndarray:
    return data.xpos[model.body(name).id].copy()


def _free_qpos(model, name: str) -> int:
    return model.joint(f"{name}_joint").qposadr[0]


def _set_free_pose(model, data, name: str, x: float, y: float, z: float, yaw: float) -> None:
    adr = _free_qpos(model, name)
    data.qpos[adr : adr + 3] = (x, y, z)
    data.qpos[adr + 3 : adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def _yaw_rotation(yaw: float) -> np.ndarray:
    """Top-down gripper rotated by ``yaw`` about world z."""
    c, s = math.cos(yaw), math.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return rz @ np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


OPEN, CLOSED = 0.1, 0.0


# --------------------------------------------------------------------------- mug, plate, bowl
OUTSIDE_ARRANGEMENTS = ((0, 1, 2), (1, 2, 0))
"""Slots of (mug, plate, bowl) held out by ``layouts: outside``: no object shares a slot between the two,
so inside every object still stands in every slot."""
TABLE_ARRANGEMENTS = {
    "outside": OUTSIDE_ARRANGEMENTS,
    "inside": tuple(a for a in itertools.permutations(range(3)) if a not in OUTSIDE_ARRANGEMENTS),
}


class _TableTask(Task):
    """Mug, plate and bowl on the table; the layout depends on the seed only."""

    object_prompt = "red mug"
    tracked = ("mug",)
    goal = ""
    """The body the mug is taken to (progress measures the distance to it)."""

    def mjcf(self):
        parts = [mug(Pose2D(0, 0)), plate(Pose2D(0.2, 0.1)), bowl(Pose2D(-0.2, 0.1))]
        return [a for a, _ in parts], [b for _, b in parts]

    def attachments(self):
        return {"mug": "mug"}

    def _arrangement(self, rng: np.random.Generator) -> np.ndarray:
        if self.config.layouts == "all":
            return rng.permutation(3)
        chosen = TABLE_ARRANGEMENTS[self.config.layouts]
        return np.array(chosen[int(rng.integers(len(chosen)))])

    def reset_layout(self, model, data, rng):
        # three slots across the table, shuffled; small jitter; the mug handle points away from the robot
        slots = np.array([[-0.22, 0.02], [0.0, 0.08], [0.22, 0.02]])
        order = self._arrangement(rng)
        jitter = rng.uniform(-0.03, 0.03, size=(3, 2))
        mug_xy, plate_xy, bowl_xy = (slots[order[i]] + jitter[i] for i in range(3))
        _set_free_pose(
            model, data, "mug", mug_xy[0], mug_xy[1], MUG_HEIGHT / 2 + 0.001, rng.uniform(0.3, 2.8)
        )
        model.body("plate").pos[:2] = plate_xy
        model.body("bowl").pos[:2] = bowl_xy

    def grasp_points(self, model, data):
        return {"mug": _body_pos(model, data, "mug")}

    def surfaces(self, model, data):
        # not the bowl: a mug set down inside it often catches its wall and falls (docs/results/policies.md)
        plate_top = _body_pos(model, data, "plate") + [0, 0, PLATE_HALF_HEIGHT]
        return {"plate": Surface(plate_top, PLATE_RADIUS - MUG_RADIUS)}

    def progress(self, model, data):
        mug = _body_pos(model, data, "mug")
        up = float(np.clip(data.xmat[model.body("mug").id].reshape(3, 3)[2, 2], -1.0, 1.0))
        return {
            "mug_height_cm": 100.0 * (mug[2] - MUG_HEIGHT / 2),
            "mug_tilt_deg": math.degrees(math.acos(up)),
            f"mug_to_{self.goal}_cm": 100.0
            * float(np.linalg.norm(mug[:2] - _body_pos(model, data, self.goal)[:2])),
        }

    def grip_rotation(self, model, data) -> np.ndarray:
        """Top-down, fingers closing across the handle (not onto it), with the least wrist turn."""
        handle = data.xmat[model.body("mug").id].reshape(3, 3)[:, 0]
        yaw = math.atan2(handle[1], handle[0]) + math.pi / 2
        yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2
        return _yaw_rotation(yaw)

    def _grasp_waypoints(self, model, data, rng, jitter: float) -> tuple[list[Waypoint], np.ndarray]:
        m = _body_pos(model, data, "mug")
        grasp = m + np.array([0, 0, 0.01]) + rng.uniform(-jitter, jitter, 3) * [1, 1, 0]
        above = grasp + [0, 0, 0.15]
        rot = self.grip_rotation(model, data)
        return [
            Waypoint(above, OPEN, 12, rot),
            Waypoint(grasp, OPEN, 8, rot),
            Waypoint(grasp, CLOSED, 5, rot),
            Waypoint(above, CLOSED, 8, rot),
        ], above


@TASKS.register("pick_place", TaskConfig)
class PickPlace(_TableTask):
    name = "pick_place"
    instruction = "put the mug on the plate"
    goal = "plate"

    def success(self, model, data) -> bool:
        m, p = _body_pos(model, data, "mug"), _body_pos(model, data, "plate")
        speed = np.linalg.norm(data.qvel[model.joint("mug_joint").dofadr[0] :][:3])
        upright = data.xmat[model.body("mug").id].reshape(3, 3)[2, 2] > 0.9
        return bool(
            np.linalg.norm(m[:2] - p[:2]) < 0.1 and m[2] < MUG_HEIGHT / 2 + 0.03 and speed < 0.05 and upright
        )

    def expert(self, model, data, rng):
        return self._place(model, data, rng, grasp_jitter=0.0)

    def _place(self, model, data, rng, grasp_jitter: float) -> list[Waypoint]:
        waypoints, above = self._grasp_waypoints(model, data, rng, grasp_jitter)
        p = _body_pos(model, data, "plate")
        place = np.array([p[0], p[1], MUG_HEIGHT / 2 + 0.025])
        rot = waypoints[-1].rotation
        return waypoints + [
            Waypoint(place + [0, 0, 0.15], CLOSED, 14, rot),
            Waypoint(place, CLOSED, 8, rot),
            Waypoint(place, OPEN, 5, rot),
            Waypoint(place + [0, 0, 0.15], OPEN, 8, rot),
        ]

    modes = DETOURS

    def human(self, model, data, rng, mode=None):
        self._check_mode(mode)
        waypoints, self.last_mode = _humanise(self._place(model, data, rng, grasp_jitter=0.015), rng, mode)
        return waypoints


@TASKS.register("pour", TaskConfig)
class Pour(_TableTask):
    name = "pour"
    instruction = "pour the mug into the bowl"
    goal = "bowl"

    def success(self, model, data) -> bool:
        m, b = _body_pos(model, data, "mug"), _body_pos(model, data, "bowl")
        tilt = math.degrees(math.acos(np.clip(data.xmat[model.body("mug").id].reshape(3, 3)[2, 2], -1, 1)))
        return bool(np.linalg.norm(m[:2] - b[:2]) < BOWL_RADIUS + 0.02 and m[2] > 0.06 and tilt > 60)

    def expert(self, model, data, rng):
        return self._pour(model, data, rng, grasp_jitter=0.0)

    def _pour(self, model, data, rng, grasp_jitter: float) -> list[Waypoint]:
        waypoints, above = self._grasp_waypoints(model, data, rng, grasp_jitter)
        b = _body_pos(model, data, "bowl")
        side = 1.0 if b[0] < 0 else -1.0  # hold the mug beside the bowl's centre, tip it towards it
        over = np.array([b[0] + side * 0.05, b[1], 0.22])
        rot = waypoints[-1].rotation
        angle = -side * 1.4  # tip the mug's top towards the bowl's centre, ~80°
        c, s = math.cos(angle), math.sin(angle)
        tip = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # about world y: the mug tips sideways
        return waypoints + [
            Waypoint(over, CLOSED, 14, rot),
            Waypoint(over, CLOSED, 14, tip @ rot),
            Waypoint(over, CLOSED, 6, tip @ rot),
        ]

    modes = DETOURS

    def human(self, model, data, rng, mode=None):
        self._check_mode(mode)
        waypoints, self.last_mode = _humanise(self._pour(model, data, rng, grasp_jitter=0.015), rng, mode)
        return waypoints


# --------------------------------------------------------------------------- drawer
@TASKS.register("open_drawer", TaskConfig)
class OpenDrawer(Task):
    name = "open_drawer"
    instruction = "open the drawer"
    object_prompt = "red drawer"
    tracked = ("drawer",)

    def mjcf(self):
        asset, body = drawer(Pose2D(0.28, 0.05, -math.pi / 2))
        return [asset], [body]

    def reset_layout(self, model, data, rng):
        # the front faces the table centre, turned a little towards the camera so its face is seen
        body = model.body("drawer_cabinet")
        x = rng.uniform(0.25, 0.31)
        body.pos[:2] = (x, rng.uniform(*split_range(-0.04, 0.08, 0.04, self.config.layouts)))
        yaw = -math.pi / 2 - rng.uniform(0.35, 0.65)
        body.quat[:] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))

    def opening(self, model, data) -> float:
        return float(data.qpos[model.joint("drawer_slide").qposadr[0]])

    def success(self, model, data) -> bool:
        return self.opening(model, data) >= 0.10

    def progress(self, model, data):
        return {"drawer_opening_cm": 100.0 * self.opening(model, data)}

    def _handle(self, model, data) -> np.ndarray:
        gid = model.geom("drawer_handle").id
        return data.geom_xpos[gid].copy()

    def grasp_points(self, model, data):
        return {"drawer": self._handle(model, data)}

    def attachments(self):
        return {"drawer": "drawer"}

    def expert(self, model, data, rng):
        h = self._handle(model, data)
        joint = model.joint("drawer_slide").id
        out = data.xaxis[joint].copy()  # world direction the drawer opens in
        cabinet = model.body("drawer_cabinet").id
        bar = data.xmat[cabinet].reshape(3, 3)[:, 0]  # the handle bar runs along the cabinet's x
        rot = _yaw_rotation(math.atan2(bar[1], bar[0]))  # fingers open along the bar, clear of its ends
        grip = h + [0, 0, 0.005]
        pulled = grip + 0.15 * out
        return [
            Waypoint(grip + 0.08 * out + [0, 0, 0.12], OPEN, 12, rot),
            Waypoint(grip, OPEN, 10, rot),
            Waypoint(grip, CLOSED, 5, rot),
            Waypoint(pulled, CLOSED, 16, rot),
            Waypoint(pulled, OPEN, 4, rot),
            Waypoint(pulled + [0, 0, 0.12], OPEN, 6, rot),
        ]

    def human(self, model, data, rng, mode=None):
        self._check_mode(mode)  # the pull is too short for a detour: one mode
        waypoints, self.last_mode = _humanise(self.expert(model, data, rng), rng)
        return waypoints


# --------------------------------------------------------------------------- cloth
CORNERS = {
    "near_left": 0,
    "near_right": CLOTH_COUNT - 1,
    "far_left": CLOTH_COUNT * (CLOTH_COUNT - 1),
    "far_right": CLOTH_COUNT * CLOTH_COUNT - 1,
}


@TASKS.register("fold_cloth", TaskConfig)
class FoldCloth(Task):
    name = "fold_cloth"
    instruction = "fold the cloth in half"
    object_prompt = "checkered cloth"
    tracked = ("cloth",)
    fold_pairs = (("near_left", "far_left"), ("near_right", "far_right"))
    """(moved corner, target corner): success when either pair ends within 7 cm."""

    def mjcf(self):
        asset, body = cloth(Pose2D(0.0, 0.05))
        return [asset], [body]

    def _vertex_qpos(self, model) -> np.ndarray:
        flex = _flex_id(model, "cloth")
        bodies = model.flex_vertbodyid[
            model.flex_vertadr[flex] : model.flex_vertadr[flex] + model.flex_vertnum[flex]
        ]
        return np.array([[model.jnt_qposadr[model.body_jntadr[b]] + k for k in range(3)] for b in bodies])

    def reset_layout(self, model, data, rng):
        x = rng.uniform(*split_range(-0.06, 0.06, 0.03, self.config.layouts))
        shift = (x, rng.uniform(-0.04, 0.04), 0.0)
        for adr in self._vertex_qpos(model):
            data.qpos[adr] = shift

    def corners(self, model, data) -> dict[str, np.ndarray]:
        flex = _flex_id(model, "cloth")
        start = model.flex_vertadr[flex]
        return {k: data.flexvert_xpos[start + v].copy() for k, v in CORNERS.items()}

    def success(self, model, data) -> bool:
        c = self.corners(model, data)
        return any(np.linalg.norm(c[a] - c[b]) < 0.07 for a, b in self.fold_pairs)

    def progress(self, model, data):
        c = self.corners(model, data)
        return {"corner_gap_cm": 100.0 * min(float(np.linalg.norm(c[a] - c[b])) for a, b in self.fold_pairs)}

    def grasp_points(self, model, data):
        return {f"cloth_{k}": v for k, v in self.corners(model, data).items()}

    def attachments(self):
        return {f"cloth_{k}": f"cloth_{v}" for k, v in CORNERS.items()}

    def expert(self, model, data, rng):
        return self._fold(model, data, pair=0)

    def _fold(self, model, data, pair: int) -> list[Waypoint]:
        c = self.corners(model, data)
        moved, target = self.fold_pairs[pair]
        a, b = c[moved], c[target]
        rot = _yaw_rotation(0.0)
        mid = (a + b) / 2 + [0, 0, 0.12]
        drop = b + [0, 0, 0.06]  # let the corner fall onto its target: pressing it down drags the cloth
        return [
            Waypoint(a + [0, 0, 0.1], OPEN, 10, rot),
            Waypoint(a + [0, 0, 0.003], OPEN, 8, rot),
            Waypoint(a + [0, 0, 0.003], CLOSED, 5, rot),
            Waypoint(mid, CLOSED, 14, rot),
            Waypoint(drop, CLOSED, 14, rot),
            Waypoint(drop, OPEN, 4, rot),
            Waypoint(drop + [0, 0, 0.07], OPEN, 8, rot),
        ]

    modes = tuple(f"{pair[0]}+{side}" for pair in fold_pairs for side in ("left", "right"))

    def human(self, model, data, rng, mode=None):
        self._check_mode(mode)
        pair = int(rng.integers(2))
        corner, side = mode.split("+") if mode else (None, None)
        if corner is not None:
            pair = [p[0] for p in self.fold_pairs].index(corner)
        waypoints, side = _humanise(self._fold(model, data, pair=pair), rng, side)
        self.last_mode = f"{self.fold_pairs[pair][0]}+{side}"
        return waypoints


def _humanise(
    waypoints: list[Waypoint], rng: np.random.Generator, side: str | None = None
) -> tuple[list[Waypoint], str]:
    """Random timing (±30 %) and a detour left or right on the longest move: multimodal demonstrations.
    Returns the waypoints and the detour's side ("" when no move is long enough); ``side`` forces it
    without changing the other draws."""
    out = [
        Waypoint(w.position.copy(), w.gripper, max(2, round(w.steps * rng.uniform(0.7, 1.3))), w.rotation)
        for w in waypoints
    ]
    if len(out) > 3:
        moves = [np.linalg.norm(out[i].position - out[i - 1].position) for i in range(1, len(out))]
        i = int(np.argmax(moves)) + 1
        if moves[i - 1] > 0.15:
            drawn = DETOURS[0] if rng.choice([-1.0, 1.0]) > 0 else DETOURS[1]
            side = side or drawn
            a, b = out[i - 1].position, out[i].position
            d = b - a
            normal = np.array([-d[1], d[0], 0.0])  # d turned 90° anticlockwise seen from above: its left
            normal /= np.linalg.norm(normal) + 1e-9
            sign = 1.0 if side == "left" else -1.0
            via = (a + b) / 2 + sign * 0.08 * normal + [0, 0, 0.05]
            half = max(2, out[i].steps // 2)
            out.insert(i, Waypoint(via, out[i].gripper, half, out[i].rotation))
            out[i + 1].steps = half
            return out, side
    return out, ""
