"""Bad inputs and faults in `ingest` (issue 28): each is a clear error for that input, nothing is dropped."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from conftest import CLIP, CLIP_BOX, faststart_cut, run_cli

from im2flow2act.core.config import ConfigError
from im2flow2act.preprocessing.dataset import FlowDataset
from im2flow2act.preprocessing.download import cached_path
from im2flow2act.preprocessing.ingest import IngestConfig, assign_names, ingest_batch
from im2flow2act.preprocessing.sources import VideoItem, resolve_inputs
from im2flow2act.preprocessing.video import DecodeConfig, read_video, write_video

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


def test_one_name_for_several_videos_exits_2(tmp_path, clip_path):
    other = _other_video(tmp_path / "other.mp4", start=30)
    out = tmp_path / "out"
    result = run_cli("ingest", str(clip_path), str(other), "--name", "cup", "--out", str(out), *FAST_ARGS)
    assert (
        result.returncode == 2 and "--name names a single input; these inputs give 2 videos" in result.stderr
    )
    assert not (out / "dataset.zarr").exists()


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


# ----------------------------------------------------------------------------- videos (decode_video)
SMALL_BOX = ",".join(str(v // 5) for v in CLIP_BOX)  # the cup in the clip at 128x72, as faststart_cut writes


def test_truncated_video_is_flagged_and_a_one_frame_video_fails_its_row_only(tmp_path, clip_path):
    one = write_video(tmp_path / "one.mp4", read_video(CLIP, 0, 1, size=(128, 72))[0], fps=30)
    cut = faststart_cut(tmp_path, clip_path)
    out = tmp_path / "out"
    result = run_cli("ingest", str(one), str(cut), "--box", SMALL_BOX, "grid_size=4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = result.stdout
    assert "one.mp4: too short: the range holds 1 frame(s), at least min_frames=2 needed" in table
    flagged = re.search(
        r"truncated: decoding stopped after source frame (\d+) of the 75 the container", table
    )
    assert flagged, table
    assert "1 written, 0 skipped, 1 failed" in table and "1 with decode notes" in table
    rows = {e["name"]: e for e in json.loads((out / "summary.json").read_text())["episodes"]}
    assert rows["one"]["status"] == "failed" and str(one) in rows["one"]["reason"]
    assert rows["cut"]["status"] == "written" and "truncated" in rows["cut"]["notes"][0]
    attrs = FlowDataset(out / "dataset.zarr")["cut"].attrs
    assert attrs["truncated"] is True and attrs["declared_frames"] == attrs["requested_frames"] == 75
    assert 2 <= attrs["decoded_frames"] == int(flagged[1]) == len(attrs["frame_indices"]) < 75
    assert attrs["decode_notes"] == rows["cut"]["notes"] and "truncated" in attrs["decode_notes"][0]
    assert FlowDataset(out / "dataset.zarr").names == ["cut"]


def test_long_video_is_subsampled_to_the_cap_and_its_fps_follows(tmp_path):
    video = _other_video(tmp_path / "twelve.mp4", start=0)  # 12 frames at 15 fps
    config = replace(_config(), max_frames=None, decode=DecodeConfig(max_frames=4))
    [result] = ingest_batch([VideoItem(str(video))], config, tmp_path / "out", progress=False)
    assert result.status == "written" and result.num_frames == 4, result.reason
    assert len(result.notes) == 1 and "12 frames is over max_frames=4: kept one frame in 3" in result.notes[0]
    ep = FlowDataset(tmp_path / "out" / "dataset.zarr")["twelve"]
    assert ep.attrs["frame_indices"] == [0, 3, 6, 9] and ep.attrs["fps"] == pytest.approx(5.0)
    assert ep.attrs["requested_frames"] == 12 and ep.attrs["truncated"] is False


def test_a_download_that_fails_to_decode_is_not_kept_for_the_next_run(tmp_path, clip_path, http_server):
    base, www = http_server
    faststart_cut(tmp_path, clip_path).rename(www / "cut.mp4")
    url, out = f"{base}/cut.mp4", tmp_path / "out"
    strict = replace(_config(), max_frames=None, decode=DecodeConfig(on_truncated="error"))
    [result] = ingest_batch([VideoItem(url, box=(27, 0, 45, 21))], strict, out, progress=False)
    cached = cached_path(url, out / "downloads")
    assert result.status == "failed" and f"{cached}: truncated" in result.reason, result.reason
    assert not cached.exists()


def test_a_record_without_decode_compares_as_the_defaults(tmp_path):
    video = _other_video(tmp_path / "twelve.mp4", start=0)
    out = tmp_path / "out"
    items = [VideoItem(str(video))]
    assert ingest_batch(items, _config(), out, progress=False)[0].status == "written"
    record = yaml.safe_load((out / "ingest_config.yaml").read_text())
    del record["decode"]  # as written before IngestConfig had a decode section
    (out / "ingest_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    assert ingest_batch(items, _config(), out, progress=False)[0].status == "skipped"
    changed = replace(_config(), decode=DecodeConfig(max_frames=64))
    with pytest.raises(ConfigError, match=r"decode.max_frames: 1024 there, 64 now"):
        ingest_batch(items, changed, out, progress=False)


def test_max_frames_below_decode_min_frames_is_refused():
    with pytest.raises(ValueError, match=r"max_frames must be at least decode.min_frames \(5\), got 4"):
        IngestConfig(max_frames=4, decode=DecodeConfig(min_frames=5))


# ----------------------------------------------------------------------------- inputs: URL schemes


def test_urls_of_other_schemes_are_named_not_looked_up_as_files(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("video\nftp://example.org/row.mp4\nfile:///data/row.mp4\n")
    items, bad = resolve_inputs(["ftp://example.org/a.mp4", "file:///data/a.mp4", str(manifest)])
    assert not items
    reasons = {b.source: b.reason for b in bad}
    assert reasons["ftp://example.org/a.mp4"].startswith("unsupported URL scheme ftp://")
    assert "download it first" in reasons["ftp://example.org/a.mp4"]
    assert "give the file's plain path" in reasons["file:///data/a.mp4"]
    assert "unsupported URL scheme ftp://" in reasons[f"{manifest}:row 1"]
    assert "unsupported URL scheme file://" in reasons[f"{manifest}:row 2"]
    assert not any("no such file" in r for r in reasons.values())


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
