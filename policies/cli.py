"""Command-line commands owned by ``policies``: ``sim demos|play|expert|show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from im2flow2act.core.checkpoint import CheckpointError
from im2flow2act.core.cli_options import AddressOpt, ExecutorOpt, GpusOpt, executor_config
from im2flow2act.core.config import ConfigError, check_out_folder, check_range, load_config, replace_checked
from im2flow2act.core.presets import resolve_preset
from im2flow2act.core.registry import UnknownComponentError
from im2flow2act.core.run_log import RunFolderError
from im2flow2act.policies.sim.generate import (
    GenerateConfig,
    Mode,
    check_image_size,
    format_summary,
    generate,
    render_initial_scene,
)
from im2flow2act.policies.sim.tasks import TASKS
from im2flow2act.preprocessing.dataset import DatasetError

if TYPE_CHECKING:  # the pipeline imports every stage: the CLI's --help should not wait for it
    from im2flow2act.policies.pipeline import PipelineConfig

RUN_ERRORS = (CheckpointError, RunFolderError)
"""What a training run or a model load refuses with a clear message (a red error line, exit code 2)."""

sim_app = typer.Typer(
    help="The MuJoCo world: generate demonstrations, play data and expert rollouts.", no_args_is_help=True
)

TaskOpt = Annotated[
    list[str] | None, typer.Option("--task", help="Task(s) to run (repeat); default: every registered task.")
]
EpisodesOpt = Annotated[int, typer.Option(help="Episodes per task.")]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes, or Ray actors.")]
OutOpt = Annotated[Path, typer.Option(help="Output folder: dataset.zarr, summary.json, videos/.")]
VideosOpt = Annotated[bool, typer.Option("--videos/--no-videos", help="Write an mp4 per episode.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the first episode; episode i uses seed + i.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="A YAML file or a shipped preset's name (generate).")]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Config overrides key=value, e.g. record.num_points=128.")
]


def _run(mode: Mode, task, episodes, workers, out, videos, seed, config, overrides, where) -> None:
    try:
        check_range("--episodes", episodes, low=1)
        check_range("--workers", workers, low=1)
        cfg = load_config(GenerateConfig, config and resolve_preset("sim", config), overrides or [])
        options = {"episodes": episodes, "workers": workers, "videos": videos, "seed": seed}
        cfg = replace_checked(cfg, **options, **({"tasks": list(task)} if task else {}))
        check_out_folder(out)
        summary = generate(mode, out, cfg, executor=executor_config(*where))
    except (ConfigError, UnknownComponentError, DatasetError, ConnectionError) as err:
        _fail(err)
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
        executor: ExecutorOpt = "local",
        address: AddressOpt = None,
        gpus_per_worker: GpusOpt = 0.0,
    ) -> None:
        where = (executor, address, gpus_per_worker)
        _run(mode, task, episodes, workers, out, videos, seed, config, overrides, where)

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
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder, not a PNG file to write")
        check_out_folder(out.parent, "--out's folder")
        image = render_initial_scene(task, seed, embodiment)
    except (ConfigError, UnknownComponentError) as err:
        _fail(err)
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
        check_out_folder(out)
        trainer = Trainer(cfg, out)
    except (ConfigError, DatasetError, ValueError) as err:
        _fail(err)
    try:
        last = trainer.fit()
    except RUN_ERRORS as err:
        _fail(err)
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
        check_out_folder(out)
        summary = evaluate(cfg, out)
    except (
        ConfigError,
        DatasetError,
        UnknownComponentError,
        CheckpointError,
        FileNotFoundError,
        ValueError,
    ) as err:
        _fail(err)
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
        _check_pipeline(cfg, STAGES[: STAGES.index(until) + 1] if until else STAGES)
        folder = check_out_folder(out or Path("outputs/pipeline") / cfg.name)
        pipeline = Pipeline(cfg, folder)
    except (ConfigError, UnknownComponentError, ValueError) as err:
        _fail(err)
    try:
        records = pipeline.run(until)
    except (ConfigError, UnknownComponentError, DatasetError, *RUN_ERRORS) as err:
        _fail(err)
    if "report" in records:
        typer.echo(f"report: {pipeline.folder('report') / 'report.html'} (and report.md)")


def _check_pipeline(cfg: PipelineConfig, stages: tuple[str, ...]) -> None:
    """What the stages to run would otherwise refuse only when they start (or crash on), checked up front."""
    check_range("workers", cfg.workers, low=1)
    check_image_size(cfg.image_size)
    for key, low in (("demos", 1), ("play", 1), ("eval_episodes", 0), ("expert_episodes", 0)):
        check_range(key, getattr(cfg, key), low=low)
    if "im2flow" in stages and cfg.demos <= cfg.eval_episodes:
        raise ConfigError(
            f"demos={cfg.demos} with eval_episodes={cfg.eval_episodes} leaves no demonstration per task to "
            f"train im2flow on: demos must exceed eval_episodes"
        )


def _fail(err: Exception) -> None:
    """A refused input: one red line on stderr and exit code 2 (no traceback)."""
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2) from err


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
    app.add_typer(policy_app, name="policy")
    app.add_typer(pipeline_app, name="pipeline")
