"""im2flow: flow images, clips from real sim demonstrations, a tiny generator trained, saved and evaluated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_configs import G, T, tiny_generator_config

from im2flow2act.im2flow.data import ClipConfig, FlowClips, build_clips
from im2flow2act.im2flow.flow_image import FlowImageConfig, decode, encode, future_tracks
from im2flow2act.im2flow.generator import FlowGenerator, load_generator
from im2flow2act.im2flow.train import EXPORT, FlowTrainConfig, FlowTrainer
from im2flow2act.preprocessing.pretrained import TrackerWeightsNotAvailable
from im2flow2act.preprocessing.tracks import grid_in_box


def tiny_train_config(demos_root, **kwargs) -> FlowTrainConfig:
    defaults = dict(
        batch_size=8, lr=2e-3, warmup_steps=1, max_steps=4, sample_every=0, log_every=1, held_out_per_task=1
    )
    return FlowTrainConfig(data=[str(demos_root)], generator=tiny_generator_config(), **(defaults | kwargs))


@pytest.mark.parametrize("encoding", ["absolute", "displacement", "sqrt_displacement"])
def test_flow_image_round_trip(encoding):
    rng = np.random.default_rng(0)
    queries = grid_in_box((0.2, 0.3, 0.6, 0.7), G)
    tracks = np.clip(queries[None, :, 1:] + rng.normal(0, 0.05, (20, G * G, 2)), 0, 1).astype(np.float32)
    tracks[0] = queries[:, 1:]
    visibility = rng.random((20, G * G)) > 0.3
    visibility[0] = True
    config = FlowImageConfig(grid_size=G, num_frames=T, encoding=encoding)
    flow = encode(tracks, visibility, queries, config)
    assert flow.shape == (T, 3, G, G) and flow.dtype == np.float32
    back, vis = decode(flow, queries, config)
    want, want_vis = future_tracks(tracks, visibility, T)
    np.testing.assert_allclose(back, want, atol=1e-6)
    np.testing.assert_array_equal(vis, want_vis)
    # the flow image is laid out like the picture: row i, column j is grid point i·G + j
    k = 2 * G + 3
    assert np.isclose(decode(flow[:, :, 2:3, 3:4], queries[k : k + 1], config)[0][:, 0], want[:, k]).all()


def test_a_higher_visibility_threshold_hides_the_points_whose_channel_hedges():
    queries = grid_in_box((0.4, 0.4, 0.6, 0.6), 2)
    config = FlowImageConfig(grid_size=2, num_frames=1, encoding="displacement")
    flow = np.zeros((1, 3, 2, 2), np.float32)
    flow[0, 2] = [[1.0, 0.3], [-0.2, -1.0]]  # sure visible, hedging visible, hedging hidden, sure hidden
    assert decode(flow, queries, config)[1][0].tolist() == [True, True, False, False]
    assert decode(flow, queries, config, visibility_threshold=0.5)[1][0].tolist() == [
        True,
        False,
        False,
        False,
    ]


def test_sqrt_displacement_lifts_short_moves_and_keeps_still_points_still():
    queries = grid_in_box((0.4, 0.4, 0.6, 0.6), 2)
    tracks = np.repeat(queries[None, :, 1:], 3, axis=0).astype(np.float32)
    tracks[1:, 0, 0] += np.float32(10 / 256)  # one point pulled 10 px, as a drawer's handle
    tracks[1:, 1, 0] += np.float32(100 / 256)  # one carried 100 px, as a mug
    visibility = np.ones(tracks.shape[:2], bool)
    linear, root = (
        encode(tracks, visibility, queries, FlowImageConfig(2, 2, encoding))
        for encoding in ("displacement", "sqrt_displacement")
    )
    assert (
        root[-1, 0, 0, 0] > 3 * linear[-1, 0, 0, 0]
    )  # the short pull: √ lifts it well above the noise floor
    assert root[-1, 0, 0, 1] / root[-1, 0, 0, 0] < linear[-1, 0, 0, 1] / linear[-1, 0, 0, 0] / 2
    # a still point sampled 0.1 off decodes under 1 px away (linear: 13 px)
    config = FlowImageConfig(2, 2, "sqrt_displacement")
    off = root.copy()
    off[:, 0, 1, :] = 0.1
    moved = np.abs(decode(off, queries, config)[0][:, 2:, 0] - queries[None, 2:, 1]) * 256
    assert (moved < 1.0).all() and (moved > 0.1).all()
    with pytest.raises(ValueError, match="encoding must be one of"):
        FlowImageConfig(encoding="sqrt")


def test_clips_from_sim_demos_track_the_box_grid_and_cache(demos_root, tmp_path):
    config = ClipConfig(FlowImageConfig(grid_size=G, num_frames=T), held_out_per_task=1)
    clips, problems = build_clips([demos_root], config, tmp_path / "clips.npz", progress=False)
    assert problems == [] and len(clips) == 8
    assert clips.images.shape == (8, 256, 256, 3) and clips.flows.shape == (8, T, 3, G, G)
    assert np.abs(clips.flows).max() <= 1.0 + 1e-6
    moved = [
        np.abs(decode(f, q, config.flow)[0][-1] - q[:, 1:]).max()
        for f, q in zip(clips.flows, clips.queries, strict=False)
    ]
    assert max(moved) > 0.02  # the demonstrated object moves
    again = FlowClips.load(tmp_path / "clips.npz", config)
    np.testing.assert_array_equal(again.flows, clips.flows)
    with pytest.raises(ValueError, match="delete it to rebuild"):
        FlowClips.load(tmp_path / "clips.npz", ClipConfig(FlowImageConfig(grid_size=8)))
    train, held = clips.split(1)
    assert len(train) == 4 and len(held) == 4 and set(held.tasks) == set(clips.tasks)


def test_clips_pass_tracker_args_to_the_grid_tracker(demos_root, tmp_path):
    """The grid tracker gets its config (e.g. cotracker3's checkpoint) from tracker_args, checked up front."""
    missing = tmp_path / "nowhere" / "scaled_offline.pth"
    cfg = tiny_train_config(demos_root, tracker="cotracker3", tracker_args={"checkpoint": str(missing)})
    with pytest.raises(TrackerWeightsNotAvailable, match="nowhere"):
        build_clips(cfg.data, cfg.clip_config(), progress=False)
    with pytest.raises(ValueError, match="win_sise"):
        build_clips(cfg.data, tiny_train_config(demos_root, tracker_args={"win_sise": 7}).clip_config())
    cfg = tiny_train_config(demos_root, tracker_args={"win_size": 7})
    clips, problems = build_clips(cfg.data, cfg.clip_config(), tmp_path / "c.npz", progress=False)
    assert problems == [] and clips.flows.shape[1:] == (T, 3, G, G)
    default = build_clips(cfg.data, tiny_train_config(demos_root).clip_config(), progress=False)[0]
    assert not np.array_equal(clips.flows, default.flows)  # the window size reached the tracker
    assert json.loads(np.load(tmp_path / "c.npz")["meta"].item())["config"]["tracker_args"] == {"win_size": 7}


def test_tiny_generator_loss_goes_down(demos_root, tmp_path):
    trainer = FlowTrainer(tiny_train_config(demos_root, max_steps=40), tmp_path / "run", progress=False)
    losses = [trainer.train_step()["loss"] for _ in range(40)]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_training_resumes_exactly_and_writes_samples(demos_root, tmp_path):
    full = FlowTrainer(
        tiny_train_config(demos_root, max_steps=4, sample_every=4), tmp_path / "a", progress=False
    )
    full.fit()
    half = FlowTrainer(tiny_train_config(demos_root, max_steps=4), tmp_path / "b", progress=False)
    half.train_step()
    half.train_step()
    half.save()  # as if killed after step 2
    resumed = FlowTrainer(tiny_train_config(demos_root, max_steps=4), tmp_path / "b", progress=False)
    resumed.fit()
    assert resumed.step == 4
    for a, b in zip(
        full.generator.denoiser.state_dict().values(),
        resumed.generator.denoiser.state_dict().values(),
        strict=False,
    ):
        torch.testing.assert_close(a, b)
    assert len(list((tmp_path / "a" / "samples").glob("step000004_*.gif"))) == 4
    assert (tmp_path / "a" / EXPORT / "model.safetensors").is_file()
    assert (tmp_path / "a" / "metrics.csv").is_file()


def test_save_load_same_samples_and_guidance_paths(tmp_path):
    torch.manual_seed(0)
    generator = FlowGenerator(tiny_generator_config()).eval()
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    queries = grid_in_box((0.2, 0.2, 0.5, 0.6), G)
    loaded = load_generator(generator.save_pretrained(tmp_path / "g"))
    a = generator.sample(image, "open the drawer", queries, num_samples=3, seed=5)
    b = loaded.sample(image, "open the drawer", queries, num_samples=3, seed=5)
    assert a.shape == (3, T, G * G, 3)
    np.testing.assert_array_equal(a, b)
    assert np.all((a[..., :2] >= 0) & (a[..., :2] <= 1)) and set(np.unique(a[..., 2])) <= {0.0, 1.0}
    assert not np.array_equal(a[0], a[1])  # different samples
    unguided = generator.sample(image, "open the drawer", queries, num_samples=3, seed=5, guidance_scale=1.0)
    assert unguided.shape == a.shape and not np.array_equal(unguided, a)
    with pytest.raises(ValueError, match="4×4 query grid"):
        generator.sample(image, "open the drawer", queries[:5])


def test_instruction_changes_the_flow_and_options_survive_save_load(tmp_path):
    torch.manual_seed(0)
    generator = FlowGenerator(tiny_generator_config()).eval()
    for p in generator.denoiser.unet.class_embedding.parameters():  # make the text path matter at init
        torch.nn.init.normal_(p, std=0.5)
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    queries = grid_in_box((0.2, 0.2, 0.5, 0.6), G)
    drawer = generator.sample(image, "open the drawer", queries, num_samples=1, seed=5, guidance_scale=1.0)
    cloth = generator.sample(image, "fold the cloth", queries, num_samples=1, seed=5, guidance_scale=1.0)
    assert not np.array_equal(drawer, cloth)
    # config.json records every option, so a network built without one loads as the network it was
    config = tiny_generator_config()
    config.small.text_in_time_embedding = config.small.token_coordinates = False
    config.small.goal_keypoints = 0
    loaded = load_generator(FlowGenerator(config).save_pretrained(tmp_path / "without"))
    assert loaded.denoiser.image_encoder.coordinate_head is None
    assert loaded.denoiser.goal_keypoints is None
    assert loaded.denoiser.unet.class_embedding is None


def test_regression_baseline_is_one_deterministic_pass(demos_root, tmp_path):
    cfg = tiny_train_config(demos_root, max_steps=3)
    cfg.generator.objective = "regression"
    trainer = FlowTrainer(cfg, tmp_path / "reg", progress=False)
    trainer.fit()
    generator = load_generator(tmp_path / "reg" / EXPORT)
    image = trainer.train.images[0]
    flows = generator.sample(image, trainer.train.tasks[0], trainer.train.queries[0], num_samples=2, seed=0)
    np.testing.assert_array_equal(flows[0], flows[1])


def test_evaluation_table_with_baselines_and_instruction_pairs(demos_root, tmp_path):
    from im2flow2act.im2flow.evaluate import FlowEvalConfig, evaluate

    FlowTrainer(tiny_train_config(demos_root, max_steps=2), tmp_path / "run", progress=False).fit()
    summary = evaluate(
        FlowEvalConfig(run=str(tmp_path / "run"), held_out_per_task=1, num_samples=2),
        tmp_path / "eval",
        progress=False,
    )
    assert summary["held_out_clips"] == 4 and summary["instruction_pairs"] == 2
    methods = summary["methods"]
    assert list(methods) == ["im2flow", "nearest", "zero motion"]
    for row in methods.values():
        assert row["overall"]["min_ade"] <= row["overall"]["ade"] + 1e-6
        assert 0.0 <= row["instruction_following"] <= 1.0
        assert len(row["by_task"]) == 4
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_samples"] == 2
    assert (tmp_path / "eval" / "metrics.md").read_text().count("| im2flow |") == 3
    assert len(list((tmp_path / "eval" / "gifs").glob("*.gif"))) == 4
    config = FlowEvalConfig(str(tmp_path / "run"), held_out_per_task=1, num_samples=2, guidance_scale=1.0)
    config.train_clips, config.gifs = 3, False
    unguided = evaluate(config, tmp_path / "eval1", progress=False)
    assert summary["guidance_scale"] == 2.0 and unguided["guidance_scale"] == 1.0
    assert "train_fit" not in summary and unguided["train_fit"]["clips"] == 3
    assert np.isfinite(unguided["train_fit"]["overall"]["ade"])
    assert "training clips: ADE" in (tmp_path / "eval1" / "metrics.md").read_text()
    assert unguided["methods"]["im2flow"]["overall"]["ade"] != methods["im2flow"]["overall"]["ade"]


def test_evaluation_scores_on_another_layout_split_while_retrieval_draws_from_the_training_clips(
    demos_root, tmp_path
):
    from im2flow2act.im2flow.evaluate import FlowEvalConfig, evaluate
    from im2flow2act.policies.sim.generate import GenerateConfig, generate

    FlowTrainer(tiny_train_config(demos_root, max_steps=1), tmp_path / "run", progress=False).fit()
    outside = tmp_path / "outside"
    generate(
        "demos",
        outside,
        GenerateConfig(tasks=["open_drawer"], episodes=2, seed=1000, layouts="outside"),
        False,
    )
    config = FlowEvalConfig(str(tmp_path / "run"), held_out_per_task=1, num_samples=1, gifs=False)
    config.held_out_data = [str(outside / "dataset.zarr")]
    summary = evaluate(config, tmp_path / "eval", progress=False)
    assert summary["held_out_clips"] == 2 and list(summary["methods"]["nearest"]["by_task"]) == [
        "open the drawer"
    ]
    generate("demos", tmp_path / "none", GenerateConfig(tasks=["open_drawer"], episodes=0), False)
    config.held_out_data = [str(tmp_path / "none" / "dataset.zarr")]
    with pytest.raises(ValueError, match="no usable episode"):  # named, before anything is scored
        evaluate(config, tmp_path / "eval", progress=False)


def test_token_coordinates_name_the_place_each_token_sees_and_survive_save_load(tmp_path):
    config = tiny_generator_config()
    config.small.token_coordinates = True
    torch.manual_seed(0)
    generator = FlowGenerator(config).eval()
    encoder = generator.denoiser.image_encoder
    # wire the coordinate path alone to the first two token channels: they must then hold (x, y)
    with torch.no_grad():
        head = encoder.coordinate_head
        for p in [*encoder.token_head.parameters(), encoder.token_position, *head.parameters()]:
            p.zero_()
        encoder.coordinate_head.weight[0, 0] = encoder.coordinate_head.weight[1, 1] = 1.0
    size = config.small.image_size
    image = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    _, tokens = encoder(image, torch.full((1, 1, 2), 0.5))
    # the region each token covers: pixel-centre coordinates pooled to the token grid, flattened like features
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    pixel_xy = torch.stack(torch.meshgrid(centres, centres, indexing="xy"))[None]  # (1, 2, H, W): x, y
    side = int(len(tokens[0]) ** 0.5)
    covered = torch.nn.functional.adaptive_avg_pool2d(pixel_xy, side).flatten(2)[0].T
    torch.testing.assert_close(tokens[0, :, :2], covered)
    # the option is saved with the generator and changes the samples
    torch.manual_seed(0)
    generator = FlowGenerator(config).eval()
    picture = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    head = generator.denoiser.image_encoder.coordinate_head
    loaded = assert_reloads_the_same_and_samples_use(generator, head.weight, picture, tmp_path)
    assert loaded.config.small.token_coordinates and loaded.denoiser.image_encoder.coordinate_head is not None


def assert_reloads_the_same_and_samples_use(
    generator: FlowGenerator, weight: torch.Tensor, picture: np.ndarray, tmp_path
) -> FlowGenerator:
    """The saved and reloaded generator samples exactly the same flow; redrawing ``weight`` (a part under
    test) changes the flow, so that part is used. Returns the reloaded generator."""
    queries = grid_in_box((0.2, 0.2, 0.5, 0.6), G)
    loaded = load_generator(generator.save_pretrained(tmp_path / "g"))

    def sample(g: FlowGenerator) -> np.ndarray:
        return g.sample(picture, "open the drawer", queries, num_samples=2, seed=1)

    a = sample(generator)
    np.testing.assert_array_equal(a, sample(loaded))
    with torch.no_grad():
        torch.nn.init.normal_(weight, std=1.0)
    assert not np.array_equal(a, sample(generator))
    return loaded


def squares_picture(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey, with a red and a blue 6-pixel square at random places → picture, centres (2, 2) in [0, 1]."""
    picture = np.full((size, size, 3), 120, np.uint8)
    corners = rng.integers(0, size - 6, (2, 2))
    while np.abs(corners[0] - corners[1]).max() < 7:  # keep them apart
        corners = rng.integers(0, size - 6, (2, 2))
    for (x, y), colour in zip(corners, [(220, 30, 30), (30, 30, 220)], strict=True):
        picture[y : y + 6, x : x + 6] = colour
    return picture, (corners + 3.0) / size


def test_goal_keypoints_learn_to_find_the_object_the_instruction_names_and_survive_save_load(tmp_path):
    config = tiny_generator_config()
    config.small.goal_keypoints = 1
    torch.manual_seed(0)
    generator = FlowGenerator(config)
    denoiser = generator.denoiser
    size = config.small.image_size
    instructions = torch.randn(2, config.small.cross_dim)  # "the red one", "the blue one"
    parts = [*denoiser.image_encoder.parameters(), *denoiser.goal_keypoints.parameters()]
    optimiser = torch.optim.Adam(parts, lr=3e-3)
    rng = np.random.default_rng(0)

    def keypoints(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        pictures, centres = zip(*(squares_picture(rng, size) for _ in range(batch)), strict=True)
        which = torch.arange(batch) % 2
        images = torch.from_numpy(np.stack(pictures))
        _, _, features = denoiser.image_encoder.encode(images, torch.zeros(batch, 1, 2))
        found, _ = denoiser.goal_keypoints(features, instructions[which])
        target = torch.from_numpy(np.stack(centres)).float()[torch.arange(batch), which]
        return found[:, 0], target

    for _ in range(300):  # the points' only teacher is where the named square is
        found, target = keypoints(32)
        loss = (found - target).abs().sum(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        found, target = keypoints(64)
    error = (found - target).norm(dim=-1)
    assert error.median() < 0.05, error.median()  # the squares are ≥ 7 px = 0.22 apart
    # the keypoints enter the flow and are saved with the generator
    picture, _ = squares_picture(rng, 96)
    heat = denoiser.goal_keypoints.heat.weight
    loaded = assert_reloads_the_same_and_samples_use(generator.eval(), heat, picture, tmp_path)
    assert loaded.config.small.goal_keypoints == 1
