"""Bad inputs and faults in `ingest` (issue 28): each is a clear error for that input, nothing is dropped."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from conftest import CLIP, CLIP_BOX, run_cli

from im2flow2act.preprocessing.dataset import FlowDataset
from im2flow2act.preprocessing.ingest import IngestConfig, assign_names, ingest_batch
from im2flow2act.preprocessing.sources import VideoItem, resolve_inputs
from im2flow2act.preprocessing.video import read_video, write_video

FAST = dict(grounder="motion", max_frames=8, grid_size=4, overlay=False)
FAST_ARGS = ["--grounder", "motion", "max_frames=8", "grid_size=4"]


def _config() -> IngestConfig:
    return IngestConfig(**FAST, grounder_args={"threshold_px": 3, "grid_size": 16})


def _other_video(path: Path, start: int) -> Path:
    """A different real video: 12 frames of the committed clip from ``start``, at half size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, read_video(CLIP, start, start + 12, size=(320, 180))[0], fps=15)


def _status(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


def test_videos_sharing_a_file_name_all_become_episodes_and_reruns_skip(tmp_path, clip_path, http_server):
    base, www = http_server
    a = tmp_path / "a" / "clip.mp4"
    a.parent.mkdir()
    shutil.copy(clip_path, a)
    b = _other_video(tmp_path / "b" / "clip.mp4", start=20)
    for sub in ("x", "y"):
        (www / sub).mkdir()
    shutil.copy(clip_path, www / "x" / "clip.mp4")
    _other_video(www / "y" / "clip.mp4", start=40)
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"video,start,end\n{clip_path},0,0.2\n{clip_path},0.2,0.4\n")
    inputs = [str(a), str(b), f"{base}/x/clip.mp4", f"{base}/y/clip.mp4", str(manifest)]
    items, bad = resolve_inputs(inputs)
    assert not bad and len(items) == 6
    out = tmp_path / "out"

    first = ingest_batch(items, _config(), out, progress=False)
    assert [r.status for r in first] == ["written"] * 6, [r.reason for r in first]
    names = [r.name for r in first]
    assert len(set(names)) == 6 and names[0] == "clip" and names[4] == "cups_clip"
    ds = FlowDataset(out / "dataset.zarr")
    sources = {ds[n].attrs["source"] for n in names[:4]}
    assert sources == {str(a), str(b), f"{base}/x/clip.mp4", f"{base}/y/clip.mp4"}
    assert ds[names[5]].attrs["segment"] == [0.2, 0.4]

    again = ingest_batch(list(reversed(items)), _config(), out, progress=False)
    assert [r.name for r in again] == list(reversed(names)) and {r.status for r in again} == {"skipped"}
    alone = ingest_batch(resolve_inputs([str(b)])[0], _config(), out, progress=False)
    assert _status(alone) == {names[1]: "skipped"} and len(FlowDataset(out / "dataset.zarr")) == 6


def test_duplicate_and_taken_names_are_conflicts_for_that_input_only(tmp_path, clip_path):
    other = _other_video(tmp_path / "other.mp4", start=30)
    manifest = tmp_path / "named.jsonl"
    rows = [
        {"video": str(clip_path), "name": "cup"},
        {"video": str(other), "name": "cup"},
        {"video": str(clip_path), "name": "cup"},
        {"video": str(clip_path), "name": "cup", "task": "another task"},
        {"video": str(other), "name": "texture"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items, bad = resolve_inputs([str(manifest)])
    assert not bad
    out = tmp_path / "out"
    results = ingest_batch(items, _config(), out, progress=False)
    assert [r.status for r in results] == ["written", "failed", "skipped", "failed", "written"]
    assert "name conflict" in results[1].reason and f"{manifest}:row 1" in results[1].reason
    assert "same video as" in results[2].reason and "different task" in results[3].reason
    assert FlowDataset(out / "dataset.zarr").names == ["cup", "texture"]

    taken = [VideoItem(str(other), name="cup", origin="cli")]
    [result] = ingest_batch(taken, _config(), out, progress=False)
    assert result.status == "failed" and "name conflict" in result.reason and str(clip_path) in result.reason
    assert FlowDataset(out / "dataset.zarr")["cup"].attrs["source"] == str(clip_path)


def test_bad_names_are_refused_when_the_manifest_is_read(tmp_path, clip_path):
    manifest = tmp_path / "m.csv"
    names = ["../../x", "zarr.json", "a/b", ".hidden", "ok"]
    rows = "".join(f"{clip_path},{n},,\n" for n in names) + f"{clip_path},backwards,2,1\n"
    manifest.write_text("video,name,start,end\n" + rows)
    items, bad = resolve_inputs([str(manifest)])
    assert [i.name for i in items] == ["ok"]
    reasons = {b.source: b.reason for b in bad}
    assert set(reasons) == {f"{manifest}:row {n}" for n in (1, 2, 3, 4, 6)}
    assert "'end' (1.0 s) must be after 'start' (2.0 s)" in reasons[f"{manifest}:row 6"]
    assert "'../../x' is not a valid episode name" in reasons[f"{manifest}:row 1"]
    assert "reserved" in reasons[f"{manifest}:row 2"]

    set_in_code = [VideoItem(str(clip_path), name="../../x"), VideoItem(str(clip_path), name="zarr.json")]
    assert [r.status for r in assign_names(set_in_code, tmp_path / "none")] == ["failed", "failed"]

    out = tmp_path / "deep" / "out"
    result = run_cli("ingest", str(clip_path), "--name", "../../x", "--out", str(out), *FAST_ARGS)
    assert result.returncode == 2 and "--name: name '../../x' is not a valid episode name" in result.stderr
    assert not out.exists() and not (tmp_path / "x").exists()


def test_rerun_with_another_config_is_refused_and_the_record_kept(tmp_path, clip_path):
    out = tmp_path / "out"
    args = ["ingest", str(clip_path), "--out", str(out), *FAST_ARGS]
    assert run_cli(*args).returncode == 0
    record = (out / "ingest_config.yaml").read_bytes()

    refused = run_cli(*args, "grid_size=6", "stride=2")
    assert refused.returncode == 2
    assert "grid_size: 4 there, 6 now" in refused.stderr and "stride: 1 there, 2 now" in refused.stderr
    assert (out / "ingest_config.yaml").read_bytes() == record

    neutral = run_cli(*args, "--no-overlay", "--workers", "2", "overlay_height=240", "download.retries=0")
    assert neutral.returncode == 0, neutral.stderr
    assert "0 written, 1 skipped" in neutral.stdout
    assert (out / "ingest_config.yaml").read_bytes() == record
    assert yaml.safe_load(record)["grid_size"] == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["grid_size=0"], "grid_size must be an integer from 1 to 256, got 0"),
        (["stride=0"], "stride must be an integer of at least 1, got 0"),
        (["frame_size=[0,0]"], "frame_size must be [width, height], each an integer from 8 to 4096"),
        (["max_frames=0"], "max_frames must be null or an integer of at least 2"),
        (["resample_frames=-3"], "resample_frames must be 0 (off) or an integer of at least 2, got -3"),
        (["--workers", "-1"], "--workers must be at least 1, got -1"),
    ],
)
def test_out_of_range_config_exits_2_naming_the_key(tmp_path, clip_path, extra, message):
    out = tmp_path / "out"
    result = run_cli("ingest", str(clip_path), "--grounder", "motion", "--out", str(out), *extra)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (out / "dataset.zarr").exists()


def test_out_inside_the_input_folder_is_not_ingested_back(tmp_path, clip_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(clip_path, folder / "clip.mp4")
    out = folder / "out"
    args = ["ingest", str(folder), "--out", str(out), "--overlay", *FAST_ARGS]
    assert run_cli(*args).returncode == 0
    assert (out / "overlays" / "clip.mp4").is_file()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [(e["name"], e["status"]) for e in summary["episodes"]] == [("clip", "skipped")]
    assert FlowDataset(out / "dataset.zarr").names == ["clip"]
    only_own, bad = resolve_inputs([str(out / "overlays")], exclude=[out / "overlays"])
    assert not only_own and "outside this ingest's own outputs (1 skipped)" in bad[0].reason


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_pool_workers_stop_when_the_ingest_is_killed(tmp_path):
    frames = read_video(CLIP, size=(320, 180))[0]
    long_video = write_video(
        tmp_path / "videos" / "long0.mp4", np.concatenate([frames, frames[::-1]] * 2), 30
    )
    shutil.copy(long_video, long_video.with_name("long1.mp4"))  # one per worker, each many seconds of work
    exe = Path(sys.executable).with_name("im2flow2act")
    box = ",".join(str(v // 2) for v in CLIP_BOX)
    cmd = [str(exe), "ingest", str(long_video.parent), "--box", box, "grid_size=64", "--no-overlay"]
    cmd += ["--workers", "2", "--out", str(tmp_path / "out")]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[psutil.Process] = []
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = [
                p for p in psutil.Process(parent.pid).children() if "spawn_main" in " ".join(p.cmdline())
            ]
        assert len(workers) == 2, "the ingest did not start its two pool workers"
        time.sleep(3)  # let them take a video each
        assert parent.poll() is None, "the ingest finished before it could be killed; give it more videos"
        children = psutil.Process(parent.pid).children()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 4  # the workers' parent check runs every 0.5 s
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [p.pid for p in children if _alive(p)]
        assert not survivors, f"processes still running after the ingest was killed: {survivors}"
    finally:
        for proc in {p.pid: p for p in workers + children}.values():
            if _alive(proc):
                proc.kill()
