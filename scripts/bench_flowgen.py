"""Benchmark the flow generator: held-out metrics of the small preset beside the regression, nearest-
neighbour and zero-motion baselines, sampling latency per flow on this CPU, and training time.

Trains what is missing (the diffusion run and the same network with objective=regression), then evaluates:

    .venv/bin/python scripts/bench_flowgen.py --demos outputs/sim_demos/dataset.zarr \
        [--run outputs/im2flow] [--regression-run outputs/im2flow_regression] [--steps 2000]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import torch

from im2flow2act.core.bench_log import append_row
from im2flow2act.im2flow.evaluate import FlowEvalConfig, evaluate, markdown_table
from im2flow2act.im2flow.generator import load_generator
from im2flow2act.im2flow.train import EXPORT, FlowTrainConfig, FlowTrainer

REPO = Path(__file__).resolve().parents[1]


def train_if_missing(run: Path, demos: str, steps: int, objective: str) -> None:
    if (run / EXPORT / "model.safetensors").is_file():
        return
    cfg = FlowTrainConfig(data=[demos], max_steps=steps)
    cfg.generator.objective = objective
    FlowTrainer(cfg, run).fit()


def training_time(run: Path) -> tuple[int, float]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return int(rows[-1]["step"]), float(rows[-1]["seconds"])


def sampling_latency(run: Path, repeats: int = 3) -> float:
    """Seconds for one flow (DDIM steps and guidance as configured), batch of one."""
    generator = load_generator(run / EXPORT)
    g = generator.config.flow.grid_size
    image = torch.randint(0, 255, (1, 256, 256, 3), dtype=torch.uint8)
    queries = torch.rand(1, g * g, 3)
    generator.generate(image, queries, ["open the drawer"])  # warm-up
    start = time.perf_counter()
    for seed in range(repeats):
        generator.generate(image, queries, ["open the drawer"], seed=seed)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", default=str(REPO / "outputs" / "sim_demos" / "dataset.zarr"))
    parser.add_argument("--run", type=Path, default=REPO / "outputs" / "im2flow")
    parser.add_argument("--regression-run", type=Path, default=REPO / "outputs" / "im2flow_regression")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "flowgen.jsonl")
    args = parser.parse_args()
    train_if_missing(args.run, args.demos, args.steps, "diffusion")
    train_if_missing(args.regression_run, args.demos, args.steps, "regression")
    cfg = FlowEvalConfig(run=str(args.run), regression_run=str(args.regression_run), num_samples=args.samples)
    summary = evaluate(cfg, args.run / "bench_eval")
    steps, seconds = training_time(args.run)
    reg_steps, reg_seconds = training_time(args.regression_run)
    latency = sampling_latency(args.run)
    print(f"\nim2flow2act flow-generation benchmark — {args.run}, {os.cpu_count()} CPU cores\n")
    print(markdown_table(summary))
    print(
        f"training: small preset {steps} steps in {seconds / 60:.1f} min; regression {reg_steps} steps in "
        f"{reg_seconds / 60:.1f} min"
    )
    print(f"sampling latency: {latency:.2f} s per flow (batch of one)")
    methods = {
        name: {
            "ade": m["overall"]["ade"],
            "fde": m["overall"]["fde"],
            "min_ade": m["overall"]["min_ade"],
            "visibility_acc": m["overall"]["visibility_acc"],
            "instruction_following": m["instruction_following"],
        }
        for name, m in summary["methods"].items()
    }
    append_row(
        args.out,
        "flowgen",
        run=str(args.run),
        held_out=summary["held_out_clips"],
        num_samples=args.samples,
        methods=methods,
        train_steps=steps,
        train_minutes=round(seconds / 60, 1),
        latency_s=round(latency, 3),
        latency_note="per flow, batch 1",
        seed=int(np.int64(0)),
    )


if __name__ == "__main__":
    main()
