"""Benchmark policy training throughput: seconds per step for policy configs and torch thread counts,
side by side, on real play data.

    .venv/bin/python scripts/bench_policy_train.py --play outputs/sim_play/dataset.zarr \
        [--steps 20] [--threads 1 2] [--out outputs/bench/policy_train.jsonl]

The variants are the small preset as shipped (``configs/policy/train_small.yaml``: 64 points, 16 plan
frames) and the same preset with 128 points and 32 plan frames (its sizes before): the frame encoder embeds
every plan and remaining-flow frame point by point, so its cost grows with points × frames and dominates.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from im2flow2act.core.bench_log import append_row
from im2flow2act.core.config import load_config
from im2flow2act.policies.train import TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "128 points x 32 frames": [
        "windows.num_points=128",
        "windows.plan_frames=32",
        "policy.plan_frames=32",
    ],
    "64 points x 16 frames": [],
}


def seconds_per_step(play: str, overrides: list[str], threads: int, steps: int, warmup: int = 3) -> float:
    torch.set_num_threads(threads)
    config = load_config(
        TrainConfig, REPO / "configs/policy/train_small.yaml", [f"data=[{play}]", *overrides]
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out)
        for _ in range(warmup):
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--play", default=str(REPO / "outputs" / "sim_play" / "dataset.zarr"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "policy_train.jsonl")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    table = {
        name: {t: seconds_per_step(args.play, overrides, t, args.steps) for t in args.threads}
        for name, overrides in VARIANTS.items()
    }
    print(
        f"\nim2flow2act policy training throughput — small preset, batch 64, {args.steps} steps each, "
        f"{os.cpu_count()} CPU cores, load average at start {load:.1f}\n"
    )
    print(f"{'variant':<26}" + "".join(f"{f'{t} thread(s)':>16}" for t in args.threads))
    for name, row in table.items():
        print(f"{name:<26}" + "".join(f"{f'{row[t]:.2f} s/step':>16}" for t in args.threads))
    append_row(
        args.out,
        "policy_train",
        play=args.play,
        steps=args.steps,
        load_average=load,
        seconds_per_step={name: {str(t): v for t, v in row.items()} for name, row in table.items()},
    )


if __name__ == "__main__":
    main()
