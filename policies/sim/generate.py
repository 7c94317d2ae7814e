"""Generate sim datasets: sphere-agent demonstrations, robot play, scripted-expert rollouts.

One job = one (task, seed) episode. Jobs run in a pool of worker processes that each keep one
environment per task and end with their parent (even one killed with -9); every episode is written
atomically, so a rerun skips what exists and an interrupted run loses at most the episodes in flight.
A failing episode is reported in the summary and never stops the batch.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from im2flow2act.core.config import ConfigError, check_range, save_config
from im2flow2act.core.processes import ExecutorConfig, pool_map
from im2flow2act.policies.sim.agents import DEFAULT_PLAY_MIX, PlayStyle, check_play_mix, follow, play_actions
from im2flow2act.policies.sim.env import SimEnv
from im2flow2act.policies.sim.record import RecordConfig, record
from im2flow2act.policies.sim.scene import SceneConfig
from im2flow2act.policies.sim.tasks import LAYOUT_SPLITS, TASKS, TaskConfig, task_names
from im2flow2act.preprocessing.dataset import FlowDataset, FlowDatasetWriter
from im2flow2act.preprocessing.visualize import write_overlay

Mode = Literal["demos", "play", "expert"]
KIND = {"demos": "sim_demo", "play": "play", "expert": "sim_demo"}
EMBODIMENT = {"demos": "sphere", "play": "robot", "expert": "robot"}
PLAY_TASK = "play"
PLAY_SEED_BASE = 1_000_000
IMAGE_SIDE = (16, 4096)
"""Pixels a rendered side may have: below 16 a frame shows no object to track, and a side of 0 has no
OpenGL framebuffer at all."""


def check_image_size(size: Sequence[int], key: str = "image_size") -> None:
    """(width, height), each within ``IMAGE_SIDE``; the error names the key and the range."""
    if len(size) != 2 or not all(IMAGE_SIDE[0] <= int(side) <= IMAGE_SIDE[1] for side in size):
        raise ConfigError(
            f"{key}={list(size)}: (width, height) in pixels, each between {IMAGE_SIDE[0]} and {IMAGE_SIDE[1]}"
        )


@dataclass
class GenerateConfig:
    tasks: list[str] = field(default_factory=task_names)
    episodes: int = 10
    """Episodes per task."""
    seed: int = 0
    """Episode i of a task uses seed + i (the layout depends on the seed only; see ``job_seed``)."""
    workers: int = 1
    videos: bool = False
    """Also write an mp4 per episode with the ground-truth tracks drawn."""
    play_primitives: int = 1
    """Random primitives per play episode. 1 (the default) makes every episode start from the home pose,
    like a demonstration; the best measured policies train on such play (docs/results/policies.md)."""
    play_mix: list[str] = field(default_factory=lambda: list(DEFAULT_PLAY_MIX))
    """Which primitives play draws, uniformly from this list (``reach`` moves no object; a kind listed twice
    is drawn twice as often). Leaving out pushes or reaches changed the policy's successes only within
    run-to-run noise (docs/results/policies.md)."""
    play_place_on: float = 0.25
    """Probability that play sets a carried object down on another object's top (the plate), anywhere it
    stands, instead of anywhere on the table, where few land fully on the plate. Play that sometimes ends
    on the plate shows the policy more places like a pick & place demonstration's
    (docs/results/policies.md)."""
    play_hold: float = 0.3
    """Probability that a play episode's last grasp ends holding the object up (see ``PlayStyle.hold``).
    Without it every play grasp ends by letting go, while a pouring demonstration ends holding the mug
    (docs/results/policies.md)."""
    image_size: tuple[int, int] = (256, 256)
    layouts: str = "all"
    """Which part of every task's layout range the seeds draw from: all, inside or outside (a held-out
    split that no training layout is a near copy of; ``TaskConfig.layouts``). Episodes record it."""
    record: RecordConfig = field(default_factory=RecordConfig)

    def __post_init__(self) -> None:
        check_play_mix(self.play_mix)  # a bad mix fails when the config is read, before anything is written
        check_range("episodes", self.episodes, low=0)
        check_range("workers", self.workers, low=1)
        check_range("play_primitives", self.play_primitives, low=1)
        check_image_size(self.image_size)
        if self.layouts not in LAYOUT_SPLITS:
            raise ConfigError(f"layouts={self.layouts!r}: one of {', '.join(LAYOUT_SPLITS)}")
        for name in ("play_place_on", "play_hold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)}: a probability, between 0 and 1")

    def play_style(self) -> PlayStyle:
        return PlayStyle(tuple(self.play_mix), self.play_place_on, self.play_hold)


@dataclass
class JobResult:
    task: str
    seed: int
    name: str
    status: str
    """"written", "skipped" (already there) or "failed"."""
    success: bool = False
    steps: int = 0
    seconds: float = 0.0
    error: str = ""


def job_seed(mode: Mode, cfg: GenerateConfig, task_index: int, episode: int) -> int:
    """Demos and expert runs share seeds across tasks (pick & place and pouring then start from the same
    frame); play gives every task its own seed range, so the shared table scene is not played twice, and
    starts at ``PLAY_SEED_BASE``, so no play layout is a demonstration's (held-out evaluation) layout."""
    if mode == "play":
        return PLAY_SEED_BASE + cfg.seed + task_index * cfg.episodes + episode
    return cfg.seed + episode


def episode_name(task: str, seed: int) -> str:
    return f"{task}_{seed:06d}"


def agent_for(mode: Mode, cfg: GenerateConfig):
    if mode == "play":
        return lambda env, rng: play_actions(env, rng, cfg.play_primitives, cfg.play_style())
    if mode == "expert":
        return lambda env, rng: follow(env, env.task.expert(env.model, env.data, rng))
    return lambda env, rng: follow(env, env.task.human(env.model, env.data, rng))


_ENVS: dict[tuple, SimEnv] = {}
"""This process's environments, one per (task, embodiment, layout split, image size)."""


def _run_job(args: tuple[Mode, str, int, str, GenerateConfig]) -> JobResult:
    mode, task, seed, out, cfg = args
    name = episode_name(task, seed)
    writer = FlowDatasetWriter(Path(out) / "dataset.zarr", kind=KIND[mode])
    if writer.has(name):  # written by an earlier run: its recorded outcome still counts
        stored = FlowDataset(Path(out) / "dataset.zarr")[name]
        return JobResult(task, seed, name, "skipped", bool(stored.attrs.get("success", False)))
    started = time.perf_counter()
    try:
        key = (task, EMBODIMENT[mode], cfg.layouts, tuple(cfg.image_size))
        if key not in _ENVS:
            task_config = TaskConfig(layouts=cfg.layouts)
            _ENVS[key] = SimEnv(
                TASKS.build(task, task_config), EMBODIMENT[mode], SceneConfig(image_size=cfg.image_size)
            )
        rollout = record(_ENVS[key], seed, agent_for(mode, cfg), cfg.record)
        if mode == "play":  # play has no goal: the scene is recorded, the instruction is not
            rollout.episode.task = PLAY_TASK
        if mode == "demos":  # which of the task's demonstration modes this one took (multimodality)
            rollout.episode.attrs["human_mode"] = _ENVS[key].task.last_mode
        writer.write(name, rollout.episode)
        if cfg.videos:
            ep = rollout.episode
            write_overlay(Path(out) / "videos" / f"{name}.mp4", ep.frames, ep.tracks, ep.visibility, ep.fps)
        return JobResult(
            task, seed, name, "written", rollout.success, rollout.steps, time.perf_counter() - started
        )
    except Exception as err:  # one bad episode is reported, the batch goes on
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        return JobResult(task, seed, name, "failed", seconds=time.perf_counter() - started, error=detail)


def generate(
    mode: Mode,
    out_dir: str | Path,
    cfg: GenerateConfig,
    progress: bool = True,
    executor: ExecutorConfig | None = None,
) -> dict:
    """Run every (task, seed) job in ``cfg.workers`` processes (or Ray actors with a ``ray`` executor:
    then ``out_dir`` must be a path every node sees), write ``summary.json`` and return it."""
    for task in cfg.tasks:
        TASKS.entry(task)  # unknown task names fail before any work
    out_dir = Path(out_dir)
    FlowDatasetWriter(
        out_dir / "dataset.zarr", kind=KIND[mode], mode=mode
    )  # create (or check) the store once
    save_config(cfg, out_dir / f"{mode}_config.yaml")
    jobs = [
        (mode, t, job_seed(mode, cfg, k, i), str(out_dir), cfg)
        for k, t in enumerate(cfg.tasks)
        for i in range(cfg.episodes)
    ]
    started = time.perf_counter()
    done = pool_map(_run_job, jobs, cfg.workers, ordered=False, executor=executor)
    results = list(tqdm(done, total=len(jobs), desc=f"sim {mode}", unit="episode", disable=not progress))
    summary = summarise(mode, results, time.perf_counter() - started, cfg.workers)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summarise(mode: str, results: list[JobResult], wall: float, workers: int) -> dict:
    tasks: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: (r.task, r.seed)):
        row = tasks.setdefault(
            r.task,
            {
                "episodes": 0,
                "written": 0,
                "skipped": 0,
                "failed": 0,
                "successes": 0,
                "episode_seconds": 0.0,
                "steps": 0,
                "errors": [],
            },
        )
        row["episodes"] += 1
        row[r.status] += 1
        row["successes"] += int(r.success)
        row["episode_seconds"] += r.seconds
        row["steps"] += r.steps
        if r.error:
            row["errors"].append({"episode": r.name, "error": r.error})
    for row in tasks.values():
        done = row["written"] + row["skipped"]
        row["success_rate"] = row["successes"] / done if done else None
        row["episode_seconds"] = round(row["episode_seconds"], 2)
    return {"mode": mode, "workers": workers, "wall_seconds": round(wall, 2), "tasks": tasks}


def format_summary(summary: dict) -> str:
    lines = [f"{'task':<14}{'written':>8}{'skipped':>8}{'failed':>7}{'success':>9}{'s/episode':>11}"]
    for task, row in summary["tasks"].items():
        rate = "—" if row["success_rate"] is None else f"{row['success_rate']:.0%}"
        per = row["episode_seconds"] / row["written"] if row["written"] else 0.0
        lines.append(
            f"{task:<14}{row['written']:>8}{row['skipped']:>8}{row['failed']:>7}{rate:>9}{per:>11.2f}"
        )
        lines += [f"  failed {e['episode']}: {e['error']}" for e in row["errors"]]
    lines.append(f"wall time {summary['wall_seconds']:.1f} s with {summary['workers']} worker(s)")
    return "\n".join(lines)


def render_initial_scene(task: str, seed: int, embodiment: str = "robot", size=(512, 512)) -> np.ndarray:
    env = SimEnv(task, embodiment, SceneConfig(image_size=size))
    try:
        env.reset(seed)
        return env.render()
    finally:
        env.close()
