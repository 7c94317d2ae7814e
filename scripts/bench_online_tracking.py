"""Benchmark online trackers in the loop's conditions: ``lk`` next to ``rigid-lk`` on recorded sim episodes.

    .venv/bin/python scripts/bench_online_tracking.py [--tasks pick_place pour ...] [--episodes 5]
        [--agent expert|play] [--size 128] [--dataset STORE] [--trackers lk rigid-lk]
        [--out outputs/bench/online_tracking.jsonl]

Episodes are recorded here with the scripted expert (or random play) of every task, at ``--size`` pixels,
with depth and the simulator's ground-truth tracks; ``--dataset`` reads stored ones instead (they must
hold depth: ``record.store_depth``). Each tracker is replayed on the stored frames as it would run in a
rollout: a ``CameraObservation`` per frame (RGB, the stored depth, the camera rebuilt from the episode's
attrs) and the first frame's ground-truth points as queries. The truth is the oracle's answer, so the
oracle's errors are 0 by definition and it is not run.

Per tracker and task: the median distance (pixels of the episode's frames) of tracked points to the truth
over all frames and at the last frame, and the share within 4 px, over the points the truth says are
visible; the median at the last frame over all points (hidden ones too: the policy reads them);
visibility accuracy against the truth's visibility; and ms per ``step``. Prints a table and appends one
JSON row.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NEAR_PX = 4.0


def record_episodes(task: str, agent: str, episodes: int, size: int) -> list:
    """Record ``episodes`` rollouts of ``task``'s expert (seeds 0…) or of play (its play seeds)."""
    from im2flow2act.policies.sim.env import SimEnv
    from im2flow2act.policies.sim.generate import GenerateConfig, agent_for, job_seed
    from im2flow2act.policies.sim.record import RecordConfig, record
    from im2flow2act.policies.sim.scene import SceneConfig
    from im2flow2act.policies.sim.tasks import task_names

    cfg = GenerateConfig()
    out = []
    with SimEnv(task, "robot", SceneConfig(image_size=(size, size))) as env:
        for k in range(episodes):
            seed = job_seed(agent, cfg, task_names().index(task), k)
            out.append(record(env, seed, agent_for(agent, cfg), RecordConfig(num_points=256)).episode)
    return out


def stored_episodes(store: Path, task: str, episodes: int) -> list:
    from im2flow2act.preprocessing.dataset import FlowDataset

    views = [v for v in FlowDataset(store) if v.attrs.get("task_name") == task]
    return [v.load() for v in views[:episodes]]


def replay(name: str, options: dict, episode) -> dict:
    """Run one tracker over one episode; per-frame errors against the truth."""
    from im2flow2act.policies.online_tracking import CameraObservation, build_online_tracker
    from im2flow2act.policies.sim.scene import camera_from_attrs

    frames, depth = episode.frames, episode.arrays["depth"]
    w, h = frames.shape[2], frames.shape[1]
    camera = camera_from_attrs(episode.attrs, (w, h))
    truth, truth_vis = episode.tracks, episode.visibility
    tracker = build_online_tracker(name, options)
    tracker.reset(CameraObservation(frames[0], depth[0].astype(np.float32), camera), truth[0])
    tracks, vis, seconds = [truth[0]], [truth_vis[0]], 0.0
    for t in range(1, len(frames)):
        obs = CameraObservation(frames[t], depth[t].astype(np.float32), camera)
        start = time.perf_counter()
        xy, v = tracker.step(obs)
        seconds += time.perf_counter() - start
        tracks.append(xy)
        vis.append(v)
    dist = np.linalg.norm((np.stack(tracks) - truth) * [w, h], axis=-1)  # (T, N) pixels
    return {
        "dist": dist[1:][truth_vis[1:]],
        "dist_last": dist[-1][truth_vis[-1]],
        "dist_last_all": dist[-1],
        "vis_correct": (np.stack(vis)[1:] == truth_vis[1:]).ravel(),
        "ms_per_frame": 1e3 * seconds / max(len(frames) - 1, 1),
    }


def summarise(runs: list[dict]) -> dict:
    dist = np.concatenate([r["dist"] for r in runs])
    last = np.concatenate([r["dist_last"] for r in runs])
    last_all = np.concatenate([r["dist_last_all"] for r in runs])
    return {
        "median_px": float(np.median(dist)) if dist.size else float("nan"),
        "median_px_last": float(np.median(last)) if last.size else float("nan"),
        "median_px_last_all": float(np.median(last_all)),
        "within_4px": float((dist < NEAR_PX).mean()) if dist.size else float("nan"),
        "vis_accuracy": float(np.concatenate([r["vis_correct"] for r in runs]).mean()),
        "ms_per_frame": float(np.mean([r["ms_per_frame"] for r in runs])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every registered task")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--agent", choices=["expert", "play"], default="expert")
    parser.add_argument("--size", type=int, default=128, help="image side when recording here")
    parser.add_argument("--dataset", type=Path, default=None, help="read stored episodes (with depth)")
    parser.add_argument("--trackers", nargs="+", default=["lk", "rigid-lk"])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "online_tracking.jsonl")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    from im2flow2act.core.bench_log import append_row
    from im2flow2act.policies.sim.tasks import task_names

    tasks = args.tasks or task_names()
    load = os.getloadavg()[0]
    results: dict[str, dict[str, dict]] = {}
    size = ""
    for task in tasks:
        verb = "reading" if args.dataset else "recording"
        print(f"{task}: {verb} {args.episodes} episodes ...", flush=True)
        if args.dataset:
            episodes = stored_episodes(args.dataset, task, args.episodes)
        else:
            episodes = record_episodes(task, args.agent, args.episodes, args.size)
        if not episodes:
            raise SystemExit(f"no {task} episodes in {args.dataset}")
        size = f"{episodes[0].frames.shape[2]}x{episodes[0].frames.shape[1]}"
        results[task] = {name: summarise([replay(name, {}, ep) for ep in episodes]) for name in args.trackers}

    source = args.dataset.name if args.dataset else f"{args.agent} rollouts recorded here"
    print(
        f"\nOnline tracking against the simulator's truth — {source}, {args.episodes} episodes per task, "
        f"{size} px, {os.cpu_count()} cores, load average at start {load:.1f}\n"
    )
    columns = [
        ("median px", "median_px", "{:.1f}"),
        ("median px, last", "median_px_last", "{:.1f}"),
        ("last, all pts", "median_px_last_all", "{:.1f}"),
        (f"< {NEAR_PX:g} px", "within_4px", "{:.0%}"),
        ("vis. acc.", "vis_accuracy", "{:.0%}"),
        ("ms/frame", "ms_per_frame", "{:.2f}"),
    ]
    print(f"| {'task':<12} | {'tracker':<9} | " + " | ".join(f"{c[0]:>15}" for c in columns) + " |")
    print(f"|{'-' * 14}|{'-' * 11}|" + "|".join("-" * 17 for _ in columns) + "|")
    for task, per_tracker in results.items():
        for name, s in per_tracker.items():
            cells = " | ".join(f"{fmt.format(s[key]):>15}" for _, key, fmt in columns)
            print(f"| {task:<12} | {name:<9} | {cells} |")
    append_row(
        args.out,
        "online_tracking",
        source=source,
        episodes_per_task=args.episodes,
        size=size,
        load_average=load,
        **{f"{t}_{n}_{k}": v for t, r in results.items() for n, s in r.items() for k, v in s.items()},
    )


if __name__ == "__main__":
    main()
