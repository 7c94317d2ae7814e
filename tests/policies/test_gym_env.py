"""The gymnasium wrapper: every registered task is a gymnasium id that makes, resets and steps."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from im2flow2act.policies.sim.env import Action
from im2flow2act.policies.sim.gym_env import GYM_IDS, SimGymEnv, gym_id
from im2flow2act.policies.sim.tasks import task_names

SIZE = (32, 32)


def test_every_registered_task_has_a_gym_id():
    assert [gym_id(t) for t in task_names()] == GYM_IDS
    assert gym_id("pick_place") == "im2flow2act/PickPlace-v0"
    assert all(env_id in gymnasium.registry for env_id in GYM_IDS)


@pytest.mark.parametrize("task", task_names())
def test_make_reset_and_step_every_task(task):
    env = gymnasium.make(gym_id(task), image_size=SIZE, render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=5)
        assert obs in env.observation_space and obs["rgb"].shape == (SIZE[1], SIZE[0], 3)
        assert info["layout_seed"] == 5 and info["is_success"] is False and info["progress"]
        again, _ = env.reset(seed=5)  # the seed is the layout: the same first frame
        assert all(np.array_equal(obs[k], again[k]) for k in obs)
        other, _ = env.reset(seed=6)
        assert not np.array_equal(obs["rgb"], other["rgb"])
        env.action_space.seed(0)
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert obs in env.observation_space and reward in (0.0, 1.0)
            assert terminated == info["is_success"] and not truncated
            assert set(info) >= {"is_success", "progress"}
        assert env.render().shape == (SIZE[1], SIZE[0], 3)
    finally:
        env.close()


def test_actions_are_the_action_vector_and_proprio_matches_it():
    with SimGymEnv("pick_place", image_size=SIZE) as env:
        obs, _ = env.reset(seed=1)
        here = Action.from_vector(obs["proprio"])
        hold = Action(here.position, here.rotation, 0.08).as_vector()
        assert hold.shape == env.action_space.shape
        obs, *_ = env.step(hold)
        assert np.linalg.norm(obs["proprio"][:3] - here.position) < 0.02  # told to stay, it stays


def test_episodes_are_truncated_after_max_episode_steps():
    env = gymnasium.make(gym_id("open_drawer"), image_size=SIZE, max_episode_steps=2)
    try:
        obs, _ = env.reset(seed=0)
        hold = obs["proprio"]
        assert not env.step(hold)[3]
        assert env.step(hold)[3]  # truncated
    finally:
        env.close()


def test_gymnasium_env_checker_passes():
    env = gymnasium.make(gym_id("pick_place"), image_size=SIZE, render_mode="rgb_array")
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


def test_rgb_array_rendering_works_with_gymnasium_wrappers(tmp_path):
    env = gymnasium.wrappers.RenderCollection(
        gymnasium.make(gym_id("fold_cloth"), image_size=SIZE, render_mode="rgb_array")
    )
    try:
        obs, _ = env.reset(seed=2)
        env.step(obs["proprio"])
        frames = env.render()
        assert len(frames) == 2 and all(f.shape == (SIZE[1], SIZE[0], 3) for f in frames)
        assert env.metadata["render_fps"] == 10
    finally:
        env.close()


def test_record_video_writes_an_episode(tmp_path):
    pytest.importorskip("moviepy", reason="gymnasium's RecordVideo writes with moviepy")
    recorded = gymnasium.wrappers.RecordVideo(
        gymnasium.make(gym_id("pour"), image_size=SIZE, render_mode="rgb_array"), str(tmp_path / "videos")
    )
    obs, _ = recorded.reset(seed=0)
    recorded.step(obs["proprio"])
    recorded.close()
    assert list((tmp_path / "videos").glob("*.mp4"))
