"""The mode classifier on real simulated demonstrations of each mode: the true flows of the forced modes
are the references, a real tracker's flow of each demonstration is classified, and the modes' average
(what a regressor tends to) lands between them."""

from __future__ import annotations

import numpy as np
import pytest

from im2flow2act.im2flow.modes import classify_mode, mean_flow, mode_distances, mode_report
from im2flow2act.policies.sim.agents import follow
from im2flow2act.policies.sim.env import SimEnv
from im2flow2act.policies.sim.record import RecordConfig, record
from im2flow2act.policies.sim.scene import SceneConfig
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import resample_tracks

FRAMES = 16


def as_flow(tracks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    resampled, vis, _ = resample_tracks(tracks, visibility, FRAMES)
    return np.concatenate([resampled, vis[..., None].astype(np.float32)], axis=-1)


def demonstrations(task: str, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per mode of ``task``: (its true flow, LK's flow of its rendered video from the same points)."""
    out = {}
    with SimEnv(task, "sphere", SceneConfig(image_size=(96, 96))) as env:
        for mode in env.task.modes:

            def agent(e, rng, mode=mode):
                return follow(e, e.task.human(e.model, e.data, rng, mode=mode))

            ep = record(env, seed, agent, RecordConfig(num_points=48, store_depth=False)).episode
            assert env.task.last_mode == mode
            queries = np.concatenate([np.zeros((48, 1), np.float32), ep.tracks[0]], axis=1)
            tracked, tracked_vis = TRACKERS.build("lk").track(ep.frames, queries)
            out[mode] = (as_flow(ep.tracks, ep.visibility), as_flow(tracked, tracked_vis))
    return out


@pytest.fixture(scope="module")
def demos_of():
    """Each task's forced-mode demonstrations of layout 7, made once for the module."""
    made: dict[str, dict] = {}

    def get(task: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if task not in made:
            made[task] = demonstrations(task, seed=7)
        return made[task]

    return get


@pytest.mark.parametrize("task", ["pick_place", "fold_cloth"])
def test_each_modes_tracked_flow_is_classified_as_that_mode(task, demos_of):
    demos = demos_of(task)
    truth = {mode: true for mode, (true, _) in demos.items()}
    assert len(truth) == {"pick_place": 2, "fold_cloth": 4}[task]
    for mode, (_, tracked) in demos.items():
        assert classify_mode(tracked, truth) == mode
    report = mode_report(np.stack([tracked for _, tracked in demos.values()]), truth)
    assert report["covers_all"] and report["modes_apart_px"] > 3.0


def apart_of(truth: dict) -> float:
    return mode_distances(truth["left"], truth)["right"]


def test_the_modes_average_lands_between_the_detours(demos_of):
    truth = {mode: true for mode, (true, _) in demos_of("pick_place").items()}
    average = mean_flow(truth)
    report = mode_report(average[None], truth)
    assert report["to_mean_px"] < 0.05 * apart_of(truth) and report["covers_all"] is False
    # equally far from both detours: half of what separates them, which is more than a few pixels
    apart = apart_of(truth)
    distances = mode_distances(average, truth)
    # (about: the average sees only the points every mode sees, so its path is not exactly the midpoint)
    assert distances["left"] == pytest.approx(apart / 2, rel=0.2)
    assert distances["right"] == pytest.approx(apart / 2, rel=0.2) and apart > 3.0


def test_an_unknown_mode_is_refused_naming_the_modes():
    with (
        SimEnv("pick_place", "sphere", SceneConfig(image_size=(48, 48))) as env,
        pytest.raises(ValueError, match="modes: left, right"),
    ):
        env.reset(0)
        env.task.human(env.model, env.data, np.random.default_rng(0), mode="up")


def test_stored_demonstrations_record_the_mode_they_took(demos_root):
    from im2flow2act.policies.sim.tasks import TASKS
    from im2flow2act.preprocessing.dataset import FlowDataset

    for view in FlowDataset(demos_root):
        task = TASKS.build(view.attrs["task_name"])
        assert view.attrs["human_mode"] in (task.modes or ("",)), (view.name, view.attrs["human_mode"])
