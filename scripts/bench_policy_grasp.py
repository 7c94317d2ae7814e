"""Benchmark how precisely a trained policy reaches a grasp, open loop, on recorded play.

    .venv/bin/python scripts/bench_policy_grasp.py --policy outputs/policy/policy \
        --play outputs/sim_play/dataset.zarr [--lead 12] [--samples 8] [--tasks pick_place open_drawer] \
        [--out outputs/bench/policy_grasp.jsonl]

A closed-loop success rate of 0/20 does not say whether the policy cannot find the object or cannot
choose what to do with it. This isolates the first: for every play episode, take the window that starts
``lead`` steps before the gripper first closes, sample chunks from the policy with the episode's own plan,
and measure how far the chunk's end effector is, at the step the recording closed, from where it closed.
Baseline: holding still at the window's start. Run it on the training play and on held-out play.
``--tasks`` picks the play scenes (default every registered task).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from im2flow2act.core.bench_log import append_row
from im2flow2act.policies.data import PlayWindows, WindowConfig
from im2flow2act.policies.sim.tasks import task_names
from im2flow2act.policies.train import load_policy

REPO = Path(__file__).resolve().parents[1]
CLOSED_BELOW = 0.05
"""Gripper commands below this (metres of opening) count as closed; play commands 0 or 0.1."""
INPUTS = ("plan", "current", "points_3d", "end_3d", "proprio")
POSITION, GRIPPER = slice(0, 3), 9
"""Where the end-effector position and the gripper width sit in an action vector (``Action.as_vector``)."""


def scene_of(episode_name: str) -> str:
    """Play episodes are named <task>_<seed>: the task names the scene played in."""
    return episode_name.rsplit("_", 1)[0]


def grasp_errors(
    policy, windows: PlayWindows, lead: int, samples: int, seed: int, scenes: list[str] | None = None
) -> dict[str, dict]:
    """Per scene (those in ``scenes``; None: all), distances (m) to the first grasp position: the policy's
    chunk at the recorded close step, the chunk where it closes the gripper itself (chunks that close), and
    holding still."""
    rows: dict[str, dict[str, list[float]]] = {}
    window_of = {key: i for i, key in enumerate(windows.index)}  # (episode, start step) → sample index
    for e, ep in enumerate(windows.episodes):
        if scenes is not None and scene_of(ep.name) not in scenes:
            continue
        closed = ep.action[:, GRIPPER] < CLOSED_BELOW
        first = np.flatnonzero(closed[1:] & ~closed[:-1])
        if len(first) == 0:
            continue
        close = int(first[0]) + 1
        start = max(0, close - lead)
        sample = windows[window_of[e, start]]
        batch = {k: sample[k][None].expand(samples, *sample[k].shape) for k in INPUTS}
        chunks = policy.predict_action(batch, torch.Generator().manual_seed(seed + e)).numpy()
        step = min(close - start, chunks.shape[1] - 1)
        target = ep.action[close, POSITION]
        row = rows.setdefault(scene_of(ep.name), {"policy": [], "where_closed": [], "hold_still": []})
        row["policy"] += np.linalg.norm(chunks[:, step, POSITION] - target, axis=-1).tolist()
        for chunk in chunks:  # timing aside: where does the sampled chunk itself close the gripper?
            shut = np.flatnonzero(chunk[:, GRIPPER] < CLOSED_BELOW)
            if len(shut):
                row["where_closed"].append(float(np.linalg.norm(chunk[shut[0], POSITION] - target)))
        row["hold_still"].append(float(np.linalg.norm(ep.proprio[start, POSITION] - target)))
    return rows


def summarise(distances: list[float]) -> dict[str, float]:
    d = 100.0 * np.asarray(distances)
    return {"median_cm": float(np.median(d)), "mean_cm": float(d.mean()), "within_2cm": float(np.mean(d < 2))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, default=REPO / "outputs" / "policy" / "policy")
    parser.add_argument("--play", default=str(REPO / "outputs" / "sim_play" / "dataset.zarr"))
    parser.add_argument("--lead", type=int, default=12, help="steps before the first close")
    parser.add_argument("--samples", type=int, default=8, help="chunks sampled per episode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=task_names(), choices=task_names(), help="play scenes")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "policy_grasp.jsonl")
    args = parser.parse_args()
    policy = load_policy(args.policy)
    c = policy.config
    windows = PlayWindows(
        args.play,
        WindowConfig(obs_horizon=c.obs_horizon, pred_horizon=c.pred_horizon, plan_frames=c.plan_frames),
    )
    rows = grasp_errors(policy, windows, args.lead, args.samples, args.seed, args.tasks)
    table = {scene: {k: summarise(v) for k, v in row.items()} for scene, row in sorted(rows.items())}
    print(
        f"\nGrasp precision, open loop, {args.lead} steps before the first close, {args.samples} chunks per "
        f"episode\npolicy {args.policy}\nplay {args.play}\n"
    )
    print(
        f"{'scene':<13}{'episodes':>9}{'policy median':>15}{'within 2 cm':>13}"
        f"{'where it closes':>17}{'within 2 cm':>13}{'hold still':>12}"
    )
    for scene, row in table.items():
        p, w, h = row["policy"], row["where_closed"], row["hold_still"]
        print(
            f"{scene:<13}{len(rows[scene]['hold_still']):>9}"
            f"{p['median_cm']:>12.1f} cm{p['within_2cm']:>13.0%}"
            f"{w['median_cm']:>14.1f} cm{w['within_2cm']:>13.0%}{h['median_cm']:>9.1f} cm"
        )
    append_row(
        args.out,
        "policy_grasp",
        policy=str(args.policy),
        play=args.play,
        lead=args.lead,
        samples=args.samples,
        scenes=table,
    )


if __name__ == "__main__":
    main()
