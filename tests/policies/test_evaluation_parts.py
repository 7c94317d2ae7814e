"""Evaluation's pluggable parts: every registered plan source and online tracker builds and runs on a real
demonstration in the real sim; unknown names fail clearly; task lists default to the task registry."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_configs import tiny_generator_config, tiny_policy_config

from im2flow2act.core.config import ConfigError
from im2flow2act.core.registry import UnknownComponentError
from im2flow2act.policies.evaluate import (
    EpisodeLog,
    EvalConfig,
    build_plan_source,
    episode_settings,
    evaluate,
    plan_source_options,
)
from im2flow2act.policies.online_tracking import (
    ONLINE_TRACKERS,
    CameraObservation,
    OracleTracker,
    build_online_tracker,
)
from im2flow2act.policies.plans import PLAN_SOURCES, Plan
from im2flow2act.policies.sim.env import Action, SimEnv
from im2flow2act.policies.sim.scene import SceneConfig
from im2flow2act.policies.sim.tasks import TASKS, task_names
from im2flow2act.preprocessing.dataset import FlowDataset

TINY_TRACKER_ARGS = {"cotracker3-online": {"random_weights": True, "model_resolution": [64, 64], "iters": 1}}
"""Options for trackers that need weights; every other registered tracker builds from its defaults."""


@pytest.fixture(scope="module")
def generator_path(tmp_path_factory):
    from im2flow2act.im2flow.generator import FlowGenerator

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gen") / "generator"
    return FlowGenerator(tiny_generator_config()).save_pretrained(folder)


@pytest.fixture(scope="module")
def demo(demos_root):
    return next(v for v in FlowDataset(demos_root) if v.attrs["task_name"] == "pick_place")


@pytest.fixture
def env(demo):
    with SimEnv("pick_place", "robot", SceneConfig(image_size=demo.frame_size)) as env:
        env.reset(int(demo.attrs["seed"]))
        yield env


def tiny_plan_options(name: str, generator_path) -> dict:
    return {"generated": {"generator": str(generator_path), "num_flows": 2, "moving_threshold_px": 0.5}}.get(
        name, {}
    )


@pytest.mark.parametrize("name", PLAN_SOURCES.names())
def test_every_plan_source_builds_and_plans_a_demonstration(name, demo, env, generator_path):
    source = PLAN_SOURCES.build(name, tiny_plan_options(name, generator_path))
    plan = source.plan(demo, env)
    assert isinstance(plan, Plan)
    t, n, two = plan.tracks.shape
    assert two == 2 and t > 1 and n > 0 and plan.tracks.dtype == np.float32
    assert plan.visibility.shape == (t, n) and plan.visibility.dtype == bool
    assert plan.image.shape == (demo.frame_size[1], demo.frame_size[0], 3) and plan.image.dtype == np.uint8
    assert np.isfinite(plan.tracks).all() and plan.visibility[0].any()


@pytest.mark.parametrize("name", ONLINE_TRACKERS.names())
def test_every_online_tracker_follows_points_in_the_loop(name, demo, env):
    tracker = build_online_tracker(name, TINY_TRACKER_ARGS.get(name, {}))
    tracker.bind(env)
    first = CameraObservation.from_env(env)
    queries = demo.tracks[0, demo.visibility[0]][:8]  # points on the object in the demo's first frame
    tracker.reset(first, queries)
    hold = Action(*env.ee_pose(), 0.08)
    for _ in range(2):
        env.step(hold)
        xy, vis = tracker.step(CameraObservation.from_env(env))
        assert xy.shape == (len(queries), 2) and vis.shape == (len(queries),) and vis.dtype == bool
        assert np.isfinite(xy).all()
    if name in ("oracle", "lk", "rigid-lk"):  # the arm held still: the object's points stayed where they were
        assert np.abs(xy[vis] - queries[vis]).max() < 0.05 and vis.mean() > 0.5


def test_only_the_oracle_reads_the_simulator(demo, env):
    oracle = build_online_tracker("oracle")
    assert isinstance(oracle, OracleTracker)
    with pytest.raises(RuntimeError, match="bind"):
        oracle.reset(CameraObservation.from_env(env), demo.tracks[0, :4])
    calls = []
    rgb = env.render()
    obs = CameraObservation(rgb, lambda: calls.append("depth") or env.renderer.depth(env.data), env.camera)
    lk = build_online_tracker("lk")
    lk.bind(env)
    lk.reset(obs, demo.tracks[0, :4])
    assert calls == []  # an RGB tracker costs no depth render
    assert obs.depth.shape == rgb.shape[:2] and calls == ["depth"] and obs.depth is obs.depth
    assert np.allclose(obs.camera.intrinsics, env.camera().intrinsics) and obs.size == demo.frame_size


def test_unknown_names_fail_listing_the_registered_ones():
    with pytest.raises(UnknownComponentError, match="did you mean 'tracked'.*registered: generated, ground_"):
        PLAN_SOURCES.build("trackd")
    with pytest.raises(UnknownComponentError, match="unknown online tracker 'sam'.*registered: .*lk, oracle"):
        build_online_tracker("sam")
    with pytest.raises(ValueError, match="'cotracker3' cannot track online; online trackers: .*oracle"):
        build_online_tracker("cotracker3")
    with pytest.raises(UnknownComponentError, match="unknown plan source 'demo'"):
        evaluate(EvalConfig(plan_source="demo", policy="missing"), "unused", progress=False)
    with pytest.raises(UnknownComponentError, match="unknown task 'stack'"):
        evaluate(EvalConfig(tasks=["stack"], policy="missing"), "unused", progress=False)


def test_plan_options_come_from_the_eval_config_and_plan_args():
    cfg = EvalConfig(plan_source="generated", generator="g", num_flows=3, plan_args={"num_flows": 5})
    assert plan_source_options(cfg) == {
        "generator": "g",
        "num_flows": 5,
        "moving_threshold_px": 10.0,
        "moving_fraction": 0.0,
        "plan_on_object": True,  # one setting for both plan sources
    }
    tracked = plan_source_options(EvalConfig(plan_args={"grid": 8}))
    assert tracked["plan_tracker"] == "lk" and tracked["grid"] == 8 and tracked["plan_tracker_args"]
    assert plan_source_options(EvalConfig(plan_source="ground_truth")) == {}
    with pytest.raises(ConfigError, match="unknown config key 'grids'.*did you mean 'grid'"):
        build_plan_source(EvalConfig(plan_args={"grids": 8}))


def tiny_evaluation(play_root, folder) -> EvalConfig:
    """A short ground-truth-plan evaluation of an untrained tiny policy (normaliser fitted on the play),
    saved to ``folder``: real rollouts, seconds each."""
    from im2flow2act.policies.data import PlayWindows, WindowConfig
    from im2flow2act.policies.flow_policy import FlowPolicy

    policy = FlowPolicy(tiny_policy_config()).eval()
    policy.normalizer.fit(PlayWindows(play_root, WindowConfig(num_points=16, plan_frames=8)).statistics())
    return EvalConfig(
        policy=str(policy.save_pretrained(folder)),
        demos=str(play_root),
        episodes=1,
        plan_source="ground_truth",
        max_chunks=2,
        action_horizon=1,
        action_samples=2,
        num_points=8,
        videos=False,
    )


def test_task_lists_default_to_the_task_registry(play_root, tmp_path):
    from im2flow2act.policies.pipeline import PipelineConfig
    from im2flow2act.policies.sim.generate import GenerateConfig

    assert task_names() == EvalConfig().tasks == PipelineConfig().tasks == GenerateConfig().tasks
    assert sorted(task_names()) == TASKS.names()
    cfg = replace(tiny_evaluation(play_root, tmp_path / "policy"), max_chunks=1)
    summary = evaluate(cfg, tmp_path / "eval", progress=False)  # the play has two of the four scenes
    assert list(summary["tasks"]) == ["pick_place", "open_drawer"]


def test_an_interrupted_evaluation_resumes_and_never_mixes_two_evaluations(play_root, tmp_path):
    cfg = replace(tiny_evaluation(play_root, tmp_path / "policy"), tasks=["pick_place", "open_drawer"])
    folder = Path(cfg.policy)
    out = tmp_path / "eval"
    full = evaluate(cfg, out, progress=False)
    log = out / "episodes_ground_truth_oracle.jsonl"
    rows = log.read_text().splitlines()
    assert len(rows) == 2
    log.write_text(rows[0] + "\n")  # as if stopped after the first episode
    resumed = evaluate(cfg, out, progress=False)
    assert len(log.read_text().splitlines()) == 2  # only the missing episode ran again
    assert resumed["tasks"] == full["tasks"]  # episodes are seeded by their layout: the same figures
    moved = shutil.copytree(folder, tmp_path / "released" / "policy")
    assert evaluate(replace(cfg, policy=str(moved)), out, progress=False)["tasks"] == full["tasks"]
    assert len(log.read_text().splitlines()) == 2  # the same weights elsewhere: nothing ran again
    before = log.read_text()
    with pytest.raises(ValueError, match="different evaluation"):
        evaluate(replace(cfg, action_samples=3), out, progress=False)
    assert log.read_text() == before  # nothing written is lost

    elsewhere = tmp_path / "bench"
    elsewhere.mkdir()
    assert EpisodeLog(elsewhere, replace(cfg, action_samples=3)).take_from(log) == 0  # other settings
    assert EpisodeLog(elsewhere, cfg).take_from(log) == 2
    assert EpisodeLog(elsewhere, cfg).take_from(log) == 0  # already there

    # a plan source's own defaults count (a changed default changes the episodes), except at the values
    # that reproduce the logs written before they existed: generated plans now complete rigid objects
    assert episode_settings(replace(cfg, plan_source="generated"))["plan.complete_rigid"] is True
    assert not any(k.startswith("plan.") for k in episode_settings(cfg))
    assert evaluate(cfg, elsewhere, progress=False)["tasks"] == full["tasks"]
    assert len((elsewhere / log.name).read_text().splitlines()) == 2  # adopted, not run again
