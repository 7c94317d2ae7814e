"""Closed-loop, demonstration-conditioned evaluation in the sim (the reference's §4.5).

For each held-out demonstration the robot starts from the demo's layout (its seed) and follows a plan —
the demo's object flow from a registered plan source (``policies.plans``: ``tracked``, ``ground_truth``,
``generated``) — while a registered online tracker follows the points (``policies.online_tracking``:
``oracle``, ``lk``, ``cotracker3-online``). The episode itself is ``policies.rollout``, its measures and
the summary ``policies.metrics``. This module holds the config and the loop over tasks and demos.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from im2flow2act.core.checkpoint import file_sha256
from im2flow2act.core.config import check_range, to_dict
from im2flow2act.core.processes import pool_map
from im2flow2act.policies.metrics import (
    EpisodeResult,
    final_plan_error,
    grasp_offset_cm,
    motion_fraction,
    summarise,
    write_summary,
)
from im2flow2act.policies.online_tracking import ONLINE_TRACKERS, build_online_tracker, check_online_tracker
from im2flow2act.policies.plans import (
    PLAN_SOURCES,
    GeneratedPlanConfig,
    PlanSource,
    TrackedPlanConfig,
    on_object,
    on_object_mask,
    plan_from_demo,
    plan_from_generator,
)
from im2flow2act.policies.rollout import LoopConfig, medoid_chunk, rollout
from im2flow2act.policies.sim.env import SimEnv
from im2flow2act.policies.sim.scene import SceneConfig
from im2flow2act.policies.sim.tasks import TASKS, TaskConfig, task_names
from im2flow2act.policies.train import load_policy
from im2flow2act.preprocessing.dataset import DatasetError, FlowDataset

__all__ = [
    "ONLINE_TRACKERS",
    "PLAN_SOURCES",
    "EpisodeResult",
    "EvalConfig",
    "build_online_tracker",
    "build_plan_source",
    "evaluate",
    "final_plan_error",
    "grasp_offset_cm",
    "medoid_chunk",
    "motion_fraction",
    "on_object",
    "on_object_mask",
    "plan_from_demo",
    "plan_from_generator",
]

_TRACKED, _GENERATED = TrackedPlanConfig(), GeneratedPlanConfig()


@dataclass
class EvalConfig:
    policy: str = "models/policy-full"
    demos: str = "outputs/sim_demos/dataset.zarr"
    tasks: list[str] = field(default_factory=task_names)
    """Tasks to evaluate; default every registered one (those without demonstrations are skipped)."""
    episodes: int = 20
    """Demonstrations per task (the last ones of the dataset: keep them out of im2flow training)."""
    plan_source: str = "tracked"
    """A registered plan source (``policies.plans.PLAN_SOURCES``): tracked = a tracker on the demo video
    (what a human video gives); ground_truth = the simulator's tracks; generated = im2flow from the
    rendered initial scene and the instruction (language-conditioned)."""
    plan_args: dict[str, Any] = field(default_factory=dict)
    """Options of the plan source's config. The fields below that share a name with it fill it first, so
    ``generator=...`` or ``num_flows=...`` keep working; ``plan_args`` wins over them."""
    generator: str = _GENERATED.generator
    """generated: the flow generator."""
    num_flows: int = _GENERATED.num_flows
    """generated: flows sampled per episode; the medoid (closest to the others) is executed."""
    moving_threshold_px: float = _GENERATED.moving_threshold_px
    """generated: points whose flow moves less than this (256-pixel frame) are dropped, as in the
    reference."""
    moving_fraction: float = _GENERATED.moving_fraction
    """generated: points that move less than this fraction of the plan's 90th-percentile motion are
    dropped too (the generator's smear on a drawer's cabinet or a cloth's still half)."""
    tracker: str = "oracle"
    """Online tracking during the rollout, a registered online tracker (``ONLINE_TRACKERS``): oracle
    (the simulator; an upper bound), lk, cotracker3-online."""
    tracker_args: dict[str, Any] = field(default_factory=dict)
    """Config of the online tracker, e.g. {checkpoint: models/cotracker3/scaled_online.pth}."""
    plan_tracker: str = _TRACKED.plan_tracker
    """tracked: the tracker run over the demo video (lk, cotracker3)."""
    plan_tracker_args: dict[str, Any] = field(default_factory=lambda: dict(_TRACKED.plan_tracker_args))
    """tracked: config of the plan tracker; LK's window is smaller than its default
    (docs/results/policies.md)."""
    plan_on_object: bool = _TRACKED.plan_on_object
    """tracked and generated: follow only the grid points on the object in the first frame's segmentation
    (what a SAM mask gives on a human video), not the whole box, whose table points pull the policy's object
    frame off the object (docs/results/policies.md)."""
    fill_lost: bool = _TRACKED.fill_lost
    """tracked: plan points the tracker lost move with their visible neighbours instead of standing where
    they were last seen. Not done for the online tracker's points: there the arm covers the object and the
    neighbours ride on the arm (docs/results/policies.md)."""
    action_horizon: int = 8
    guidance_scale: float | None = None
    """Classifier-free guidance on the flow (None: the policy's own setting; see FlowPolicyConfig)."""
    max_chunks: int = 20
    action_samples: int = 16
    """Chunks sampled per replanning step; the medoid (closest on average to the others) is executed.
    More than 1 trades inference time for precision (docs/results/policies.md)."""
    num_points: int = 64
    """Plan points given to the policy (drawn with replacement when the plan has fewer)."""
    videos: bool = True
    seed: int = 0
    workers: int = 1
    """Episodes run side by side in this many processes, each with its share of the CPU's threads (the
    sim, rendering and tracking are single-threaded); the episode log is written here as they finish."""

    def __post_init__(self) -> None:
        check_range("workers", self.workers, low=1)
        check_range("episodes", self.episodes, low=1)

    def loop(self) -> LoopConfig:
        return LoopConfig(self.action_horizon, self.max_chunks, self.action_samples, self.guidance_scale)


def plan_source_options(cfg: EvalConfig) -> dict[str, Any]:
    """The options of ``cfg.plan_source``'s config: the EvalConfig fields named like its fields, then
    ``plan_args``."""
    names = {f.name for f in dataclasses.fields(PLAN_SOURCES.entry(cfg.plan_source).config_cls)}
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(EvalConfig) if f.name in names}
    return {**shared, **cfg.plan_args}


def build_plan_source(cfg: EvalConfig) -> PlanSource:
    return PLAN_SOURCES.build(cfg.plan_source, plan_source_options(cfg))


_NOT_IN_KEY = ("tasks", "episodes", "videos", "policy", "generator", "demos", "workers")
"""EvalConfig fields that choose which episodes run, what is kept, or where a file lies — not what an
episode does (a row names its demonstration; the models count by their weights' content)."""


_ADDED_LATER = {
    "moving_fraction": 0.0,
    "dense_grid": 0,
    "smoothing": "none",
    "visibility_threshold": 0.0,
    "complete_rigid": False,
}
"""Settings added after episode logs were first written, with the value that reproduces the older
behaviour: left out of the key at that value, so the older logs stay valid. Those that are options of the
plan source alone are read from its resolved config, defaults included (a changed default changes what an
episode does)."""


def episode_settings(cfg: EvalConfig) -> dict[str, Any]:
    """Every setting that changes an episode, and the content of the model weights (a retrained policy at
    the same path is another one; the same one copied elsewhere is not)."""
    settings = to_dict(cfg)
    plan = to_dict(PLAN_SOURCES.entry(cfg.plan_source).config_cls(**plan_source_options(cfg)))
    settings |= {f"plan.{k}": plan[k] for k in _ADDED_LATER if k in plan and k not in settings}
    settings = {
        k: v
        for k, v in settings.items()
        if k not in _NOT_IN_KEY and _ADDED_LATER.get(k.removeprefix("plan."), object()) != v
    }
    models = {"policy": cfg.policy} | ({"generator": cfg.generator} if cfg.plan_source == "generated" else {})
    for name, source in models.items():
        weights = Path(source) / "model.safetensors"
        settings[name] = file_sha256(weights) if weights.is_file() else str(source)
    return settings


def episode_key(cfg: EvalConfig) -> str:
    """What makes two evaluations' episodes interchangeable: a hash of ``episode_settings``."""
    settings = episode_settings(cfg)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def episode_log_path(out_dir: Path, cfg: EvalConfig) -> Path:
    """Where an evaluation keeps its episode log in ``out_dir``: one file per plan source and tracker."""
    return Path(out_dir) / f"episodes_{cfg.plan_source}_{cfg.tracker}.jsonl"


class EpisodeLog:
    """``episodes_<plan source>_<tracker>.jsonl``: one row per finished episode, so an interrupted
    evaluation resumes where it stopped. Rows of a different evaluation are never mixed in or overwritten."""

    def __init__(self, out_dir: Path, cfg: EvalConfig) -> None:
        self.path = episode_log_path(out_dir, cfg)
        self.key = episode_key(cfg)
        self.done: dict[tuple[str, str], EpisodeResult] = {}
        if not self.path.is_file():
            return
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, result = row.pop("key"), EpisodeResult(**row)
            except (ValueError, TypeError, KeyError) as err:
                raise ValueError(f"{self.path}, line {number}: not an episode row ({err})") from err
            if key != self.key:
                raise ValueError(
                    f"{self.path} holds episodes of a different evaluation (another policy, plan or "
                    "setting); evaluate into another folder, or delete the file to start over"
                )
            self.done[(result.task, result.demo)] = result

    def take_from(self, other: Path) -> int:
        """Adopt the rows of another folder's episode log that were run with these same settings (another
        folder evaluated the same policy: its episodes need not run again); returns how many were new."""
        if not other.is_file():
            return 0
        taken = 0
        for line in other.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.pop("key", None) != self.key:
                continue
            result = EpisodeResult(**row)
            if (result.task, result.demo) not in self.done:
                self.add(result)
                taken += 1
        return taken

    def add(self, result: EpisodeResult) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"key": self.key, **dataclasses.asdict(result)}) + "\n")
        self.done[(result.task, result.demo)] = result


_WORKER: dict[str, Any] = {}
"""An evaluating process's models, plan source, tracker and one environment per task, built once."""


def _prepare(cfg: EvalConfig, threads: int | None = None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _WORKER.clear()
    _WORKER.update(
        cfg=cfg,
        policy=load_policy(cfg.policy),
        plans=build_plan_source(cfg),
        tracker=build_online_tracker(cfg.tracker, cfg.tracker_args),
        demos=FlowDataset(cfg.demos),
        envs={},
    )


def _close_envs() -> None:
    for env in _WORKER.get("envs", {}).values():
        env.close()
    _WORKER.clear()


def _run_episode(job: tuple[str, str, str | None]) -> EpisodeResult:
    """One held-out demonstration's rollout in the prepared process."""
    task, name, video = job
    w, cfg = _WORKER, _WORKER["cfg"]
    view = w["demos"][name]
    layouts = str(view.attrs.get("layouts", "all"))  # the demonstration's layout split: same seed, same scene
    env = w["envs"].get((task, layouts))
    if env is None:
        built = TASKS.build(task, TaskConfig(layouts=layouts))
        env = w["envs"][task, layouts] = SimEnv(built, "robot", SceneConfig(image_size=view.frame_size))
    w["tracker"].bind(env)
    path = None if video is None else Path(video)
    loop = cfg.loop()
    return rollout(w["policy"], env, view, w["plans"], w["tracker"], loop, cfg.num_points, cfg.seed, path)


def evaluate(cfg: EvalConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Every task's held-out demonstrations, one rollout each; writes and returns the summary. Episodes
    already in the folder's episode log (same settings) are not run again."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in cfg.tasks:
        TASKS.entry(task)  # unknown task names fail before any work
    PLAN_SOURCES.entry(cfg.plan_source)
    check_online_tracker(cfg.tracker)
    log = EpisodeLog(out_dir, cfg)
    _prepare(cfg)  # here too: a wrong model folder fails before any work, and one worker runs here
    demos = _WORKER["demos"]
    if demos.kind not in ("sim_demo", "play"):
        raise DatasetError(cfg.demos, f"is a {demos.kind!r} dataset; evaluation needs sim_demo or play")
    chosen = {t: [v for v in demos if v.attrs.get("task_name") == t][-cfg.episodes :] for t in cfg.tasks}
    videos = out_dir / "videos"
    todo = [
        (task, v.name, str(videos / f"{task}_{v.name}_{cfg.tracker}.mp4") if cfg.videos else None)
        for task, views in chosen.items()
        for v in views
        if (task, v.name) not in log.done
    ]
    workers = min(cfg.workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    label = f"eval {','.join(cfg.tasks)} ({cfg.plan_source}, {cfg.tracker})"
    try:
        finished = pool_map(_run_episode, todo, workers, _prepare, (cfg, threads), ordered=False)
        for result in tqdm(finished, total=len(todo), desc=label, unit="episode", disable=not progress):
            log.add(result)
    finally:
        _close_envs()
    results = [log.done[(task, v.name)] for task, views in chosen.items() for v in views]  # demos' order
    summary = summarise(results, list(cfg.tasks), cfg.plan_source, cfg.tracker)
    write_summary(summary, out_dir)
    return summary
