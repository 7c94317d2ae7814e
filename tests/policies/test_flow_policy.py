"""The flow-conditioned policy, trained for real on a few recorded play episodes."""

from dataclasses import replace

import pytest
import torch
from tiny_configs import tiny_policy_config
from torch.utils.data import DataLoader

from im2flow2act.policies.data import PlayWindows, WindowConfig
from im2flow2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig
from im2flow2act.policies.train import load_policy


@pytest.fixture(scope="module")
def windows(play_root):
    return PlayWindows(play_root, WindowConfig(num_points=16, plan_frames=8))


def trained_policy(windows, run, steps: int):
    """A tiny policy really trained for a few steps, exported to the model folder ``run/policy``."""
    from im2flow2act.policies.train import TrainConfig, Trainer

    config = TrainConfig(
        policy=tiny_policy_config(), windows=windows.config, batch_size=4, max_steps=steps, warmup_steps=1
    )
    Trainer(config, run, windows).fit(progress=False)
    return run / "policy"


@pytest.mark.parametrize("point_attention", [False, True])
def test_tiny_policy_loss_goes_down_on_play(windows, point_attention):
    torch.manual_seed(0)
    policy = FlowPolicy(replace(tiny_policy_config(), point_attention=point_attention))
    policy.normalizer.fit(windows.statistics())
    loader = DataLoader(windows, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    torch.manual_seed(1)
    with torch.no_grad():
        before = sum(policy.compute_loss(batch)["loss"].item() for _ in range(4)) / 4
    for _ in range(60):
        loss = policy.compute_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.manual_seed(1)
    with torch.no_grad():
        after = sum(policy.compute_loss(batch)["loss"].item() for _ in range(4)) / 4
    assert after < 0.6 * before, (before, after)


def test_predicted_actions_have_the_right_shape_and_range(windows):
    policy = FlowPolicy(tiny_policy_config()).eval()
    policy.normalizer.fit(windows.statistics())
    batch = {k: v[None] for k, v in windows[0].items()}
    actions = policy.predict_action(batch, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (1, 16, 10) and torch.isfinite(actions).all()
    low, high = policy.normalizer.action_low, policy.normalizer.action_high
    span = high - low
    assert (actions >= low - span - 0.05).all() and (
        actions <= high + span + 0.05
    ).all()  # clip_sample keeps it near


def test_save_and_load_give_identical_actions(windows, tmp_path):
    policy = FlowPolicy(tiny_policy_config()).eval()
    policy.normalizer.fit(windows.statistics())
    torch.save(policy.state_dict(), tmp_path / "policy.pt")
    loaded = FlowPolicy(tiny_policy_config()).eval()
    loaded.load_state_dict(torch.load(tmp_path / "policy.pt"))
    batch = {k: v[None] for k, v in windows[3].items()}
    a = policy.predict_action(batch, generator=torch.Generator().manual_seed(5))
    b = loaded.predict_action(batch, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_reference_preset_has_the_reference_sizes():
    cfg = FlowPolicyConfig.preset("reference")
    assert (cfg.dim, cfg.state_depth, cfg.align_depth, cfg.remaining_depth, cfg.unet_dims) == (
        384,
        4,
        8,
        4,
        [256, 512, 1024],
    )
    with pytest.raises(ValueError, match="unknown policy preset"):
        FlowPolicyConfig.preset("huge")


def test_training_resumes_exactly_and_exports_ema(windows, tmp_path):
    from im2flow2act.policies.train import TrainConfig, Trainer, load_policy

    cfg = TrainConfig(
        policy=tiny_policy_config(),
        windows=windows.config,
        batch_size=8,
        max_steps=6,
        warmup_steps=2,
        checkpoint_every=3,
        log_every=1,
    )
    straight = Trainer(cfg, tmp_path / "a", windows)
    losses = [straight.train_step()["loss"] for _ in range(4)]
    resumed_from = Trainer(cfg, tmp_path / "b", windows)
    for _ in range(3):
        resumed_from.train_step()
    resumed_from.save()
    fresh = Trainer(cfg, tmp_path / "b", windows)
    fresh.load()
    assert fresh.step == 3
    assert fresh.train_step()["loss"] == pytest.approx(losses[3], rel=1e-6)

    done = Trainer(cfg, tmp_path / "c", windows)
    done.fit(progress=False)
    rows = (tmp_path / "c" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 7
    policy = load_policy(tmp_path / "c" / "policy")
    batch = {k: v[None] for k, v in windows[0].items()}
    assert policy.predict_action(batch).shape == (1, 16, 10)
    assert (tmp_path / "c" / "train_config.yaml").is_file() and any(
        (tmp_path / "c" / "tensorboard").iterdir()
    )


def test_fine_tuning_starts_from_a_model_folder_and_can_stop_reading_plan_visibility(windows, tmp_path):
    from im2flow2act.core.checkpoint import CheckpointError
    from im2flow2act.policies.train import TrainConfig, Trainer

    start = trained_policy(windows, tmp_path / "start", steps=2)
    blind = replace(tiny_policy_config(), plan_visibility=False)
    cfg = TrainConfig(policy=blind, windows=windows.config, batch_size=4, max_steps=1, init_from=str(start))
    tuned = Trainer(cfg, tmp_path / "tuned", windows)
    started = FlowPolicy.from_pretrained(start).state_dict()
    assert all(torch.equal(v, started[k]) for k, v in tuned.policy.state_dict().items())

    # blind to the plan's visibility: hiding plan points changes nothing, hiding current points does
    batch = {k: v[None] for k, v in windows[0].items()}
    hidden = {**batch, "plan": batch["plan"].clone(), "remaining": batch["remaining"].clone()}
    hidden["plan"][..., 2] = 0
    hidden["remaining"][..., 2] = 0
    policy, noise = tuned.policy.eval(), tuned.policy.draw_noise(1, torch.Generator().manual_seed(0))
    assert torch.equal(policy(batch, noise)[0], policy(hidden, noise)[0])
    seeing = FlowPolicy(tiny_policy_config()).eval()
    seeing.load_state_dict(tuned.policy.state_dict())
    assert not torch.equal(seeing(batch, noise)[0], seeing(hidden, noise)[0])

    wrong = replace(cfg, policy=replace(blind, dim=tiny_policy_config().dim * 2))
    with pytest.raises(CheckpointError, match="init_from"):
        Trainer(wrong, tmp_path / "wrong", windows)


def test_closed_loop_evaluation_runs_one_short_episode_per_task(windows, demos_root, tmp_path):
    from im2flow2act.policies.evaluate import EvalConfig, evaluate
    from im2flow2act.preprocessing.video import probe_video

    policy = trained_policy(windows, tmp_path / "run", steps=2)
    tasks = ["pick_place", "pour", "open_drawer", "fold_cloth"]
    tiny_cotracker = {"random_weights": True, "model_resolution": [64, 64], "iters": 1}
    for tracker, tracker_args in (("oracle", {}), ("lk", {}), ("cotracker3-online", tiny_cotracker)):
        cfg = EvalConfig(
            policy=str(policy),
            demos=str(demos_root),
            tasks=tasks,
            episodes=1,
            tracker=tracker,
            tracker_args=tracker_args,
            max_chunks=1,
            action_horizon=4,
            num_points=16,
        )
        summary = evaluate(cfg, tmp_path / "eval", progress=False)
        assert set(summary["tasks"]) == set(tasks)
        for row in summary["tasks"].values():
            assert row["episodes"] == 1 and row["mean_steps"] == 4 and row["success_rate"] in (0.0, 1.0)
            episode = row["per_episode"][0]
            if tracker == "oracle":  # the simulator sees the object's points at the end
                assert episode["plan_error_px"] is not None and episode["plan_error_px"] >= 0
            assert episode["grasp_offset_cm"] is None or episode["grasp_offset_cm"] >= 0
            assert episode["held"] in (True, False) and row["held"] == episode["held"]
            assert episode["progress"] and all(
                episode["peak"][k] >= v for k, v in episode["progress"].items()
            )
        assert set(summary["tasks"]["pick_place"]["mean_peak"]) == {
            "mug_height_cm",
            "mug_tilt_deg",
            "mug_to_plate_cm",
        }
    videos = sorted((tmp_path / "eval" / "videos").glob("*.mp4"))
    assert len(videos) == 12 and probe_video(videos[0]).num_frames == 5
    assert (tmp_path / "eval" / "summary_tracked_lk.md").read_text().startswith("| task |")
    summary_md = (tmp_path / "eval" / "summary_tracked_lk.md").read_text()
    assert "- open_drawer: at the end drawer_opening_cm" in summary_md
    assert "object held in" in summary_md and "planned motion made" in summary_md
    assert (tmp_path / "eval" / "summary_tracked_cotracker3-online.json").is_file()


def test_grasp_offset_is_small_where_the_scripted_expert_closes_on_the_mug():
    import numpy as np

    from im2flow2act.policies.evaluate import grasp_offset_cm
    from im2flow2act.policies.sim.agents import follow
    from im2flow2act.policies.sim.env import SimEnv
    from im2flow2act.policies.sim.scene import SceneConfig

    env = SimEnv("pick_place", "robot", SceneConfig(image_size=(64, 64)))
    try:
        env.reset(3)
        at_start = grasp_offset_cm(env)
        waypoints = env.task.expert(env.model, env.data, np.random.default_rng(0))
        for action in follow(env, waypoints):
            if action.closes:
                at_close = grasp_offset_cm(env)
                break
            env.step(action)
    finally:
        env.close()
    assert at_start > 20 and at_close < 2  # the expert grasps 1 cm above the mug's centre


def test_plan_error_measures_the_visible_points_at_the_last_frame():
    import numpy as np

    from im2flow2act.policies.evaluate import final_plan_error

    plan = np.zeros((3, 2, 2), np.float32)
    plan[-1] = [[0.5, 0.5], [0.1, 0.1]]
    seen = plan.copy()
    seen[-1, 0] += [0.1, 0.0]  # 0.1 of a 100-pixel width = 10 px
    seen[-1, 1] += [0.0, 0.5]  # hidden at the end: not counted
    vis = np.ones((3, 2), bool)
    seen_vis = vis.copy()
    seen_vis[-1, 1] = False
    assert final_plan_error(plan, vis, seen, seen_vis, (100, 50)) == pytest.approx(10.0)
    assert np.isnan(final_plan_error(plan, vis, seen, np.zeros_like(vis), (100, 50)))


def test_motion_fraction_says_how_much_of_the_planned_motion_was_made():
    import numpy as np

    from im2flow2act.policies.evaluate import motion_fraction

    plan = np.zeros((3, 2, 2), np.float32)
    plan[-1] = [[0.4, 0.0], [0.0, 0.2]]  # 40 px right, 10 px down in a 100 × 50 frame
    vis = np.ones((3, 2), bool)
    half = plan * 0.5
    assert motion_fraction(plan, vis, half, vis, (100, 50)) == pytest.approx(0.5)
    sideways = np.zeros_like(plan)
    sideways[-1] = [[0.0, 0.4], [0.2, 0.0]]  # as far, but across the planned direction
    assert motion_fraction(plan, vis, sideways, vis, (100, 50)) == pytest.approx(0.0, abs=1e-6)
    assert motion_fraction(plan, vis, plan * 1.5, vis, (100, 50)) == pytest.approx(1.5)
    assert np.isnan(motion_fraction(np.zeros_like(plan), vis, plan, vis, (100, 50)))  # nothing planned


def test_plan_queries_can_be_kept_to_the_object_in_the_first_frame(demos_root):
    from im2flow2act.policies.evaluate import on_object, plan_from_demo
    from im2flow2act.policies.sim.record import EMBODIMENT_LABEL
    from im2flow2act.preprocessing.dataset import FlowDataset
    from im2flow2act.preprocessing.tracks import grid_in_box, pixel_indices

    view = next(v for v in FlowDataset(demos_root) if v.attrs["task_name"] == "pick_place")
    queries = grid_in_box(view.attrs["bbox"], 16)
    kept = on_object(view, queries)
    labels = view.array("segmentation", 0)
    h, w = labels.shape
    px = pixel_indices(kept[:, 1:3], (w, h))
    label = labels[px[:, 1], px[:, 0]]
    assert 0 < len(kept) < len(queries) and ((label >= 0) & (label != EMBODIMENT_LABEL)).all()
    tracks, vis = plan_from_demo(view, "tracked", grid=16, on_object_only=True)
    assert tracks.shape[1] <= len(kept) and tracks.shape[:2] == vis.shape


def test_a_generated_plan_follows_only_the_points_on_the_object(demos_root):
    """The generator samples its whole box grid; the plan keeps the points on the first-frame mask."""
    import numpy as np
    from tiny_configs import tiny_generator_config

    from im2flow2act.im2flow.generator import FlowGenerator
    from im2flow2act.policies.evaluate import on_object_mask, plan_from_generator
    from im2flow2act.preprocessing.dataset import FlowDataset
    from im2flow2act.preprocessing.tracks import grid_in_box, motion_span_px

    view = next(v for v in FlowDataset(demos_root) if v.attrs["task_name"] == "pick_place")
    torch.manual_seed(0)
    generator = FlowGenerator(tiny_generator_config())
    box = view.attrs["bbox"]
    queries = grid_in_box(box, generator.config.flow.grid_size)
    mask = on_object_mask(view, queries)
    assert 0 < mask.sum() < len(mask)
    args = (generator, view.frame(0), view.task, box, 2, 0.0, 0)
    everything, _ = plan_from_generator(*args)
    tracks, vis = plan_from_generator(*args, keep=mask)
    # both keep only the points the sampled flow moves (a random tiny model leaves some unseen): with the
    # mask, exactly the whole-grid plan's points that lie on the object, in the same order
    on_object = queries[mask, 1:3]
    expected = [p for p in everything[0] if np.isclose(on_object, p).all(axis=1).any()]
    assert 0 < tracks.shape[1] <= everything.shape[1] <= len(queries)
    assert vis.shape == tracks.shape[:2]
    np.testing.assert_allclose(tracks[0], np.array(expected))  # frame 0: the on-object queries themselves
    with pytest.raises(ValueError, match="one entry per plan point"):
        plan_from_generator(*args, keep=mask[:-1])

    # rigid completion keeps every point on the object, each moved by the moving points' fitted motion
    whole, whole_vis = plan_from_generator(*args, keep=mask, complete_rigid=True)
    assert whole.shape[1] == mask.sum() and whole_vis.shape == whole.shape[:2]
    np.testing.assert_allclose(whole[0], on_object, atol=1e-6)

    # moving_fraction drops the points that move little next to the plan's own large motions
    strict, strict_vis = plan_from_generator(*args, moving_fraction=0.8)
    spans = motion_span_px(*plan_from_generator(*args))
    assert 0 < strict.shape[1] < everything.shape[1]
    assert motion_span_px(strict, strict_vis).min() >= 0.8 * np.percentile(spans, 90) - 1e-3
    assert all(np.isclose(everything[0], p).all(axis=1).any() for p in strict[0])


def test_a_generated_flow_resampled_onto_a_denser_grid_keeps_a_smooth_motion():
    import numpy as np

    from im2flow2act.policies.plans import upsample_grid_flow
    from im2flow2act.preprocessing.tracks import grid_in_box

    box = (0.2, 0.3, 0.6, 0.9)
    coarse, dense = grid_in_box(box, 4)[:, 1:3], grid_in_box(box, 8)[:, 1:3]
    stretch = np.array([[0.1, 0.02], [-0.03, 0.05]])  # the displacement grows linearly across the box
    flow = np.zeros((3, 16, 3), np.float32)
    flow[..., :2] = coarse + (coarse @ stretch.T) * np.arange(1, 4)[:, None, None]
    flow[..., 2] = 1.0
    flow[:, :4, 2] = 0.0  # the top row of the coarse grid hidden
    out = upsample_grid_flow(box, flow, 8)
    want = dense + (dense @ stretch.T) * np.arange(1, 4)[:, None, None]
    x, y = dense[:, 0].reshape(8, 8), dense[:, 1].reshape(8, 8)
    inside = (
        (x > coarse[:, 0].min())
        & (x < coarse[:, 0].max())
        & (y > coarse[:, 1].min())
        & (y < coarse[:, 1].max())
    )
    np.testing.assert_allclose(out[:, inside.ravel(), :2], want[:, inside.ravel()], atol=1e-6)  # exact inside
    assert np.abs(out[..., :2] - want).max() < 0.02  # held at the border outside the coarse centres
    vis = out[..., 2].reshape(3, 8, 8)
    assert not vis[:, :2].any() and vis[:, 3:].all()  # the hidden row stays hidden, its neighbours do not
    with pytest.raises(ValueError, match="square grid"):
        upsample_grid_flow(box, flow[:, :15], 8)


@pytest.mark.parametrize("method", ["affine", "neighbours"])
def test_plan_smoothing_takes_out_the_point_to_point_noise_of_one_moving_part(method):
    import numpy as np

    from im2flow2act.policies.plans import smooth_plan

    rng = np.random.default_rng(0)
    start = rng.uniform(0.3, 0.6, (40, 2))
    truth = np.stack([start + np.array([0.02, 0.01]) * t for t in range(6)])  # a drawer's slide
    noisy = truth + rng.normal(0, 0.03, truth.shape)
    noisy[0] = start
    vis = np.ones(truth.shape[:2], bool)
    before = np.abs(noisy - truth).mean()
    after = np.abs(smooth_plan(noisy, vis, method) - truth).mean()
    assert after < 0.5 * before
    np.testing.assert_array_equal(smooth_plan(noisy, vis, "none"), noisy)
    with pytest.raises(ValueError, match="plan smoothing"):
        smooth_plan(noisy, vis, "spline")


def test_rigid_completion_moves_the_points_a_flow_left_still_with_the_moving_ones():
    import numpy as np

    from im2flow2act.policies.plans import affine_paths
    from im2flow2act.policies.rigid_tracking import lies_flat

    rng = np.random.default_rng(1)
    start = rng.uniform(0.3, 0.6, (30, 2))
    turn = np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    truth = np.stack([start, start + 0.02, (start - 0.45) @ turn.T + 0.47])  # slide, then slide and turn
    moving = truth[:, :10] + rng.normal(0, 0.002, (3, 10, 2))  # the flow moved only a third of the part
    moving[0] = start[:10]
    paths = affine_paths(moving, np.ones((3, 10), bool), start)
    assert paths.shape == (3, 30, 2)
    assert np.abs(paths - truth).max() < 0.01  # the 20 still points follow the part

    # the rule that keeps completion off cloth: a thin level sheet lies flat, an upright front does not
    sheet = np.c_[rng.uniform(0, 0.3, (50, 2)), rng.normal(0.0, 0.001, 50)]
    front = np.c_[rng.uniform(0, 0.3, 50), rng.normal(0.0, 0.001, 50), rng.uniform(0, 0.2, 50)]
    assert lies_flat(sheet) and not lies_flat(front) and not lies_flat(sheet[:2])


def test_medoid_chunk_is_a_sampled_chunk_in_the_middle_of_the_others():
    import numpy as np

    from im2flow2act.policies.evaluate import medoid_chunk

    chunks = np.zeros((5, 4, 10), np.float32)
    chunks[:, :, 0] = np.array([0.0, 0.1, 0.12, 0.2, 2.0])[:, None]  # x of each chunk; the last an outlier
    chunks[:, :, 9] = np.arange(5)[:, None]  # tag each chunk in its gripper slot
    chosen = medoid_chunk(chunks)
    assert chosen[0, 9] == 2  # the least total distance to the others, and a sample (not an average)
    assert np.array_equal(medoid_chunk(chunks[:1]), chunks[0])


def test_evaluation_follows_a_play_episode_own_flow(windows, play_root, tmp_path):
    """Play episodes can be the plans too (their own flow): closed loop on in-distribution flows."""
    from im2flow2act.policies.evaluate import EvalConfig, evaluate

    policy = trained_policy(windows, tmp_path / "run", steps=1)
    cfg = EvalConfig(
        policy=str(policy),
        demos=str(play_root),
        tasks=["pick_place"],
        episodes=1,
        plan_source="ground_truth",
        max_chunks=1,
        action_horizon=1,  # an untrained arm may sweep over the mug and hide every point
        action_samples=3,
        num_points=32,
        videos=False,
    )
    row = evaluate(cfg, tmp_path / "eval", progress=False)["tasks"]["pick_place"]
    assert row["episodes"] == 1 and row["per_episode"][0]["demo"].startswith("pick_place_")
    assert row["median_plan_error_px"] is not None

    from im2flow2act.preprocessing.dataset import DatasetError, FlowDatasetWriter

    videos = tmp_path / "videos.zarr"
    FlowDatasetWriter(videos, kind="video")  # human videos have no layout to reset the sim to
    with pytest.raises(DatasetError, match="videos.zarr: is a 'video' dataset"):
        evaluate(replace(cfg, demos=str(videos)), tmp_path / "eval", progress=False)


def test_evaluation_refuses_a_tracker_that_cannot_track_online():
    from im2flow2act.policies.evaluate import build_online_tracker
    from im2flow2act.policies.online_tracking import CameraTracker, OracleTracker

    assert isinstance(build_online_tracker("oracle", {}), OracleTracker)
    assert isinstance(build_online_tracker("lk", {}), CameraTracker)
    with pytest.raises(ValueError, match="cannot track online"):
        build_online_tracker("cotracker3", {"random_weights": True})


def test_language_conditioned_evaluation_executes_a_generated_flow(windows, demos_root, tmp_path):
    from tiny_configs import tiny_generator_config

    from im2flow2act.im2flow.generator import FlowGenerator
    from im2flow2act.policies.evaluate import EvalConfig, evaluate

    policy = trained_policy(windows, tmp_path / "run", steps=1)
    torch.manual_seed(0)
    generator = FlowGenerator(tiny_generator_config()).save_pretrained(tmp_path / "generator")
    cfg = EvalConfig(
        policy=str(policy),
        demos=str(demos_root),
        tasks=["pick_place", "open_drawer"],
        episodes=1,
        plan_source="generated",
        generator=str(generator),
        num_flows=2,
        moving_threshold_px=0.5,
        max_chunks=1,
        action_horizon=4,
        num_points=16,
    )
    summary = evaluate(cfg, tmp_path / "eval", progress=False)
    assert summary["plan_source"] == "generated"
    assert all(row["episodes"] == 1 and row["mean_steps"] == 4 for row in summary["tasks"].values())
    assert (tmp_path / "eval" / "summary_generated_oracle.md").is_file()
    assert len(list((tmp_path / "eval" / "videos").glob("*.mp4"))) == 2


def test_object_frame_targets_ignore_where_the_scene_is(windows):
    """Moving the object, the arm and the chunk together leaves what the U-Net denoises unchanged."""
    policy = FlowPolicy(tiny_policy_config())
    assert policy.config.object_frame
    policy.normalizer.fit(windows.statistics())
    batch = {k: torch.stack([windows[i][k] for i in (0, 5, 9)]) for k in windows[0]}
    shift = torch.tensor([0.08, -0.05, 0.03])
    moved = dict(batch)
    moved["points_3d"] = batch["points_3d"] + shift
    moved["action"] = torch.cat([batch["action"][..., :3] + shift, batch["action"][..., 3:]], -1)
    anchor, moved_anchor = policy.object_anchor(batch["points_3d"]), policy.object_anchor(moved["points_3d"])
    target = policy.normalize_vectors("action", batch["action"], anchor)
    moved_target = policy.normalize_vectors("action", moved["action"], moved_anchor)
    assert torch.allclose(target, moved_target, atol=1e-5)
    assert torch.allclose(policy.unnormalize_actions(target, anchor), batch["action"], atol=1e-5)
    absolute = FlowPolicy(replace(tiny_policy_config(), object_frame=False))
    absolute.normalizer.fit(windows.statistics())
    plain = absolute.normalize_vectors("action", batch["action"], anchor)
    assert not torch.allclose(plain, absolute.normalize_vectors("action", moved["action"], moved_anchor))


def test_save_pretrained_round_trip_keeps_config_weights_and_normaliser(windows, tmp_path):
    config = replace(tiny_policy_config(), object_frame=False, frame_encoder="transformer")
    policy = FlowPolicy(config).eval()  # the transformer frame encoder shares the state encoder's weights
    policy.normalizer.fit(windows.statistics())
    folder = policy.save_pretrained(tmp_path / "policy")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = FlowPolicy.from_pretrained(folder)
    assert loaded.config == config and not loaded.training
    batch = {k: v[None] for k, v in windows[2].items()}
    a = policy.predict_action(batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(
        a, load_policy(folder).predict_action(batch, generator=torch.Generator().manual_seed(3))
    )


def test_point_attention_lets_the_head_read_each_points_plan(windows):
    """With the pooled condition held fixed, changing the plan still changes the denoiser's output."""
    torch.manual_seed(0)
    policy = FlowPolicy(replace(tiny_policy_config(), point_attention=True)).eval()
    policy.normalizer.fit(windows.statistics())
    batch = {k: torch.stack([windows[i][k] for i in (0, 4, 8)]) for k in windows[0]}
    parts = policy.encode(batch)
    assert parts["context"].shape == (3, batch["plan"].shape[2], policy.config.dim)
    cond = torch.cat([parts["state"], parts["predicted_plan"], parts["proprio"]], dim=-1)
    noisy, steps = torch.randn(3, 16, 10), torch.tensor([0, 20, 40])
    reversed_plan = policy.encode(dict(batch, plan=batch["plan"].flip(1)))["context"]
    with torch.no_grad():
        same = policy.head(noisy, steps, cond, parts["context"])
        assert torch.equal(same, policy.head(noisy, steps, cond, parts["context"]))
        assert (same - policy.head(noisy, steps, cond, reversed_plan)).abs().max() > 1e-4
    plain = FlowPolicy(tiny_policy_config())
    assert plain.point_tokens is None
    with pytest.raises(ValueError, match="context"):
        plain.head(noisy, steps, cond, parts["context"])


def test_plan_end_3d_reaches_the_point_tokens(windows):
    """With ``plan_end_3d`` the per-point tokens change with where the plan ends in 3-D, all else fixed."""
    torch.manual_seed(0)
    policy = FlowPolicy(replace(tiny_policy_config(), point_attention=True, plan_end_3d=True)).eval()
    policy.normalizer.fit(windows.statistics())
    batch = {k: torch.stack([windows[i][k] for i in (0, 4)]) for k in windows[0]}
    with torch.no_grad():
        context = policy.encode(batch)["context"]
        moved = policy.encode(dict(batch, end_3d=batch["end_3d"] + torch.tensor([0.1, 0.0, 0.0])))["context"]
    assert (context - moved).abs().max() > 1e-3
    assert policy.compute_loss(batch)["loss"].isfinite()
    with pytest.raises(ValueError, match="plan_end_3d needs point_attention"):
        FlowPolicy(replace(tiny_policy_config(), plan_end_3d=True))


def test_windows_and_policy_must_agree_on_how_a_sample_is_cut():
    """A plan resampled to one length and read as another would train silently on garbage: refuse it."""
    from pathlib import Path

    from im2flow2act.core.config import ConfigError, load_config
    from im2flow2act.policies.train import TrainConfig

    small = Path(__file__).resolve().parents[2] / "configs/policy/train_small.yaml"
    cfg = load_config(TrainConfig, small)
    assert cfg.windows.plan_frames == cfg.policy.plan_frames == FlowPolicyConfig().plan_frames
    with pytest.raises(ConfigError, match="windows.plan_frames=32 but policy.plan_frames=16"):
        load_config(TrainConfig, small, ["windows.plan_frames=32"])
    with pytest.raises(ConfigError, match="pred_horizon"):
        load_config(TrainConfig, small, ["policy.pred_horizon=8"])


def test_flow_guidance_drops_the_flow_in_training_and_amplifies_it_in_sampling(windows):
    torch.manual_seed(0)
    always_dropped = FlowPolicy(replace(tiny_policy_config(), condition_dropout=1.0))
    plain = FlowPolicy(tiny_policy_config())
    batch = {k: torch.stack([windows[i][k] for i in (0, 3, 6, 9)]) for k in windows[0]}
    other_flow = dict(batch, remaining=batch["remaining"].flip(0))

    def denoise_loss(policy: FlowPolicy, b: dict) -> torch.Tensor:
        policy.normalizer.fit(windows.statistics())
        torch.manual_seed(1)
        return policy.compute_loss(b)["denoise"]

    # a dropped flow is a dropped flow: the denoising loss no longer sees which remaining flow it was
    assert torch.equal(denoise_loss(always_dropped, batch), denoise_loss(always_dropped, other_flow))
    assert not torch.equal(denoise_loss(plain, batch), denoise_loss(plain, other_flow))

    policy = always_dropped.eval()
    with torch.no_grad():
        torch.nn.init.normal_(policy.null_plan, std=1.0)
    reversed_plan = dict(batch, plan=batch["plan"].flip(1))

    def act(b: dict, scale: float) -> torch.Tensor:
        return policy.predict_action(b, torch.Generator().manual_seed(4), guidance_scale=scale)

    # scale 0 is the null pass alone: the plan cannot matter; at 1 and 3 it does, and 3 differs from 1
    assert torch.equal(act(batch, 0.0), act(reversed_plan, 0.0))
    assert not torch.equal(act(batch, 1.0), act(reversed_plan, 1.0))
    assert not torch.equal(act(batch, 3.0), act(batch, 1.0))
    assert act(batch, 3.0).shape == (4, policy.config.pred_horizon, policy.config.action_dim)
    with pytest.raises(ValueError, match="condition_dropout"):
        plain.eval().predict_action(batch, guidance_scale=2.0)


def test_a_half_precision_export_is_half_the_size_and_acts_the_same(windows, tmp_path):
    from safetensors import safe_open

    from im2flow2act.policies.train import TrainConfig, Trainer, load_policy

    cfg = TrainConfig(
        policy=tiny_policy_config(), windows=windows.config, batch_size=4, max_steps=3, warmup_steps=1
    )
    trainer = Trainer(cfg, tmp_path / "run", windows)
    trainer.fit(progress=False)
    full = load_policy(tmp_path / "run" / "policy")
    trainer.config.export_dtype = "float16"
    half_folder = trainer.export()
    with safe_open(str(half_folder / "model.safetensors"), "pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118 (not a dict)
    assert {d for n, d in dtypes.items() if "normalizer" not in n} == {"F16"}
    assert {d for n, d in dtypes.items() if "normalizer" in n} == {"F32"}  # statistics keep full precision
    half = load_policy(half_folder)
    assert next(half.parameters()).dtype == torch.float32  # loaded back into float32
    batch = {k: v[None] for k, v in windows[0].items()}
    a = full.predict_action(batch, generator=torch.Generator().manual_seed(0))
    b = half.predict_action(batch, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=2e-2)
    with pytest.raises(ValueError, match="export_dtype"):
        TrainConfig(export_dtype="int8")


def test_train_config_refuses_out_of_range_values_when_built():
    from im2flow2act.core.config import ConfigError
    from im2flow2act.policies.train import TrainConfig

    for key, value in (("workers", -1), ("batch_size", 0)):
        with pytest.raises(ConfigError, match=f"{key}={value} is out of range"):
            TrainConfig(**{key: value})


def test_regression_objective_trains_the_same_network_to_one_deterministic_chunk(windows):
    """The diffusion-vs-regression baseline: same network and data, an MSE on the chunk itself."""
    torch.manual_seed(0)
    config = replace(tiny_policy_config(), objective="regression")
    policy = FlowPolicy(config)
    diffusion = FlowPolicy(tiny_policy_config())
    assert sum(p.numel() for p in policy.parameters()) == sum(p.numel() for p in diffusion.parameters())
    policy.normalizer.fit(windows.statistics())
    loader = DataLoader(windows, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    policy.eval()
    with torch.no_grad():
        before = policy.compute_loss(batch)["loss"].item()
    policy.train()
    for _ in range(60):
        loss = policy.compute_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()
    with torch.no_grad():
        after = policy.compute_loss(batch)["loss"].item()
    assert after < 0.5 * before, (before, after)
    one = {k: v[:2] for k, v in batch.items()}
    first = policy.predict_action(one, generator=torch.Generator().manual_seed(0))
    second = policy.predict_action(one, generator=torch.Generator().manual_seed(1))
    assert first.shape == (2, 16, 10) and torch.equal(first, second)  # no noise: one answer per state
    with pytest.raises(ValueError, match="objective must be diffusion or regression"):
        FlowPolicy(replace(tiny_policy_config(), objective="mse"))
