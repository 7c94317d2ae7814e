"""Command-line commands owned by ``im2flow``: ``flow train|sample|eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from im2flow2act.core.checkpoint import CheckpointError
from im2flow2act.core.config import ConfigError, check_out_folder, check_range, load_config
from im2flow2act.core.presets import resolve_preset
from im2flow2act.core.registry import UnknownComponentError
from im2flow2act.core.run_log import RunFolderError
from im2flow2act.preprocessing.dataset import DatasetError
from im2flow2act.preprocessing.grounding import NoObjectFound
from im2flow2act.preprocessing.pretrained import ModelNotAvailable

flow_app = typer.Typer(
    help="im2flow: generate object flow from an image and an instruction.", no_args_is_help=True
)
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Config overrides key=value, e.g. generator.guidance_scale=3.")
]
ERRORS = (
    CheckpointError,
    RunFolderError,
    ConfigError,
    DatasetError,
    UnknownComponentError,
    ModelNotAvailable,
    NoObjectFound,
    ValueError,
    FileNotFoundError,
)


def _fail(err: Exception | str) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@flow_app.command()
def train(
    overrides: OverridesArg = None,
    config: Annotated[
        Path | None, typer.Option(help="A YAML file or a shipped preset's name (train_small).")
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Run folder: clips.npz, checkpoint.pt, generator/ (the model), samples/, metrics.csv."
        ),
    ] = Path("outputs/im2flow"),
) -> None:
    """Train (or resume) a flow generator on action-less videos (flow datasets with an object box); runs on
    CPU or under `accelerate launch` (k processes with batch_size B train as one with k·B)."""
    from im2flow2act.im2flow.train import EXPORT, FlowTrainConfig, FlowTrainer

    try:
        cfg = load_config(FlowTrainConfig, config and resolve_preset("im2flow", config), overrides or [])
        check_out_folder(out)
        trainer = FlowTrainer(cfg, out)
    except ERRORS as err:
        _fail(err)
    try:
        last = trainer.fit()
    except (CheckpointError, RunFolderError) as err:
        _fail(err)
    typer.echo(f"step {trainer.step}: loss {last.get('loss', float('nan')):.4f} → {out / EXPORT}")


@flow_app.command()
def sample(
    image: Annotated[Path, typer.Argument(help="An image (png/jpg) or a video (its first frame is used).")],
    task: Annotated[str, typer.Option(help='The instruction, e.g. "pour the mug into the bowl".')],
    generator: Annotated[
        str, typer.Option(help="A trained generator: a model folder (<run>/generator) or a Hub id.")
    ] = "models/generator-full",
    box: Annotated[str | None, typer.Option(help="Object box x0,y0,x1,y1 in pixels of the image.")] = None,
    grounder: Annotated[
        str | None, typer.Option(help="Find the box instead: grounding-dino or owlv2 (needs local weights).")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Object prompt for --grounder, e.g. 'red mug'.")] = None,
    num_samples: Annotated[int, typer.Option("--samples", "-k", help="Flows to sample.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the first sample.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for flow.npz and flow.gif.")] = Path(
        "outputs/flow_sample"
    ),
) -> None:
    """Sample K flows for one image: writes flow.npz (flows (K, T, N, 3), queries) and an overlay GIF."""
    from im2flow2act.core.checkpoint import resolve_folder
    from im2flow2act.im2flow.sampling import first_frame, object_box
    from im2flow2act.preprocessing.tracks import grid_in_box

    try:  # the inputs are checked before the model's heavy imports, so a wrong one fails at once
        check_range("--samples/-k", num_samples, low=1)
        frame = first_frame(image)
        found = object_box(frame, box, grounder, prompt or task)
        folder = resolve_folder(generator, "flow_generator")
        check_out_folder(out)
    except ERRORS as err:
        _fail(err)
    from im2flow2act.im2flow.generator import load_generator
    from im2flow2act.im2flow.pictures import write_comparison

    try:
        model = load_generator(folder)
    except ERRORS as err:
        _fail(err)
    queries = grid_in_box(found, model.config.flow.grid_size)
    flows = model.sample(frame, task, queries, num_samples=num_samples, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "flow.npz", flows=flows, queries=queries, box=np.asarray(found), task=task)
    labels = [f"sample {k}" for k in range(len(flows))]
    gif = write_comparison(out / "flow.gif", frame, queries, list(flows), labels)
    typer.echo(
        f"{len(flows)} flows of {queries.shape[0]} points in box {np.round(found, 3).tolist()} → {gif}"
    )


@flow_app.command("eval")
def evaluate_flow(
    overrides: OverridesArg = None,
    config: Annotated[Path | None, typer.Option(help="A YAML file or a preset name (eval).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json/.md and gifs/.")] = Path(
        "outputs/im2flow_eval"
    ),
) -> None:
    """ADE / FDE / min-of-K ADE / visibility / instruction following vs zero-motion and nearest baselines."""
    from im2flow2act.im2flow.evaluate import FlowEvalConfig, evaluate, markdown_table

    try:
        cfg = load_config(FlowEvalConfig, config and resolve_preset("im2flow", config), overrides or [])
        check_out_folder(out)
        summary = evaluate(cfg, out)
    except ERRORS as err:
        _fail(err)
    typer.echo(markdown_table(summary))
    typer.echo(f"→ {out / 'metrics.json'}")


def register(app: typer.Typer) -> None:
    app.add_typer(flow_app, name="flow")
