"""Benchmark point tracking on the CPU: Lucas–Kanade next to CoTracker3 (offline), 256 and 1024 points.

    .venv/bin/python scripts/bench_tracking.py [--video PATH] [--frames 32] [--threads N]
                                               [--out outputs/bench/tracking.jsonl]

Each measurement runs in a fresh process (so peak memory belongs to that measurement alone) on the first
``--frames`` frames of a real video decoded with our reader at its own size. CoTracker3 uses random
weights (the time does not depend on them) at its default settings: model resolution 384x512, 6
iterations, the 6x6 support grid, all frames refined jointly. Reported per run: wall time of
``track(frames, queries)`` after a warm-up call, the process CPU time during it, and memory as peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child process) — both the whole process's peak and
its growth during tracking over the RSS just before. Prints a table and appends one JSON row.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "videos" / "pillow.mp4"
POINTS = (256, 1024)
TRACKERS_TIMED = {
    "lk": {},
    "cotracker3": {"random_weights": True, "device": "cpu", "iters": 6, "model_resolution": [384, 512]},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(name: str, options: dict, video: str, num_frames: int, num_points: int, threads: int) -> dict:
    """One tracker, one point count, in this (fresh) process."""
    import numpy as np
    import torch

    from im2flow2act.preprocessing.trackers import TRACKERS
    from im2flow2act.preprocessing.tracks import grid_in_box
    from im2flow2act.preprocessing.video import read_video

    if threads:
        torch.set_num_threads(threads)
    frames, _, _ = read_video(video, end=num_frames)
    side = int(round(num_points**0.5))
    queries = grid_in_box([0.05, 0.05, 0.95, 0.95], grid_size=side)
    tracker = TRACKERS.build(name, options)
    tracker.track(frames[:2], queries[:1])  # warm-up: one-time library set-up is not tracking time
    before = _rss_mb()
    cpu, wall = time.process_time(), time.perf_counter()
    tracks, vis = tracker.track(frames, queries)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _rss_mb()
    assert tracks.shape == (len(frames), len(queries), 2) and np.isfinite(tracks).all()
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "rss_growth_mb": max(peak - before, 0.0),
        "frames": len(frames),
        "size": f"{frames.shape[2]}x{frames.shape[1]}",
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "tracking.jsonl")
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"video not found: {args.video} (pass --video PATH)")

    from im2flow2act.core.bench_log import append_row

    load = os.getloadavg()[0]
    spawn = multiprocessing.get_context("spawn")
    results: dict[str, dict] = {}
    for points in POINTS:
        for name, options in TRACKERS_TIMED.items():
            print(f"timing {name} with {points} points ...", flush=True)
            with spawn.Pool(1) as pool:
                job = (name, options, str(args.video), args.frames, points, args.threads)
                results[f"{name}_{points}"] = pool.apply(measure, job)

    first = next(iter(results.values()))
    print(
        f"\nPoint tracking on the CPU — {args.video.name} ({first['size']}), {first['frames']} frames, "
        f"{os.cpu_count()} cores, {first['threads']} torch threads, load average at start {load:.1f}\n"
    )
    print(f"{'measure':<40}" + "".join(f"{f'{n} {p} pts':>20}" for p in POINTS for n in TRACKERS_TIMED))
    print("-" * (40 + 20 * len(results)))
    rows = [
        ("track time, wall (s)", "seconds", "{:.2f}"),
        ("process CPU time (s)", "cpu_seconds", "{:.2f}"),
        ("ms per point-frame (wall)", None, "{:.3f}"),
        ("peak RSS of the process (MB)", "peak_rss_mb", "{:.0f}"),
        ("RSS growth while tracking (MB)", "rss_growth_mb", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        cells = []
        for points in POINTS:
            for name in TRACKERS_TIMED:
                r = results[f"{name}_{points}"]
                value = r[key] if key else 1e3 * r["seconds"] / (points * r["frames"])
                cells.append(f"{fmt.format(value):>20}")
        print(f"{label:<40}" + "".join(cells))
    print(
        "\nCoTracker3: random weights, 384x512, 6 iterations, +36 support points, all frames jointly. "
        "Memory is peak RSS (resource.getrusage) of a fresh process per measurement."
    )
    figures = {f"{k}_{m}": v for k, r in results.items() for m, v in r.items() if m not in ("size", "frames")}
    append_row(
        args.out,
        "tracking",
        video=args.video.name,
        video_size=first["size"],
        frames=first["frames"],
        load_average=load,
        **figures,
    )


if __name__ == "__main__":
    main()
