"""Benchmark ingest on a folder of real clips: videos/minute, frames/s, peak memory at 1 and 2 workers.

    .venv/bin/python scripts/bench_ingest.py [--videos DIR] [--out outputs/bench/ingest.jsonl]

Each configuration runs the real `im2flow2act ingest` command (motion grounder, LK, 256×256 frames) into
a fresh temporary folder, in its own process, so its peak memory (the largest resident set of the
command and its workers) is measured cleanly. The side-by-side baseline is the same job without overlay
videos, to show what drawing costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from im2flow2act.core.bench_log import append_row

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "videos"


def run_ingest(videos: list[Path], workers: int, overlay: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    exe = Path(sys.executable).with_name("im2flow2act")
    command = [
        str(exe),
        "ingest",
        *map(str, videos),
        "--grounder",
        "motion",
        "--workers",
        str(workers),
        "--out",
        str(out),
        "--overlay" if overlay else "--no-overlay",
    ]
    # a fresh parent per run: its RUSAGE_CHILDREN peak covers exactly this command and its workers
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.stderr.write(r.stderr); "
        "sys.exit(r.returncode)"
    )
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    wall = time.perf_counter() - start
    try:
        if result.returncode != 0:
            raise RuntimeError(f"ingest failed: {result.stderr[-2000:]}")
        peak_kb = int(result.stdout.strip().splitlines()[-1])
        summary = json.loads((out / "summary.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "workers": workers,
        "overlay": overlay,
        "videos": summary["written"],
        "frames": summary["frames"],
        "wall_s": wall,
        "videos_per_min": 60 * summary["written"] / wall,
        "frames_per_s": summary["frames"] / wall,
        "peak_rss_mb": peak_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "ingest.jsonl")
    args = parser.parse_args()
    videos = sorted(args.videos.glob("*.mp4"))
    if not videos:
        sys.exit(f"no .mp4 files in {args.videos}")
    rows = [run_ingest(videos, workers, overlay) for workers in (1, 2) for overlay in (True, False)]
    print(
        f"\nim2flow2act ingest benchmark — {len(videos)} clips from {args.videos} "
        f"({rows[0]['frames']} frames), motion grounder + LK at 256², {os.cpu_count()} CPU cores\n"
    )
    print(f"{'workers':>8}{'overlay':>9}{'wall s':>9}{'videos/min':>12}{'frames/s':>10}{'peak MB':>9}")
    for r in rows:
        print(
            f"{r['workers']:>8}{('yes' if r['overlay'] else 'no'):>9}{r['wall_s']:>9.1f}"
            f"{r['videos_per_min']:>12.1f}{r['frames_per_s']:>10.1f}{r['peak_rss_mb']:>9.0f}"
        )
    append_row(args.out, "ingest", videos=[v.name for v in videos], rows=rows)


if __name__ == "__main__":
    main()
