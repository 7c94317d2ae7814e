"""Command-line commands owned by ``preprocessing``: ``ingest`` and ``inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from preprocessing.config import ConfigError, load_config
from preprocessing.dataset import DatasetError, FlowDataset
from preprocessing.ingest import IngestConfig, ingest_video
from preprocessing.registry import UnknownComponentError
from preprocessing.video import VideoError


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` → four floats, with an error that shows the expected form."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise typer.BadParameter(f"{text!r}: expected four numbers x0,y0,x1,y1 in pixels of the video")
    return values  # type: ignore[return-value]


def ingest(
    video: Annotated[Path, typer.Argument(help="Video file to ingest.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides as key=value, e.g. grid_size=16 stride=2.")
    ] = None,
    box: Annotated[
        str, typer.Option(help="Object box x0,y0,x1,y1 in pixels of the video's first frame.")
    ] = "",
    task: Annotated[str, typer.Option(help="Instruction text stored with the episode.")] = "",
    out: Annotated[
        Path, typer.Option(help="Output folder: dataset.zarr, overlays/, ingest_config.yaml.")
    ] = Path("outputs/ingest"),
    object_prompt: Annotated[str, typer.Option(help="Name of the manipulated object, e.g. 'red cup'.")] = "",
    config: Annotated[
        Path | None, typer.Option(help="YAML config (configs/preprocessing/ingest.yaml).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Episode name (default: from the file name).")] = None,
) -> None:
    """Track a grid of points on the object in VIDEO and store them as one flow-dataset episode."""
    if not box:
        raise typer.BadParameter("give the object box with --box x0,y0,x1,y1 (pixels)", param_hint="--box")
    try:
        cfg = load_config(IngestConfig, config, overrides or [])
        result = ingest_video(video, parse_box(box), task, out, cfg, object_prompt=object_prompt, name=name)
    except (ConfigError, VideoError, DatasetError, UnknownComponentError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    if not result.written:
        typer.echo(f"{result.name}: already in {out / 'dataset.zarr'}, skipped")
        return
    typer.echo(
        f"{result.name}: {result.num_frames} frames x {result.num_points} points in {result.seconds:.1f} s "
        f"→ {out / 'dataset.zarr'}"
    )
    if result.overlay:
        typer.echo(f"overlay: {result.overlay}")


def inspect(dataset: Annotated[Path, typer.Argument(help="A flow dataset (.zarr folder).")]) -> None:
    """Validate a flow dataset and list its episodes with their tasks."""
    try:
        ds = FlowDataset(dataset)
        ds.validate()
    except DatasetError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    typer.echo(f"{dataset}: kind={ds.kind} schema_version={ds.attrs['schema_version']} episodes={len(ds)}")
    for row in ds.index():
        typer.echo(f"  {row.name:<28} T={row.num_frames:<5} N={row.num_points:<5} {row.task!r}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""
    app.command()(ingest)
    app.command()(inspect)
