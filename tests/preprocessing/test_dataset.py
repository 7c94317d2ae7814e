import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from im2flow2act.preprocessing.dataset import (
    SCHEMA_VERSION,
    DatasetError,
    DatasetVersionError,
    Episode,
    FlowDataset,
    FlowDatasetWriter,
)
from im2flow2act.preprocessing.video import read_video


def make_episode(t=12, n=20, h=48, w=64, seed=0, task="put the cup on the plate", frames=None) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        frames=(rng.random((t, h, w, 3)) * 255).astype(np.uint8) if frames is None else frames,
        tracks=rng.random((t, n, 2)).astype(np.float32),
        visibility=rng.random((t, n)) > 0.2,
        queries=np.concatenate([np.zeros((n, 1)), rng.random((n, 2))], axis=1).astype(np.float32),
        task=task,
        fps=10.0,
        source=f"sim:test:{seed}",
        frame_indices=list(range(t)),
        object_prompt="mug",
        bbox=[0.1, 0.2, 0.5, 0.6],
        arrays={"action": rng.random((t, 10)).astype(np.float32), "moving": rng.random(n) > 0.5},
        attrs={"tracker": "oracle"},
    )


def test_round_trip_of_a_real_clip_episode(tmp_path, clip_path):
    frames, idx, info = read_video(clip_path, end=20, size=(128, 72))
    ep = make_episode(t=20, n=16)
    ep.frames, ep.frame_indices = frames, idx
    writer = FlowDatasetWriter(tmp_path / "ds.zarr", kind="video", note="test")
    assert writer.write("cups", ep)
    assert writer.write(writer.next_name(), make_episode(seed=1, task="open the drawer"))
    assert writer.next_name() == "episode_000001"

    ds = FlowDataset(tmp_path / "ds.zarr", kind="video")
    assert ds.names == ["cups", "episode_000000"] and ds.attrs["note"] == "test"
    view = ds["cups"]
    np.testing.assert_array_equal(view.frame(7), frames[7])  # lossless
    np.testing.assert_array_equal(view.tracks, ep.tracks)
    np.testing.assert_array_equal(view.visibility, ep.visibility)
    np.testing.assert_array_equal(view.queries, ep.queries)
    np.testing.assert_array_equal(view.array("action"), ep.arrays["action"])
    assert view.frame_size == (128, 72) and view.num_frames == 20 and view.num_points == 16
    loaded = ds[1].load()
    assert loaded.task == "open the drawer" and loaded.bbox == pytest.approx([0.1, 0.2, 0.5, 0.6])
    assert loaded.attrs == {"tracker": "oracle"} and loaded.frame_indices == list(range(12))
    assert [r.task for r in ds.index()] == ["put the cup on the plate", "open the drawer"]
    assert ds.tasks() == {"put the cup on the plate": ["cups"], "open the drawer": ["episode_000000"]}
    assert [v.name for v in ds] == ds.names
    # frames are compressed, one chunk per frame
    assert view.frames.chunks == (1, 72, 128, 3)
    stored = sum(
        f.stat().st_size for f in (tmp_path / "ds.zarr" / "cups" / "frames").rglob("*") if f.is_file()
    )
    assert stored < frames.nbytes


def test_reading_one_frame_touches_only_its_chunk(tmp_path):
    writer = FlowDatasetWriter(tmp_path / "ds.zarr")
    ep = make_episode()
    writer.write("ep", ep)
    chunks = tmp_path / "ds.zarr" / "ep" / "frames" / "c"
    for t in range(12):
        if t != 5:
            shutil.rmtree(chunks / str(t))  # every other frame's data is gone
    view = FlowDataset(tmp_path / "ds.zarr")["ep"]
    np.testing.assert_array_equal(view.frame(5), ep.frames[5])


def test_rerun_skips_finished_episodes(tmp_path):
    writer = FlowDatasetWriter(tmp_path / "ds.zarr")
    assert writer.write("a", make_episode(seed=0))
    again = FlowDatasetWriter(tmp_path / "ds.zarr")
    assert not again.write("a", make_episode(seed=5))
    np.testing.assert_array_equal(FlowDataset(tmp_path / "ds.zarr")["a"].tracks, make_episode(seed=0).tracks)
    assert again.write("a", make_episode(seed=5), overwrite=True)
    np.testing.assert_array_equal(FlowDataset(tmp_path / "ds.zarr")["a"].tracks, make_episode(seed=5).tracks)


def test_failure_mid_episode_leaves_nothing_and_rerun_completes(tmp_path):
    ep = make_episode()

    def frames_then_crash():
        for i, frame in enumerate(ep.frames):
            if i == 7:
                raise RuntimeError("decoder died")
            yield frame

    writer = FlowDatasetWriter(tmp_path / "ds.zarr")
    writer.write("kept", make_episode(seed=3))
    broken = make_episode()
    broken.frames = frames_then_crash()
    with pytest.raises(RuntimeError, match="decoder died"):
        writer.write("ep", broken)
    assert sorted(p.name for p in (tmp_path / "ds.zarr").iterdir()) == ["kept", "zarr.json"]
    assert writer.write("ep", ep)
    assert FlowDataset(tmp_path / "ds.zarr").names == ["ep", "kept"]


def test_killed_writer_leaves_no_half_episode(tmp_path):
    root = tmp_path / "ds.zarr"
    FlowDatasetWriter(root).write("kept", make_episode(seed=3))
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_dataset import make_episode
        from im2flow2act.preprocessing.dataset import FlowDatasetWriter
        ep = make_episode(t=200)
        frames = ep.frames
        def slow():
            for f in frames:
                time.sleep(0.05)
                yield f
        ep.frames = slow()
        FlowDatasetWriter({str(root)!r}).write("slow", ep)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not list(root.glob(".tmp-slow-*/frames/c")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # some frame chunks are on disk now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(root.glob(".tmp-slow-*")), "the writer should have been killed mid-episode"
    assert FlowDataset(root).names == ["kept"]  # readers never see the half episode
    writer = FlowDatasetWriter(root)  # reopening clears the dead writer's leftovers
    assert not list(root.glob(".tmp-*"))
    assert writer.write("slow", make_episode(t=200))
    assert FlowDataset(root)["slow"].num_frames == 200


def test_wrong_schema_version_is_refused(tmp_path):
    FlowDatasetWriter(tmp_path / "ds.zarr").write("a", make_episode())
    zarr.open_group(str(tmp_path / "ds.zarr"), mode="r+").attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(DatasetVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        FlowDataset(tmp_path / "ds.zarr")
    with pytest.raises(DatasetVersionError):
        FlowDatasetWriter(tmp_path / "ds.zarr")


def test_not_a_dataset_and_wrong_kind(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        FlowDataset(tmp_path / "nothing.zarr")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a zarr flow dataset"):
        FlowDataset(tmp_path / "folder")
    with pytest.raises(DatasetError, match="refusing to write"):
        FlowDatasetWriter(tmp_path / "folder")
    FlowDatasetWriter(tmp_path / "play.zarr", kind="play")
    with pytest.raises(DatasetError, match="is a 'play' dataset, expected 'video'"):
        FlowDataset(tmp_path / "play.zarr", kind="video")


def test_missing_key_and_wrong_shape_are_named(tmp_path):
    root = tmp_path / "ds.zarr"
    writer = FlowDatasetWriter(root)
    writer.write("a", make_episode())
    writer.write("b", make_episode())
    shutil.rmtree(root / "a" / "visibility")
    ds = FlowDataset(root)
    with pytest.raises(DatasetError, match=r"ds.zarr/a: missing required array 'visibility'"):
        ds["a"]
    with pytest.raises(DatasetError, match="missing required array"):
        ds.validate()
    group = zarr.open_group(str(root / "b"), mode="r+")
    del group["queries"]
    group.create_array("queries", data=np.zeros((7, 3), np.float32))
    with pytest.raises(DatasetError, match=r"b: queries \(7, 3\) must be \(N, 3\) for N=20"):
        ds["b"]
    attrs = dict(group.attrs)
    del attrs["task"]
    group.attrs.put(attrs)
    with pytest.raises(DatasetError, match="missing required attribute 'task'"):
        FlowDataset(root)["b"]


def test_writer_rejects_inconsistent_episodes(tmp_path):
    writer = FlowDatasetWriter(tmp_path / "ds.zarr")
    ep = make_episode()
    ep.visibility = ep.visibility[:, :5]
    with pytest.raises(DatasetError, match="visibility must be"):
        writer.write("x", ep)
    ep = make_episode()
    ep.arrays["action"] = np.zeros((3, 10), np.float32)
    with pytest.raises(DatasetError, match="action must have 12 steps"):
        writer.write("x", ep)
    ep = make_episode()
    ep.frames = ep.frames[:5]
    with pytest.raises(DatasetError, match="do not match 12 track steps"):
        writer.write("x", ep)
    with pytest.raises(ValueError, match="episode name"):
        writer.write("../escape", make_episode())
    assert FlowDataset(tmp_path / "ds.zarr").names == []
