"""``im2flow2act pipeline run``: the whole chain, stage by stage, resumable, into one report.

Stages (each writes into its own folder under ``out`` with its resolved config and a ``stage.json`` marker;
a rerun skips finished stages):
  demos → videos → ingest → im2flow → play → policy → evaluate → report
- demos: sphere-agent demonstrations in the sim (the stand-in for human videos);
- videos: each demonstration's frames as a plain mp4 + a manifest (video, task, object prompt, box) —
  from here on only what a human video would give is used;
- ingest: the real preprocessing (``ingest`` with the manifest's box, LK tracking) → a flow dataset;
- im2flow: the flow generator trained on it (held-out: the demos the evaluation uses), and its metrics;
- play, policy: task-agnostic robot play and the flow-conditioned policy trained on it;
- evaluate: the policy with demonstration flow (upper bound) and with generated flow (language-conditioned),
  for each online tracker, plus the scripted expert;
- report: ``report.md`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from im2flow2act.core.config import save_config
from im2flow2act.core.processes import pool_map
from im2flow2act.im2flow.evaluate import FlowEvalConfig
from im2flow2act.im2flow.evaluate import evaluate as evaluate_flow
from im2flow2act.im2flow.train import EXPORT, FlowTrainConfig, FlowTrainer
from im2flow2act.policies.evaluate import EvalConfig
from im2flow2act.policies.evaluate import evaluate as evaluate_policy
from im2flow2act.policies.sim.generate import GenerateConfig, generate
from im2flow2act.policies.sim.tasks import task_names
from im2flow2act.policies.train import TrainConfig, Trainer
from im2flow2act.preprocessing.dataset import FlowDataset
from im2flow2act.preprocessing.ingest import IngestConfig, ingest_batch, write_summary
from im2flow2act.preprocessing.sources import VideoItem
from im2flow2act.preprocessing.video import write_video

STAGES = ("demos", "videos", "ingest", "im2flow", "play", "policy", "evaluate", "report")


@dataclass
class PipelineConfig:
    name: str = "quick"
    tasks: list[str] = field(default_factory=task_names)
    """Default: every registered task (``policies.sim.tasks``)."""
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    """(width, height) of every rendered frame (demos, play, evaluation)."""
    workers: int = 2
    """Processes for the simulator, ingest and evaluation stages (evaluation: columns side by side)."""
    demos: int = 12
    """Sphere demonstrations per task; the last ``eval_episodes`` are held out for evaluation."""
    play: int = 10
    """Play episodes per task scene."""
    eval_episodes: int = 2
    expert_episodes: int = 2
    trackers: list[str] = field(default_factory=lambda: ["oracle", "lk"])
    """Online trackers evaluated (oracle, lk, rigid-lk, cotracker3-online)."""
    tracker_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per tracker name, its config, e.g. {cotracker3-online: {checkpoint: models/cotracker3}}."""
    ingest: IngestConfig = field(default_factory=lambda: IngestConfig(grid_size=16, overlay=False))
    flow: FlowTrainConfig = field(default_factory=lambda: FlowTrainConfig(max_steps=300, batch_size=16))
    policy: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=400, batch_size=32))
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(max_chunks=16, num_flows=4))


def _pin_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _evaluate_in_worker(job: tuple[EvalConfig, str]) -> dict:
    """One column in a worker process; its episodes land in the folder's episode log as they finish."""
    cfg, out = job
    label = f"{cfg.plan_source}/{cfg.tracker}"
    summary = evaluate_policy(cfg, out)
    rates = ", ".join(f"{t} {row['success_rate']:.0%}" for t, row in summary["tasks"].items())
    print(f"[pipeline] evaluate {label}: {rates}", flush=True)
    return summary


class Pipeline:
    def __init__(self, config: PipelineConfig, out_dir: str | Path, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(config, self.out / "pipeline_config.yaml")

    def folder(self, stage: str) -> Path:
        return self.out / f"{STAGES.index(stage) + 1}_{stage}"

    def done(self, stage: str) -> dict | None:
        marker = self.folder(stage) / "stage.json"
        return json.loads(marker.read_text()) if marker.is_file() else None

    def run(self, until: str | None = None) -> dict[str, dict]:
        """Run every stage not yet finished (up to ``until``); returns each stage's record."""
        records = {}
        for stage in STAGES:
            record = self.done(stage)
            if record is None:
                folder = self.folder(stage)
                folder.mkdir(parents=True, exist_ok=True)
                print(f"[pipeline] {stage} → {folder}")
                started = time.perf_counter()
                figures = getattr(self, f"stage_{stage}")(folder) or {}
                record = {"stage": stage, "seconds": round(time.perf_counter() - started, 1), **figures}
                (folder / "stage.json").write_text(json.dumps(record, indent=2))
            else:
                print(f"[pipeline] {stage}: done ({record['seconds']} s), skipped")
            records[stage] = record
            if stage == until:
                break
        return records

    # ----- stages -----------------------------------------------------------------------------------
    def _sim(self, mode: str, folder: Path, episodes: int) -> dict:
        c = self.config
        cfg = GenerateConfig(
            tasks=list(c.tasks), episodes=episodes, workers=c.workers, image_size=tuple(c.image_size)
        )
        summary = generate(mode, folder, cfg, progress=self.progress)
        return {t: row["success_rate"] for t, row in summary["tasks"].items()}

    def stage_demos(self, folder: Path) -> dict:
        return {"success_rate": self._sim("demos", folder, self.config.demos)}

    def stage_videos(self, folder: Path) -> dict:
        """Each demo as a plain mp4 (no drawn tracks) and a manifest row: all a human video would give."""
        demos = FlowDataset(self.folder("demos") / "dataset.zarr")
        rows = []
        for view in demos:
            path = folder / f"{view.name}.mp4"
            if not path.is_file():
                write_video(path, np.asarray(view.frames[...]), fps=float(view.attrs.get("fps", 10.0)))
            w, h = view.frame_size
            x0, y0, x1, y1 = view.attrs["bbox"]
            box = [round(x0 * w, 2), round(y0 * h, 2), round(x1 * w, 2), round(y1 * h, 2)]
            prompt = view.attrs.get("object_prompt", "")
            rows.append({"video": path.name, "task": view.task, "object_prompt": prompt, "box": box})
        manifest = folder / "manifest.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"videos": len(rows)}

    def stage_ingest(self, folder: Path) -> dict:
        c = self.config
        size = (int(c.image_size[0]), int(c.image_size[1]))
        cfg = replace(c.ingest, frame_size=size, grid_size=c.flow.generator.flow.grid_size)
        rows = [
            json.loads(line) for line in (self.folder("videos") / "manifest.jsonl").read_text().splitlines()
        ]
        items = [
            VideoItem(
                video=str(self.folder("videos") / r["video"]),
                task=r["task"],
                object_prompt=r["object_prompt"],
                box=tuple(r["box"]),
                name=Path(r["video"]).stem,
            )
            for r in rows
        ]
        started = time.perf_counter()
        results = ingest_batch(items, cfg, folder, workers=c.workers, progress=self.progress)
        write_summary(folder, results, [], time.perf_counter() - started)
        failed = [r.name for r in results if r.status == "failed"]
        moving = [r.moving_fraction for r in results if r.status != "failed"]
        return {
            "written": len(results) - len(failed),
            "failed": failed,
            "moving_fraction": float(np.mean(moving)),
        }

    def stage_im2flow(self, folder: Path) -> dict:
        c = self.config
        data = [str(self.folder("ingest") / "dataset.zarr")]
        cfg = replace(c.flow, data=data, held_out_per_task=c.eval_episodes)
        trainer = FlowTrainer(cfg, folder, progress=self.progress)
        last = trainer.fit()
        flow_eval = FlowEvalConfig(run=str(folder), held_out_per_task=c.eval_episodes)
        summary = evaluate_flow(flow_eval, folder / "eval", progress=self.progress)
        return {"final_loss": last.get("loss"), "metrics": summary["methods"]}

    def stage_play(self, folder: Path) -> dict:
        self._sim("play", folder, self.config.play)
        return {}

    def stage_policy(self, folder: Path) -> dict:
        cfg = replace(self.config.policy, data=[str(self.folder("play") / "dataset.zarr")])
        trainer = Trainer(cfg, folder)
        last = trainer.fit(progress=self.progress)
        return {"final_loss": last.get("loss")}

    def evaluation_configs(self) -> dict[str, EvalConfig]:
        """Per column ``<plan>/<tracker>``, its evaluation: the language-conditioned system first, the
        oracle (the upper bound) after the real tracker."""
        c = self.config
        return {
            f"{plan}/{tracker}": replace(
                c.evaluation,
                policy=str(self.folder("policy") / "policy"),  # the exported model folder
                demos=str(self.folder("demos") / "dataset.zarr"),
                generator=str(self.folder("im2flow") / EXPORT),
                tasks=list(c.tasks),
                episodes=c.eval_episodes,
                plan_source=plan,
                tracker=tracker,
                tracker_args=c.tracker_args.get(tracker, {}),
            )
            for plan in ("generated", "tracked")
            for tracker in sorted(c.trackers, key=lambda t: t == "oracle")
        }

    def stage_evaluate(self, folder: Path) -> dict:
        """Every column, ``workers`` at a time in their own processes (each with its share of the CPU's
        threads: simulation, rendering and tracking are single-threaded, so two evaluations side by side
        get through more episodes than one with every thread)."""
        c = self.config
        jobs = [(cfg, str(folder / cfg.plan_source)) for cfg in self.evaluation_configs().values()]
        workers = max(1, min(c.workers, len(jobs)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        if workers == 1:
            summaries = [evaluate_policy(cfg, out, progress=self.progress) for cfg, out in jobs]
        else:
            summaries = list(pool_map(_evaluate_in_worker, jobs, workers, _pin_threads, (threads,)))
        tables: dict[str, dict] = {
            f"{s['plan_source']}/{s['tracker']}": {t: row["success_rate"] for t, row in s["tasks"].items()}
            for s in summaries
        }
        tables["expert"] = self._sim("expert", folder / "expert", c.expert_episodes)
        return {"success_rate": tables}

    def stage_report(self, folder: Path) -> dict:
        from im2flow2act.policies.report import write_report

        paths = write_report(self, folder)
        return {"report": [str(p) for p in paths]}
