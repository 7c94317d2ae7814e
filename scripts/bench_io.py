"""Benchmark the spine: video decode, LK tracking, flow-dataset write/read — each next to a baseline.

    .venv/bin/python scripts/bench_io.py [--video PATH] [--out outputs/bench/io.jsonl]

Prints a table and appends one JSON row (figures + machine) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from im2flow2act.core.bench_log import append_row
from im2flow2act.preprocessing.dataset import Episode, FlowDataset, FlowDatasetWriter
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import grid_in_box, to_pixels
from im2flow2act.preprocessing.video import probe_video, read_video

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEO = REPO.parent / "shared" / "data" / "videos" / "cups.mp4"
CLIP = REPO / "data" / "clips" / "cups_clip.mp4"


def timed(fn, repeat: int = 3):
    """Best wall time of ``repeat`` runs (and the last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_decode(video: Path) -> dict:
    info = probe_video(video)
    row = {"video": video.name, "source_size": f"{info.width}x{info.height}", "frames": info.num_frames}
    for backend in ("decord", "pyav"):
        seconds, (frames, _, _) = timed(lambda b=backend: read_video(video, size=(256, 256), backend=b), 2)
        row[f"decode_fps_{backend}"] = len(frames) / seconds
    return row


def plain_lk(frames: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Baseline: frame-to-frame OpenCV LK with no forward–backward check and no re-acquisition."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    pts = to_pixels(queries[:, 1:], (frames.shape[2], frames.shape[1])).reshape(-1, 1, 2)
    params = dict(
        winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    )
    out = [pts]
    for a, b in zip(gray[:-1], gray[1:], strict=True):
        pts, _, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, **params)
        out.append(pts)
    return np.stack(out)


def bench_lk(video: Path) -> dict:
    frames, _, _ = read_video(video, end=64, size=(256, 256))
    queries = grid_in_box([0.2, 0.0, 0.36, 0.3], grid_size=32)  # 1024 points
    tracker = TRACKERS.build("lk")
    ours, (_, vis) = timed(lambda: tracker.track(frames, queries))
    base, _ = timed(lambda: plain_lk(frames, queries))
    return {
        "lk_frames": len(frames),
        "lk_points": len(queries),
        "lk_seconds_ours": ours,
        "lk_seconds_plain_opencv": base,
        "lk_visible_fraction": float(vis.mean()),
    }


def bench_dataset(video: Path) -> dict:
    frames, idx, _ = read_video(video, size=(256, 256))
    t, n = len(frames), 1024
    rng = np.random.default_rng(0)
    episode = Episode(
        frames=frames,
        tracks=rng.random((t, n, 2), dtype=np.float32),
        visibility=rng.random((t, n)) > 0.1,
        queries=rng.random((n, 3), dtype=np.float32),
        task="bench",
        fps=30.0,
        source=str(video),
        frame_indices=idx,
    )
    megabytes = (frames.nbytes + episode.tracks.nbytes + episode.visibility.nbytes) / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="bench_io_"))
    try:

        def write_zarr():
            shutil.rmtree(tmp / "ds.zarr", ignore_errors=True)
            FlowDatasetWriter(tmp / "ds.zarr").write("ep", episode)

        def write_npy():
            for key in ("frames", "tracks", "visibility"):
                np.save(tmp / f"{key}.npy", getattr(episode, key))

        write_z, _ = timed(write_zarr)
        write_n, _ = timed(write_npy)
        view = FlowDataset(tmp / "ds.zarr")["ep"]
        read_z, _ = timed(lambda: (view.frames[...], view.tracks, view.visibility))
        read_n, _ = timed(lambda: [np.load(tmp / f"{k}.npy") for k in ("frames", "tracks", "visibility")])
        one_frame, _ = timed(lambda: view.frame(t // 2), repeat=20)
        stored = sum(f.stat().st_size for f in (tmp / "ds.zarr" / "ep").rglob("*") if f.is_file()) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "episode_mb": megabytes,
        "stored_mb_zarr": stored,
        "write_mb_s_zarr": megabytes / write_z,
        "write_mb_s_npy": megabytes / write_n,
        "read_mb_s_zarr": megabytes / read_z,
        "read_mb_s_npy": megabytes / read_n,
        "one_frame_read_ms_zarr": one_frame * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=SHARED_VIDEO if SHARED_VIDEO.is_file() else CLIP)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "io.jsonl")
    args = parser.parse_args()
    cv2.setNumThreads(os.cpu_count() or 1)

    decode, lk, data = bench_decode(args.video), bench_lk(args.video), bench_dataset(args.video)
    print(
        f"\nim2flow2act I/O benchmark — {args.video.name} ({decode['source_size']}, "
        f"{decode['frames']} frames), {os.cpu_count()} CPU cores\n"
    )
    print(f"{'measure':<44}{'ours':>14}{'baseline':>14}  baseline is")
    print("-" * 100)
    print(
        f"{'decode + resize to 256x256 (frames/s)':<44}{decode['decode_fps_decord']:>14.1f}"
        f"{decode['decode_fps_pyav']:>14.1f}  PyAV back-end (ours = decord)"
    )
    print(
        f"{'LK 1024 pts x 64 frames @256² (s)':<44}{lk['lk_seconds_ours']:>14.2f}"
        f"{lk['lk_seconds_plain_opencv']:>14.2f}  plain OpenCV LK, no FB check / re-acquisition"
    )
    print(
        f"{'dataset write (MB/s)':<44}{data['write_mb_s_zarr']:>14.1f}{data['write_mb_s_npy']:>14.1f}  "
        "uncompressed .npy"
    )
    print(
        f"{'dataset read (MB/s)':<44}{data['read_mb_s_zarr']:>14.1f}{data['read_mb_s_npy']:>14.1f}  "
        "uncompressed .npy"
    )
    print(
        f"{'stored size of one episode (MB)':<44}{data['stored_mb_zarr']:>14.1f}{data['episode_mb']:>14.1f}  "
        "raw bytes"
    )
    print(f"{'read one frame (ms)':<44}{data['one_frame_read_ms_zarr']:>14.2f}")
    print(f"\nLK kept {lk['lk_visible_fraction']:.0%} of point-steps visible on this real clip.")

    append_row(args.out, "io", **decode, **lk, **data)


if __name__ == "__main__":
    main()
