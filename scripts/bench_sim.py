"""Benchmark the simulation: env steps/s with and without rendering, episodes/minute at 1 and 2 workers.

    .venv/bin/python scripts/bench_sim.py [--episodes 2] [--out outputs/bench/sim.jsonl]

The baseline for stepping is the bare physics (``mj_step`` × substeps, no IK, no rendering); episodes
per minute are measured on real generation runs (the ``sim demos`` / ``sim play`` jobs) into a
temporary folder, ``--episodes`` per task.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from im2flow2act.core.bench_log import append_row
from im2flow2act.policies.sim.agents import follow
from im2flow2act.policies.sim.env import SimEnv
from im2flow2act.policies.sim.generate import GenerateConfig, generate

REPO = Path(__file__).resolve().parents[1]


def steps_per_second(task: str) -> dict:
    env = SimEnv(task, "robot")
    env.reset(0)
    actions = list(follow(env, env.task.expert(env.model, env.data, np.random.default_rng(0))))

    def run(render: bool) -> float:
        env.reset(0)
        start = time.perf_counter()
        for action in actions:
            env.step(action)
            if render:
                env.render()
        return len(actions) / (time.perf_counter() - start)

    def physics_only() -> float:
        env.reset(0)
        start = time.perf_counter()
        for _ in actions:
            env.advance_physics(env.substeps)
        return len(actions) / (time.perf_counter() - start)

    env.reset(0)
    start = time.perf_counter()
    for _ in range(50):
        env.render()
    render_fps = 50 / (time.perf_counter() - start)
    out = {
        "steps_s_no_render": run(False),
        "steps_s_render": run(True),
        "steps_s_physics_only": physics_only(),
        "render_fps": render_fps,
    }
    env.close()
    return out


def episodes_per_minute(mode: str, episodes: int, workers: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench_sim_{mode}_"))
    try:
        cfg = GenerateConfig(episodes=episodes, workers=workers)
        start = time.perf_counter()
        summary = generate(mode, tmp, cfg, progress=False)
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    written = sum(row["written"] for row in summary["tasks"].values())
    return {"episodes": written, "wall_s": wall, "episodes_per_min": 60 * written / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task for the throughput runs")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "sim.jsonl")
    args = parser.parse_args()

    rows = {task: steps_per_second(task) for task in ("pick_place", "pour", "open_drawer", "fold_cloth")}
    print(
        f"\nim2flow2act sim benchmark — {os.cpu_count()} CPU cores, 256x256 images, "
        "10 Hz control, 50 substeps\n"
    )
    print(
        f"{'task':<14}{'steps/s no render':>19}{'steps/s + render':>18}{'physics only':>14}{'render fps':>12}"
    )
    for task, r in rows.items():
        print(
            f"{task:<14}{r['steps_s_no_render']:>19.1f}{r['steps_s_render']:>18.1f}"
            f"{r['steps_s_physics_only']:>14.1f}{r['render_fps']:>12.1f}"
        )
    throughput = {}
    for mode in ("demos", "play"):
        for workers in (1, 2):
            throughput[f"{mode}_w{workers}"] = episodes_per_minute(mode, args.episodes, workers)
    print(f"\n{'job':<12}{'workers':>8}{'episodes':>10}{'wall s':>9}{'episodes/min':>14}")
    for key, r in throughput.items():
        mode, workers = key.split("_w")
        print(f"{mode:<12}{workers:>8}{r['episodes']:>10}{r['wall_s']:>9.1f}{r['episodes_per_min']:>14.1f}")
    best_play = throughput["play_w2"]["episodes_per_min"]
    best_demo = throughput["demos_w2"]["episodes_per_min"]
    estimate = 200 / best_play + 200 / best_demo
    print(f"\nestimated time for 200 play episodes + 50 demos per task at 2 workers: {estimate:.1f} min")

    append_row(args.out, "sim", steps=rows, throughput=throughput, estimate_min_200play_200demos=estimate)


if __name__ == "__main__":
    main()
