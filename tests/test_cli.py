"""The `im2flow2act` command as a user runs it: a real subprocess on the committed clip."""

import json

import numpy as np
import pytest
import yaml
from conftest import CLIP_BOX, run_cli

from im2flow2act.preprocessing.dataset import FlowDataset
from im2flow2act.preprocessing.video import probe_video

BOX = ",".join(map(str, CLIP_BOX))


run = run_cli


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["ingest"],
        ["inspect"],
        ["sim"],
        ["sim", "demos"],
        ["sim", "play"],
        ["sim", "expert"],
        ["sim", "show"],
        ["policy"],
        ["policy", "train"],
        ["policy", "eval"],
        ["flow"],
        ["flow", "train"],
        ["flow", "sample"],
        ["flow", "eval"],
        ["pipeline"],
        ["pipeline", "run"],
    ],
)
def test_help_works_for_every_command(command):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_ingest_real_clip_then_rerun_skips(tmp_path, clip_path):
    out = tmp_path / "out"
    args = [
        "ingest",
        str(clip_path),
        "--box",
        BOX,
        "--task",
        "put the red cup down",
        "--prompt",
        "red cup",
        "--out",
        str(out),
        "grid_size=8",
        "max_frames=24",
        "stride=2",
    ]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert "1 written, 0 skipped, 0 failed; 24 frames" in result.stdout

    ds = FlowDataset(out / "dataset.zarr", kind="video")
    view = ds["cups_clip"]
    assert (view.num_frames, view.num_points, view.frame_size) == (24, 64, (256, 256))
    assert view.task == "put the red cup down" and view.attrs["object_prompt"] == "red cup"
    assert view.attrs["frame_indices"] == list(range(0, 48, 2))
    assert view.attrs["fps"] == pytest.approx(29.97 / 2, abs=0.01)
    np.testing.assert_allclose(view.attrs["bbox"], [136 / 640, 0, 228 / 640, 108 / 360], atol=1e-6)
    queries = view.queries
    assert (queries[:, 1] > 136 / 640).all() and (queries[:, 1] < 228 / 640).all()
    np.testing.assert_allclose(view.tracks[0], queries[:, 1:], atol=1e-6)
    assert view.visibility[0].all() and view.visibility.mean() > 0.1
    assert view.array("tracks_resampled").shape == (32, 64, 2) and view.array("moving").shape == (64,)
    resolved = yaml.safe_load((out / "ingest_config.yaml").read_text())
    assert resolved["grid_size"] == 8 and resolved["stride"] == 2
    overlay = probe_video(out / "overlays" / "cups_clip.mp4")
    assert (overlay.num_frames, overlay.height) == (24, 360)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 1 and summary["frames"] == 24

    again = run(*args)
    assert again.returncode == 0 and "0 written, 1 skipped" in again.stdout
    assert run("inspect", str(out / "dataset.zarr")).stdout.count("cups_clip") == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--box", "1,2,3"], "must be four numbers"),
        (["--box", BOX, "grid_sise=4"], "did you mean 'grid_size'"),
        (["--box", BOX, "tracker=cotraker"], "unknown tracker 'cotraker'"),
        (["--box", BOX, "tracker_args.win=3"], "unknown config key 'win'"),
        (["--grounder", "grounding-dino", "grounder_args.model=./no/such/folder"], "does not exist"),
        (["--grounder", "manifest"], "no object box"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, clip_path, extra, message):
    result = run("ingest", str(clip_path), "--out", str(tmp_path / "o"), *extra)
    assert result.returncode == 2
    assert message in result.stderr + result.stdout
    assert (
        not (tmp_path / "o" / "dataset.zarr").exists()
        or not FlowDataset(tmp_path / "o" / "dataset.zarr").names
    )


def test_bad_video_is_a_failed_row_and_strict_exits_nonzero(tmp_path, clip_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    out = tmp_path / "o"
    result = run(
        "ingest",
        str(bad),
        str(clip_path),
        "--box",
        "0,0,500,300",
        "--out",
        str(out),
        "max_frames=8",
        "grid_size=4",
    )
    assert result.returncode == 0, result.stderr
    assert "broken" in result.stdout and "not a readable video" in result.stdout
    assert FlowDataset(out / "dataset.zarr").names == ["cups_clip"]
    # the same options as the first run: a rerun into --out with another config exits 2, not 1
    strict = run(
        "ingest", str(bad), "--box", "0,0,10,10", "--out", str(out), "--strict", "max_frames=8", "grid_size=4"
    )
    assert strict.returncode == 1, strict.stderr
    assert "not a readable video" in strict.stdout
    outside = run("ingest", str(clip_path), "--box", "0,0,9000,10", "--out", str(tmp_path / "x"), "--strict")
    assert outside.returncode == 1 and "outside the 640x360 image" in outside.stdout
    result = run("inspect", str(tmp_path / "missing.zarr"))
    assert result.returncode == 2 and "missing.zarr" in result.stderr


def test_sim_demos_resume_and_summary(tmp_path):
    out = tmp_path / "demos"
    args = [
        "sim",
        "demos",
        "--task",
        "pick_place",
        "--episodes",
        "2",
        "--out",
        str(out),
        "--videos",
        "image_size=[96,96]",
        "record.num_points=32",
    ]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    row = summary["tasks"]["pick_place"]
    assert (row["written"], row["failed"], row["success_rate"]) == (2, 0, 1.0)
    ds = FlowDataset(out / "dataset.zarr", kind="sim_demo")
    assert ds.names == ["pick_place_000000", "pick_place_000001"]
    assert (
        ds[0].frame_size == (96, 96) and ds[0].num_points == 32 and ds[0].task == "put the mug on the plate"
    )
    assert probe_video(out / "videos" / "pick_place_000001.mp4").num_frames == ds[1].num_frames
    again = run(*args)
    row = json.loads((out / "summary.json").read_text())["tasks"]["pick_place"]
    assert (row["skipped"], row["success_rate"]) == (2, 1.0), again.stderr  # their outcome still counts


def test_sim_bad_task_and_show(tmp_path):
    result = run("sim", "play", "--task", "pik_place", "--out", str(tmp_path / "p"))
    assert result.returncode == 2 and "did you mean 'pick_place'" in result.stderr
    png = tmp_path / "scene.png"
    assert run("sim", "show", "--task", "fold_cloth", "--out", str(png)).returncode == 0
    assert png.stat().st_size > 10_000


class _Marker:
    """Creates a file when unpickled: the CLI must refuse the file before that."""

    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_flow_sample_on_a_real_frame_writes_npz_and_gif(tmp_path, clip_path):
    import torch
    from tiny_configs import tiny_generator_config

    from im2flow2act.im2flow.generator import FlowGenerator

    torch.manual_seed(0)
    generator = FlowGenerator(tiny_generator_config()).save_pretrained(tmp_path / "g")
    out = tmp_path / "sample"
    result = run(
        "flow",
        "sample",
        str(clip_path),
        "--task",
        "put the red cup down",
        "--generator",
        str(generator),
        "--box",
        BOX,
        "-k",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    data = np.load(out / "flow.npz")
    assert data["flows"].shape == (2, 6, 16, 3) and data["queries"].shape == (16, 3)
    assert probe_video(out / "flow.gif").num_frames == 7

    def sample_with(generator_path):
        return run(
            "flow", "sample", str(clip_path), "--task", "x", "--generator", str(generator_path), "--box", BOX
        )

    missing = sample_with(tmp_path / "none")
    assert missing.returncode == 2 and "none does not exist" in missing.stderr
    marker = tmp_path / "pwned"
    torch.save({"model": _Marker(marker)}, tmp_path / "evil.pt")  # an old-style pickled model, crafted
    evil = sample_with(tmp_path / "evil.pt")
    assert evil.returncode == 2 and "error:" in evil.stderr and not marker.exists()
    assert "evil.pt is a file, not a flow generator model folder" in evil.stderr
    no_box = run("flow", "sample", str(clip_path), "--task", "x", "--generator", str(generator))
    assert no_box.returncode == 2 and "--box" in no_box.stderr


def test_policy_train_and_eval_refuse_what_does_not_fit_with_a_red_line(tmp_path, play_root):
    import torch
    from tiny_configs import tiny_generator_config

    from im2flow2act.core.run_log import record_config
    from im2flow2act.im2flow.generator import FlowGenerator
    from im2flow2act.policies.train import TrainConfig

    folder = tmp_path / "run"
    record_config(TrainConfig(data=[str(play_root)]), folder / "train_config.yaml")
    before = (folder / "train_config.yaml").read_text()
    result = run("policy", "train", "--out", str(folder), f"data=[{play_root}]", "lr=0.001")
    assert result.returncode == 2 and "error:" in result.stderr, result.stderr
    assert "differing keys: lr: 0.0003 → 0.001" in result.stderr
    assert (folder / "train_config.yaml").read_text() == before
    torch.manual_seed(0)
    generator = FlowGenerator(tiny_generator_config()).save_pretrained(tmp_path / "generator")
    result = run("policy", "eval", "--out", str(tmp_path / "eval"), f"policy={generator}")
    assert result.returncode == 2 and "error:" in result.stderr
    assert "holds a flow generator (config.json kind 'flow_generator'), not a flow policy" in result.stderr
