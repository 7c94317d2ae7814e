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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from im2flow2act.core.checkpoint import read_model_config
from im2flow2act.core.config import ConfigError, check_range, save_config
from im2flow2act.core.registry import UnknownComponentError
from im2flow2act.im2flow.data import ClipConfig, build_clips
from im2flow2act.im2flow.evaluate import FlowEvalConfig
from im2flow2act.im2flow.evaluate import evaluate as evaluate_flow
from im2flow2act.im2flow.generator import GeneratorConfig
from im2flow2act.im2flow.train import EXPORT, FlowTrainConfig, FlowTrainer
from im2flow2act.policies.evaluate import PLAN_SOURCES, EvalConfig
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
class PretrainedConfig:
    """Models to use instead of training them (e.g. the released ones in ``models/``)."""

    generator: str = ""
    """A flow-generator model folder: im2flow is not trained; its stage evaluates this one on the held-out
    clips."""
    policy: str = ""
    """A flow-policy model folder: play and policy training are skipped."""

    def check_folders(self) -> None:
        """Refuse a folder without its config or weights before any stage runs (relative paths are read
        from where the command runs, so this is checked at run time, not when the config is read)."""
        for kind, folder in (("generator", self.generator), ("policy", self.policy)):
            missing = [f for f in ("config.json", "model.safetensors") if not (Path(folder) / f).is_file()]
            if folder and missing:
                raise ConfigError(
                    f"pretrained.{kind}: {folder} is not a model folder (no {' or '.join(missing)}); the "
                    "released weights are not kept in git: train them with `pipeline run --preset full` and "
                    "copy them with `scripts/release_models.py --run <run>`, or give a model folder"
                )


@dataclass
class PipelineConfig:
    name: str = "quick"
    tasks: list[str] = field(default_factory=task_names)
    """Default: every registered task (``policies.sim.tasks``)."""
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    """(width, height) of every rendered frame (demos, play, evaluation)."""
    workers: int = 2
    """Processes for the simulator, ingest and evaluation stages (evaluation: episodes side by side)."""
    demos: int = 12
    """Sphere demonstrations per task; the last ``eval_episodes`` are held out for evaluation."""
    demo_seed: int = 0
    """Episode i of a task's demonstrations has the layout of seed ``demo_seed + i``. The released models'
    held-out layouts are seeds 50–69 (the ``full`` preset's last 20 of 70)."""
    play: int = 10
    """Play episodes per task scene."""
    eval_episodes: int = 2
    expert_episodes: int = 2
    trackers: list[str] = field(default_factory=lambda: ["oracle", "lk"])
    """Online trackers evaluated (oracle, lk, rigid-lk, cotracker3-online)."""
    tracker_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per tracker name, its config, e.g. {cotracker3-online: {checkpoint: models/cotracker3}}."""
    ingest: IngestConfig = field(
        default_factory=lambda: IngestConfig(grid_size=16, overlay=False, tracker="lk")
    )
    """The published runs' recipe: LK on the sphere demonstrations' videos (docs/results/human_video.md
    compares it with object-lk there: mixed, so the measured recipe stays until a full run says otherwise)."""
    flow: FlowTrainConfig = field(default_factory=lambda: FlowTrainConfig(max_steps=300, batch_size=16))
    policy: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=400, batch_size=32))
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(max_chunks=16, num_flows=4))
    plans: list[str] = field(default_factory=lambda: ["generated", "tracked"])
    """Plan sources evaluated: generated (language-conditioned), tracked (the demonstration's video)."""
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)

    def __post_init__(self) -> None:
        check_range("workers", self.workers, low=1)
        check_range("demos", self.demos, low=1)
        check_range("eval_episodes", self.eval_episodes, low=1)
        check_range("expert_episodes", self.expert_episodes, low=0)
        for plan in self.plans:
            try:
                PLAN_SOURCES.entry(plan)
            except UnknownComponentError as err:
                raise ConfigError(f"plans: {err}") from None


class Pipeline:
    def __init__(self, config: PipelineConfig, out_dir: str | Path, progress: bool = True) -> None:
        config.pretrained.check_folders()
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
    def _sim(self, mode: str, folder: Path, episodes: int, seed: int = 0) -> dict:
        c = self.config
        cfg = GenerateConfig(
            tasks=list(c.tasks),
            episodes=episodes,
            workers=c.workers,
            image_size=tuple(c.image_size),
            seed=seed,
        )
        summary = generate(mode, folder, cfg, progress=self.progress)
        return {t: row["success_rate"] for t, row in summary["tasks"].items()}

    def stage_demos(self, folder: Path) -> dict:
        c = self.config
        return {"success_rate": self._sim("demos", folder, c.demos, c.demo_seed)}

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
        if c.pretrained.generator:  # evaluate it on the clips, train nothing
            generator = read_model_config(Path(c.pretrained.generator), "flow_generator", GeneratorConfig)
            flow = generator.flow  # the clips its evaluation needs (the weights load there, once)
            clips = ClipConfig(flow, c.flow.tracker, c.flow.tracker_args, c.eval_episodes)
            build_clips(data, clips, folder / "clips.npz", self.progress)
            flow_eval = FlowEvalConfig(
                run=str(folder), generator=c.pretrained.generator, held_out_per_task=c.eval_episodes
            )
            summary = evaluate_flow(flow_eval, folder / "eval", progress=self.progress)
            return {"pretrained": c.pretrained.generator, "metrics": summary["methods"]}
        cfg = replace(c.flow, data=data, held_out_per_task=c.eval_episodes)
        trainer = FlowTrainer(cfg, folder, progress=self.progress)
        last = trainer.fit()
        flow_eval = FlowEvalConfig(run=str(folder), held_out_per_task=c.eval_episodes)
        summary = evaluate_flow(flow_eval, folder / "eval", progress=self.progress)
        return {"final_loss": last.get("loss"), "metrics": summary["methods"]}

    def stage_play(self, folder: Path) -> dict:
        if self.config.pretrained.policy:
            return {"pretrained": self.config.pretrained.policy}  # no policy to train: no play
        self._sim("play", folder, self.config.play)
        return {}

    def stage_policy(self, folder: Path) -> dict:
        if self.config.pretrained.policy:
            return {"pretrained": self.config.pretrained.policy}
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
                policy=c.pretrained.policy or str(self.folder("policy") / "policy"),  # the exported model
                demos=str(self.folder("demos") / "dataset.zarr"),
                generator=c.pretrained.generator or str(self.folder("im2flow") / EXPORT),
                tasks=list(c.tasks),
                episodes=c.eval_episodes,
                plan_source=plan,
                tracker=tracker,
                tracker_args=c.tracker_args.get(tracker, {}),
                workers=c.workers,
            )
            for plan in c.plans
            for tracker in sorted(c.trackers, key=lambda t: t == "oracle")
        }

    def stage_evaluate(self, folder: Path) -> dict:
        """Every column in turn, its episodes ``workers`` at a time (each process with its share of the
        CPU's threads: simulation, rendering and tracking are single-threaded)."""
        c = self.config
        tables: dict[str, dict] = {}
        for label, cfg in self.evaluation_configs().items():
            summary = evaluate_policy(cfg, folder / cfg.plan_source, self.progress)
            tables[label] = {t: row["success_rate"] for t, row in summary["tasks"].items()}
            rates = ", ".join(f"{t} {rate:.0%}" for t, rate in tables[label].items())
            print(f"[pipeline] evaluate {label}: {rates}", flush=True)
        if c.expert_episodes:  # on the evaluated layouts
            seed = c.demo_seed + c.demos - c.eval_episodes
            tables["expert"] = self._sim("expert", folder / "expert", c.expert_episodes, seed)
        return {"success_rate": tables}

    def stage_report(self, folder: Path) -> dict:
        from im2flow2act.policies.report import write_report

        paths = write_report(self, folder)
        return {"report": [str(p) for p in paths]}
