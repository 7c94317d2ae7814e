"""Benchmark the batch executors on this machine: ingest (videos/min) and simulated play (episodes/min)
with the local executor at 1 and 2 workers and a local Ray with 2 CPUs, plus Ray's own costs.

    MUJOCO_GL=egl .venv/bin/python scripts/bench_scale.py [--videos ../shared/data/videos] [--repeat 2]
        [--episodes 4] [--out outputs/bench/scale.jsonl]

Ingest reads the shared real clips (``--repeat`` copies of each, under other names) with ingest's default
config (auto grounder → hand-object, object-lk), overlays off; play runs ``--episodes`` per task scene at
128 px. Every configuration writes into a fresh folder; the Ray rows are checked to hold the same episodes
as the local one. Ray's costs: starting a local Ray (once per process), and the per-item overhead of
handing an item to an actor and its result back (a job that does nothing, 200 items, against the local
pool). Prints a markdown table and appends one JSON row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "scale"))


def nothing(item: int) -> int:
    return item


def per_item_ms(executor, workers: int, items: int = 200) -> float:
    from im2flow2act.core.processes import pool_map

    list(pool_map(nothing, range(8), workers, executor=executor))  # workers started, not timed
    started = time.perf_counter()
    list(pool_map(nothing, range(items), workers, executor=executor))
    return (time.perf_counter() - started) / items * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "data" / "videos")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "scale.jsonl")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    from store_compare import store_differences

    from im2flow2act.core.bench_log import append_row
    from im2flow2act.core.processes import ExecutorConfig
    from im2flow2act.core.ray_pool import connect
    from im2flow2act.policies.sim.generate import GenerateConfig, generate
    from im2flow2act.preprocessing.ingest import IngestConfig, ingest_batch
    from im2flow2act.preprocessing.sources import VideoItem

    ray_exec = ExecutorConfig(kind="ray")
    started = time.perf_counter()
    connect(ray_exec, 2)
    ray_start_s = time.perf_counter() - started

    clips = sorted(args.videos.glob("*.mp4"))
    items = [VideoItem(str(c), name=f"{c.stem}_{k}") for k in range(args.repeat) for c in clips]
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    runs = [("local", 1, None), ("local", 2, None), ("ray", 2, ray_exec)]
    rows = []

    def measure(job: str, kind: str, workers: int, run) -> None:
        """Time ``run(out)`` (→ items written) into a fresh folder; check its episodes against local ×1."""
        out = work / f"{job.replace(' ', '_')}_{kind}_{workers}"
        started = time.perf_counter()
        written = run(out)
        seconds = time.perf_counter() - started
        reference = work / f"{job.replace(' ', '_')}_local_1" / "dataset.zarr"
        same = store_differences(reference, out / "dataset.zarr") == []
        rows.append(
            {
                "job": job,
                "executor": kind,
                "workers": workers,
                "items": written,
                "seconds": seconds,
                "per_min": written / seconds * 60,
                "same_as_local": same,
            }
        )
        print(f"{job} {kind} x{workers}: {written} items in {seconds:.1f} s", flush=True)

    for kind, workers, executor in runs:

        def ingest(out, workers=workers, executor=executor):
            results = ingest_batch(items, IngestConfig(overlay=False), out, workers, False, executor)
            return sum(r.status == "written" for r in results)

        measure("ingest", kind, workers, ingest)
    for kind, workers, executor in runs:

        def play(out, workers=workers, executor=executor):
            cfg = GenerateConfig(episodes=args.episodes, workers=workers, image_size=(128, 128))
            summary = generate("play", out, cfg, progress=False, executor=executor)
            return sum(t["written"] for t in summary["tasks"].values())

        measure("sim play", kind, workers, play)
    overhead = {"local": per_item_ms(ExecutorConfig(), 2), "ray": per_item_ms(ray_exec, 2)}
    shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nOn {os.cpu_count()} CPUs; ingest: {len(items)} videos, "
        f"play: {args.episodes} episodes per task scene\n"
    )
    print("| job | executor | workers | items | wall s | items/min | same episodes as local ×1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['job']} | {r['executor']} | {r['workers']} | {r['items']} | {r['seconds']:.1f} | "
            f"{r['per_min']:.1f} | {'yes' if r['same_as_local'] else 'NO'} |"
        )
    print(
        f"\nRay: local start {ray_start_s:.1f} s (once per process); per-item overhead "
        f"{overhead['ray']:.2f} ms vs {overhead['local']:.2f} ms in the local pool (a job that does nothing)"
    )
    append_row(args.out, "scale", rows=rows, ray_start_s=ray_start_s, per_item_ms=overhead)


if __name__ == "__main__":
    main()
