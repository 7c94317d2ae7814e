"""Command-line commands owned by ``policies``: ``sim demos|play|expert|show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from im2flow2act.core.checkpoint import CheckpointError
from im2flow2act.core.config import ConfigError, load_config
from im2flow2act.core.presets import resolve_preset
from im2flow2act.core.registry import UnknownComponentError
from im2flow2act.core.run_log import RunFolderError
from im2flow2act.policies.sim.generate import (
    GenerateConfig,
    Mode,
    format_summary,
    generate,
    render_initial_scene,
)
from im2flow2act.policies.sim.tasks import TASKS
from im2flow2act.preprocessing.dataset import DatasetError

RUN_ERRORS = (CheckpointError, RunFolderError)
"""What a training run or a model load refuses with a clear message (a red error line, exit code 2)."""

sim_app = typer.Typer(
    help="The MuJoCo world: generate demonstrations, play data and expert rollouts.", no_args_is_help=True
)

TaskOpt = Annotated[
    list[str] | None, typer.Option("--task", help="Task(s) to run (repeat); default: every registered task.")
]
EpisodesOpt = Annotated[int, typer.Option(help="Episodes per task.")]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes.")]
OutOpt = Annotated[Path, typer.Option(help="Output folder: dataset.zarr, summary.json, videos/.")]
VideosOpt = Annotated[bool, typer.Option("--videos/--no-videos", help="Write an mp4 per episode.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the first episode; episode i uses seed + i.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="A YAML file or a shipped preset's name (generate).")]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Config overrides key=value, e.g. record.num_points=128.")
]


def _run(mode: Mode, task, episodes, workers, out, videos, seed, config, overrides) -> None:
    try:
        cfg = load_config(GenerateConfig, config and resolve_preset("sim", config), overrides or [])
        if task:
            cfg.tasks = list(task)
        cfg.episodes, cfg.workers, cfg.videos, cfg.seed = episodes, workers, videos, seed
        summary = generate(mode, out, cfg)
    except (ConfigError, UnknownComponentError, DatasetError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    typer.echo(format_summary(summary))
    typer.echo(f"→ {out / 'dataset.zarr'}, {out / 'summary.json'}")
    if any(row["failed"] for row in summary["tasks"].values()):
        raise typer.Exit(code=1)


def _generation_command(mode: Mode, default_out: str, summary: str) -> None:
    """Register ``sim <mode>``: the three generation jobs take the same options, only the output differs."""

    def command(
        task: TaskOpt = None,
        episodes: EpisodesOpt = 10,
        workers: WorkersOpt = 1,
        out: OutOpt = Path(default_out),
        videos: VideosOpt = False,
        seed: SeedOpt = 0,
        config: ConfigOpt = None,
        overrides: OverridesArg = None,
    ) -> None:
        _run(mode, task, episodes, workers, out, videos, seed, config, overrides)

    command.__doc__ = summary
    sim_app.command(name=mode)(command)


_generation_command(
    "demos",
    "outputs/sim_demos",
    "Sphere-agent ('human') demonstrations of each task: video, instruction, tracks.",
)
_generation_command(
    "play",
    "outputs/sim_play",
    "Task-agnostic robot play in each task's scene: actions, proprio, frames, depth, tracks.",
)
_generation_command(
    "expert",
    "outputs/sim_expert",
    "The scripted robot expert on each task (proves each success check is reachable).",
)


@sim_app.command()
def show(
    task: Annotated[str, typer.Option(help=f"One of: {', '.join(TASKS.names())}.")] = "pick_place",
    seed: Annotated[int, typer.Option(help="Layout seed.")] = 0,
    embodiment: Annotated[str, typer.Option(help="robot or sphere.")] = "robot",
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("outputs/scene.png"),
) -> None:
    """Render a task's initial scene to a PNG."""
    from PIL import Image

    try:
        image = render_initial_scene(task, seed, embodiment)
    except UnknownComponentError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out)
    typer.echo(f"{task} seed {seed}: {out}")


policy_app = typer.Typer(
    help="The flow-conditioned diffusion policy: train on play data.", no_args_is_help=True
)


@policy_app.command()
def train(
    overrides: OverridesArg = None,
    config: Annotated[
        Path | None, typer.Option(help="A YAML file or a preset name (train_small, train_medium, ...).")
    ] = None,
    out: Annotated[
        Path,
        typer.Option(help="Run folder: checkpoint.pt, policy/ (the model), metrics.csv, tensorboard/."),
    ] = Path("outputs/policy"),
) -> None:
    """Train (or resume training) the policy; the same command runs on CPU or under `accelerate launch`
    (k processes with batch_size B train as one with k·B; gradients are averaged)."""
    from im2flow2act.policies.train import EXPORT, TrainConfig, Trainer

    try:
        cfg = load_config(TrainConfig, config and resolve_preset("policy", config), overrides or [])
        trainer = Trainer(cfg, out)
    except (ConfigError, DatasetError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    try:
        last = trainer.fit()
    except RUN_ERRORS as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    typer.echo(f"step {trainer.step}: loss {last.get('loss', float('nan')):.4f} → {out / EXPORT}")


@policy_app.command("eval")
def evaluate_policy(
    overrides: OverridesArg = None,
    config: Annotated[Path | None, typer.Option(help="A YAML file or a preset name (eval).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for summary_*.json/.md and videos/.")] = Path(
        "outputs/policy_eval"
    ),
) -> None:
    """Closed-loop evaluation in the sim, conditioned on held-out sphere demonstrations."""
    from im2flow2act.policies.evaluate import EvalConfig, evaluate

    try:
        cfg = load_config(EvalConfig, config and resolve_preset("policy", config), overrides or [])
        summary = evaluate(cfg, out)
    except (
        ConfigError,
        DatasetError,
        UnknownComponentError,
        CheckpointError,
        FileNotFoundError,
        ValueError,
    ) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    typer.echo((out / f"summary_{cfg.plan_source}_{cfg.tracker}.md").read_text())
    typer.echo(json.dumps(summary["tasks"]))


pipeline_app = typer.Typer(
    help="The whole chain: sim demos and play → ingest → im2flow → policy → evaluation → report.",
    no_args_is_help=True,
)


@pipeline_app.command("run")
def run_pipeline(
    overrides: OverridesArg = None,
    preset: Annotated[
        str, typer.Option(help="A shipped preset's name (quick, full) or a path to a pipeline YAML file.")
    ] = "quick",
    out: Annotated[Path | None, typer.Option(help="Output folder; default outputs/pipeline/<name>.")] = None,
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
) -> None:
    """Run every unfinished stage (a rerun resumes where it stopped) and print where the report is."""
    from im2flow2act.policies.pipeline import STAGES, Pipeline, PipelineConfig

    try:
        if until is not None and until not in STAGES:
            raise ConfigError(f"--until must be one of {', '.join(STAGES)}, got {until!r}")
        cfg = load_config(PipelineConfig, resolve_preset("pipeline", preset), overrides or [])
        pipeline = Pipeline(cfg, out or Path("outputs/pipeline") / cfg.name)
    except (ConfigError, UnknownComponentError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    records = pipeline.run(until)
    if "report" in records:
        typer.echo(f"report: {pipeline.folder('report') / 'report.html'} (and report.md)")


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
    app.add_typer(policy_app, name="policy")
    app.add_typer(pipeline_app, name="pipeline")
