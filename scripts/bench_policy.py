"""Benchmark a trained policy: success per task with oracle and LK online tracking side by side, the
training time (from the run's metrics.csv), and the action latency (ms per chunk, 16 DDIM steps).

    .venv/bin/python scripts/bench_policy.py --run outputs/policy --demos outputs/sim_demos/dataset.zarr \
        [--episodes 20] [--action-samples 16] [--tasks pick_place open_drawer] [--trackers oracle lk] \
        [--out outputs/bench/policy.jsonl]

Tasks default to every registered task; trackers and plan sources are the registered names.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch

from im2flow2act.core.bench_log import append_row
from im2flow2act.policies.data import PlayWindows
from im2flow2act.policies.evaluate import ONLINE_TRACKERS, PLAN_SOURCES, EvalConfig, evaluate
from im2flow2act.policies.sim.tasks import task_names
from im2flow2act.policies.train import EXPORT, load_policy

REPO = Path(__file__).resolve().parents[1]


def action_latency_ms(
    policy_path: Path, play: str | None = None, repeats: int = 20, samples: int = 1
) -> float:
    """Milliseconds per executed chunk: ``samples`` chunks denoised in one batch (the medoid is kept)."""
    policy = load_policy(policy_path)
    c = policy.config
    if play:
        sample = PlayWindows(play)[0]
        batch = {k: v[None] for k, v in sample.items()}
    else:
        n = EvalConfig().num_points
        batch = {
            "plan": torch.rand(1, c.plan_frames, n, 3),
            "current": torch.rand(1, n, 3),
            "points_3d": torch.rand(1, n, 3),
            "end_3d": torch.rand(1, n, 3),
            "proprio": torch.rand(1, c.obs_horizon, c.proprio_dim),
        }
    batch = {k: v.expand(samples, *v.shape[1:]) for k, v in batch.items()}
    policy.predict_action(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        policy.predict_action(batch)
    return 1000 * (time.perf_counter() - start) / repeats


def training_time(run: Path) -> tuple[int, float]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return int(rows[-1]["step"]), float(rows[-1]["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "outputs" / "policy")
    parser.add_argument("--demos", default=str(REPO / "outputs" / "sim_demos" / "dataset.zarr"))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--plan-source", default="tracked", choices=PLAN_SOURCES.names())
    parser.add_argument("--generator", default=EvalConfig().generator, help="generated plans: the model")
    parser.add_argument("--tasks", nargs="+", default=task_names(), choices=task_names())
    parser.add_argument("--trackers", nargs="+", default=["oracle", "lk"], choices=ONLINE_TRACKERS.names())
    parser.add_argument(
        "--action-samples", type=int, default=16, help="chunks sampled per step; the medoid is executed"
    )
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "policy.jsonl")
    args = parser.parse_args()
    policy_path = args.run / EXPORT
    tables = {}
    for tracker in args.trackers:
        cfg = EvalConfig(
            policy=str(policy_path),
            demos=args.demos,
            tasks=args.tasks,
            episodes=args.episodes,
            action_samples=args.action_samples,
            tracker=tracker,
            plan_source=args.plan_source,
            generator=args.generator,
            videos=False,
        )
        tables[tracker] = evaluate(cfg, args.run / "bench_eval", progress=True)["tasks"]
    steps, seconds = training_time(args.run)
    latency = action_latency_ms(policy_path, None, samples=args.action_samples)
    print(
        f"\nim2flow2act policy benchmark — {args.run}, {args.episodes} held-out demos per task, "
        f"{args.plan_source} plan, medoid of {args.action_samples} chunk(s), {os.cpu_count()} CPU cores\n"
    )
    print(f"{'task':<14}" + "".join(f"{t:>18}" for t in args.trackers))
    for task in args.tasks:
        cells = [tables[t].get(task, {}).get("success_rate") for t in args.trackers]
        print(f"{task:<14}" + "".join(f"{'—' if v is None else f'{v:.0%}':>18}" for v in cells))
    print(
        f"\ntraining: {steps} steps in {seconds / 60:.1f} min; "
        f"action latency {latency:.0f} ms per chunk (16 DDIM steps, {args.action_samples} sample(s))"
    )
    append_row(
        args.out,
        "policy",
        run=str(args.run),
        episodes=args.episodes,
        plan_source=args.plan_source,
        action_samples=args.action_samples,
        success=tables,
        train_steps=steps,
        train_seconds=seconds,
        latency_ms=latency,
    )


if __name__ == "__main__":
    main()
