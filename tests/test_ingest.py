"""`im2flow2act ingest` on every kind of input at once, with bad ones mixed in."""

import json
import shutil

from conftest import run_cli
from tiny_models import save_grounding_dino

from im2flow2act.preprocessing.dataset import FlowDataset

FAST = ["max_frames=16", "grid_size=8", "grounder_args.threshold_px=3", "grounder_args.grid_size=16"]


run = run_cli


def test_all_input_kinds_in_one_batch_bad_ones_reported(tmp_path, clip_path, http_server, closed_port_url):
    base, www = http_server
    shutil.copy(clip_path, www / "served.mp4")
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(clip_path, folder / "in_folder.mp4")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x01" * 4000)
    (folder / "empty.mp4").write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        f"video,task,object_prompt,name\n{clip_path},put the cup down,red cup,from_manifest\n"
    )
    broken_manifest = tmp_path / "broken.jsonl"
    broken_manifest.write_text('{"path": "x.mp4", "task": "t"}\n')
    out = tmp_path / "out"

    first = run("ingest", str(clip_path), "--grounder", "motion", "--task", "t", "--out", str(out), *FAST)
    assert first.returncode == 0, first.stderr
    before = (out / "dataset.zarr" / "cups_clip" / "tracks").stat().st_mtime_ns

    result = run(
        "ingest",
        str(clip_path),
        str(folder),
        str(manifest),
        str(broken_manifest),
        f"{base}/served.mp4",
        closed_port_url,
        "--grounder",
        "motion",
        "--prompt",
        "red cup",
        "--task",
        "move the cup",
        "--workers",
        "2",
        "--out",
        str(out),
        *FAST,
        "download.retries=0",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {e["name"]: e["status"] for e in summary["episodes"]}
    assert status == {
        "cups_clip": "skipped",
        "corrupt": "failed",
        "empty": "failed",
        "in_folder": "written",
        "from_manifest": "written",
        "served": "written",
        "video": "failed",
    }
    reasons = {e["name"]: e["reason"] for e in summary["episodes"]}
    assert (
        "corrupt.mp4" in reasons["corrupt"]
        and "empty.mp4" in reasons["empty"]
        and "0 bytes" in reasons["empty"]
    )
    assert "refused" in reasons["video"] and str(closed_port_url) in reasons["video"]
    assert "no 'video' column" in summary["bad_inputs"][0]["reason"]
    ds = FlowDataset(out / "dataset.zarr")
    assert ds.names == ["cups_clip", "from_manifest", "in_folder", "served"]
    assert ds["from_manifest"].task == "put the cup down" and ds["served"].attrs["source"].startswith(
        "http://127.0.0.1"
    )
    assert (out / "dataset.zarr" / "cups_clip" / "tracks").stat().st_mtime_ns == before  # nothing rewritten
    assert ds["in_folder"].attrs["grounder"] == "motion"
    assert "4 failed" in result.stdout or "failed" in result.stdout

    strict = run(
        "ingest", str(folder / "corrupt.mp4"), "--grounder", "motion", "--out", str(out), "--strict", *FAST
    )
    assert strict.returncode == 1


def test_prompt_with_no_detection_fails_that_video_clearly(tmp_path, clip_path):
    model = save_grounding_dino(tmp_path / "gdino")
    out = tmp_path / "out"
    result = run(
        "ingest",
        str(clip_path),
        "--grounder",
        "grounding-dino",
        "--prompt",
        "red cup",
        "--out",
        str(out),
        f"grounder_args.model={model}",
        "grounder_args.box_threshold=1.01",
        *FAST[:2],
    )
    assert result.returncode == 0, result.stderr
    assert "nothing matching 'red cup' was detected" in result.stdout
    ok = run(
        "ingest",
        str(clip_path),
        "--grounder",
        "grounding-dino",
        "--prompt",
        "red cup",
        "--out",
        str(out),
        f"grounder_args.model={model}",
        "grounder_args.box_threshold=0.0",
        "grounder_args.text_threshold=0.0",
        "--segmenter",
        "sam",
        "segmenter_args.model=./missing-sam",
        *FAST[:2],
    )
    assert ok.returncode == 2 and "missing-sam" in ok.stderr and "--grounder motion" in ok.stderr


def test_grounding_dino_with_sam_mask_end_to_end(tmp_path, clip_path):
    from tiny_models import save_sam

    detector, sam = save_grounding_dino(tmp_path / "gdino"), save_sam(tmp_path / "sam")
    out = tmp_path / "out"
    result = run(
        "ingest",
        str(clip_path),
        "--grounder",
        "grounding-dino",
        "--segmenter",
        "sam",
        "--prompt",
        "red cup",
        "--task",
        "t",
        "--out",
        str(out),
        f"grounder_args.model={detector}",
        "grounder_args.box_threshold=0.0",
        "grounder_args.text_threshold=0.0",
        f"segmenter_args.model={sam}",
        *FAST[:2],
    )
    assert result.returncode == 0, result.stderr
    view = FlowDataset(out / "dataset.zarr")["cups_clip"]
    assert view.attrs["grounder"] == "grounding-dino" and view.array("object_mask").shape == (256, 256)
    assert 0 < view.num_points <= 64
