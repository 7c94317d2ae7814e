"""A thin gymnasium wrapper over :class:`~im2flow2act.policies.sim.env.SimEnv`, for tools that speak
gymnasium (wrappers such as ``RecordVideo``, vectorised runners, other RL or imitation libraries).

Every registered task is a gymnasium id, ``im2flow2act/<TaskName>-v0`` (``pick_place`` →
``im2flow2act/PickPlace-v0``), registered when this module is imported::

    import gymnasium
    import im2flow2act.policies.sim.gym_env  # noqa: F401  (registers the ids)

    env = gymnasium.make("im2flow2act/PickPlace-v0", image_size=(128, 128), render_mode="rgb_array")
    obs, info = env.reset(seed=3)  # seed = the layout seed, the same layout as SimEnv.reset(3)

Actions are :meth:`Action.as_vector` (10,): end-effector position, 6-D rotation, gripper opening. The
observation is what the robot's camera and joints give: RGB, depth (metres along the view axis) and the
proprioception (the action's layout). Reward 1 on success, else 0; an episode terminates on success and
is truncated after ``max_episode_steps``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from im2flow2act.policies.sim.env import Action, SimEnv
from im2flow2act.policies.sim.robot import MAX_WIDTH
from im2flow2act.policies.sim.scene import SceneConfig
from im2flow2act.policies.sim.tasks import task_names

MAX_EPISODE_STEPS = 200
"""Control steps before truncation (20 s at the scene's 10 Hz)."""
POSITION_LOW = (-0.45, -0.45, 0.0)
POSITION_HIGH = (0.45, 0.35, 0.6)
"""The action space's end-effector box (metres, world frame): the table in front of the arm and above it."""


def gym_id(task: str) -> str:
    """``pick_place`` → ``im2flow2act/PickPlace-v0``."""
    return f"im2flow2act/{''.join(part.capitalize() for part in task.split('_'))}-v0"


class SimGymEnv(gymnasium.Env):
    """One task with the robot, as a ``gymnasium.Env``; the underlying :class:`SimEnv` is ``self.sim``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str,
        image_size: tuple[int, int] = SceneConfig().image_size,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.sim = SimEnv(task, "robot", SceneConfig(image_size=tuple(image_size)))
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.metadata = {**self.metadata, "render_fps": self.sim.scene.control_hz}
        w, h = self.sim.scene.image_size
        # the layout of Action.as_vector: position, the rotation's first two columns, gripper opening
        self.action_space = spaces.Box(
            low=np.array([*POSITION_LOW, *[-1.0] * 6, 0.0], np.float32),
            high=np.array([*POSITION_HIGH, *[1.0] * 6, MAX_WIDTH], np.float32),
            dtype=np.float32,
        )
        dim = len(self.action_space.low)  # proprio has the action's layout
        self.observation_space = spaces.Dict(
            {
                "rgb": spaces.Box(0, 255, (h, w, 3), np.uint8),
                "depth": spaces.Box(0.0, np.inf, (h, w), np.float32),
                "proprio": spaces.Box(-np.inf, np.inf, (dim,), np.float32),
            }
        )
        self._steps = 0

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "rgb": self.sim.render(),
            "depth": self.sim.renderer.depth(self.sim.data),
            "proprio": self.sim.proprio(),
        }

    def _info(self) -> dict[str, Any]:
        return {
            "is_success": self.sim.success(),
            "progress": self.sim.progress(),
            "layout_seed": self.sim.seed,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``seed`` is the layout seed (as for ``SimEnv.reset``); without one a layout is drawn from the
        env's generator."""
        super().reset(seed=seed)
        layout = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        self.sim.reset(layout)
        self._steps = 0
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        self.sim.step(Action.from_vector(np.asarray(action, np.float64)))
        self._steps += 1
        info = self._info()
        success = info["is_success"]
        truncated = not success and self._steps >= self.max_episode_steps
        return self._observation(), float(success), success, truncated, info

    def render(self) -> np.ndarray | None:
        return self.sim.render() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.sim.close()


def register_gym_envs() -> list[str]:
    """Register every task of the task registry with gymnasium (once); returns their ids."""
    ids = []
    for task in task_names():
        env_id = gym_id(task)
        if env_id not in gymnasium.registry:
            gymnasium.register(
                env_id,
                entry_point=f"{__name__}:SimGymEnv",
                kwargs={"task": task},
                max_episode_steps=MAX_EPISODE_STEPS,
            )
        ids.append(env_id)
    return ids


GYM_IDS = register_gym_envs()
