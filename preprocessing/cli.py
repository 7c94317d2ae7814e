"""Command-line commands owned by ``preprocessing``: ``ingest`` and ``inspect``."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer

from im2flow2act.core.cli_options import AddressOpt, ExecutorOpt, GpusOpt, executor_config
from im2flow2act.core.config import ConfigError, check_out_folder, load_config
from im2flow2act.core.presets import resolve_preset
from im2flow2act.core.registry import UnknownComponentError
from im2flow2act.preprocessing.dataset import DatasetError, FlowDataset
from im2flow2act.preprocessing.grounding import ModelNotAvailable
from im2flow2act.preprocessing.ingest import IngestConfig, ingest_batch, summary_table, write_summary
from im2flow2act.preprocessing.sources import check_episode_name, is_url, parse_box, resolve_inputs

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def split_arguments(arguments: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments → (inputs, key=value overrides); an existing path is always an input."""
    inputs, overrides = [], []
    for arg in arguments:
        if _OVERRIDE.match(arg) and not is_url(arg) and not Path(arg).exists():
            overrides.append(arg)
        else:
            inputs.append(arg)
    return inputs, overrides


def ingest(
    arguments: Annotated[
        list[str],
        typer.Argument(
            help="Videos, folders, manifests (.csv/.jsonl), http(s) URLs; and key=value config overrides."
        ),
    ],
    prompt: Annotated[
        str, typer.Option(help="The object to track, e.g. 'red cup' (manifest column object_prompt).")
    ] = "",
    task: Annotated[
        str, typer.Option(help="Instruction text stored with each episode (manifest column task).")
    ] = "",
    box: Annotated[
        str,
        typer.Option(help="Object box x0,y0,x1,y1 in pixels of the first frame (used as given)."),
    ] = "",
    grounder: Annotated[
        str | None,
        typer.Option(help="auto | manifest | hand-object | motion | grounding-dino | owlv2 (default: auto)."),
    ] = None,
    segmenter: Annotated[str | None, typer.Option(help="Optional mask in the box: sam.")] = None,
    out: Annotated[
        Path, typer.Option(help="Output folder: dataset.zarr, overlays/, summary.json, ingest_config.yaml.")
    ] = Path("outputs/ingest"),
    workers: Annotated[int, typer.Option(help="Worker processes, or Ray actors (at least 1).")] = 1,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    gpus_per_worker: GpusOpt = 0.0,
    overlay: Annotated[
        bool | None,
        typer.Option("--overlay/--no-overlay", help="Overlay mp4 per episode (default: when ≤ 20 videos)."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit with code 1 if any video failed.")] = False,
    config: Annotated[
        Path | None, typer.Option(help="A YAML file or a shipped preset's name (ingest).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Episode name for a single input (default: from the file name).")
    ] = None,
    object_prompt: Annotated[str, typer.Option(hidden=True)] = "",
) -> None:
    """Turn human videos into object flow: find the object, track a grid of points on it, store episodes.

    A rerun into the same --out skips episodes already made from the same videos; it must use the same
    config, except for the overlay and download options, and never rewrites ingest_config.yaml.
    """
    inputs, overrides = split_arguments(arguments)
    try:
        cfg = load_config(IngestConfig, config and resolve_preset("preprocessing", config), overrides)
        given_box = parse_box(box) if box else None
        if grounder:
            cfg.grounder = grounder
        elif given_box is not None:
            cfg.grounder = "manifest"
        if segmenter:
            cfg.segmenter = segmenter
        if overlay is not None:
            cfg.overlay = overlay
        where = executor_config(executor, address, gpus_per_worker)
    except (ConfigError, ValueError) as err:
        _fail(err)
    if workers < 1:
        _fail(f"--workers must be at least 1, got {workers}")
    if name is not None:
        try:
            check_episode_name(name)
        except ValueError as err:
            _fail(f"--name: {err}")
    if not inputs:
        _fail("give at least one video, folder, manifest or URL")
    own_outputs = [out / "overlays", out / "downloads", out / "dataset.zarr"]
    items, bad = resolve_inputs(
        inputs, task=task, object_prompt=prompt or object_prompt, box=given_box, exclude=own_outputs
    )
    if name is not None and len(items) > 1:
        _fail(f"--name names a single input; these inputs give {len(items)} videos")
    if name is not None and items:
        items[0].name = name
    if cfg.grounder == "manifest" and any(item.box is None for item in items):
        hint = "pass --box x0,y0,x1,y1, add a box column to the manifest, or use --grounder motion"
        _fail(f"no object box for {sum(i.box is None for i in items)} input(s): {hint}")
    try:  # the last check before any work: nothing is created for an input refused above
        check_out_folder(out)
    except ConfigError as err:
        _fail(err)
    started = time.perf_counter()
    try:
        results = ingest_batch(items, cfg, out, workers=workers, executor=where)
    except (ConfigError, UnknownComponentError, ModelNotAvailable, DatasetError, ConnectionError) as err:
        suggestion = f"\n(no weights needed: {err.alternative})" if isinstance(err, ModelNotAvailable) else ""
        _fail(f"{err}{suggestion}")
    typer.echo(summary_table(results, bad))
    path = write_summary(out, results, bad, time.perf_counter() - started)
    typer.echo(f"→ {out / 'dataset.zarr'}, {path}")
    if strict and (bad or any(r.status == "failed" for r in results)):
        raise typer.Exit(code=1)


def _fail(message) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def inspect(dataset: Annotated[Path, typer.Argument(help="A flow dataset (.zarr folder).")]) -> None:
    """Validate a flow dataset and list its episodes with their tasks."""
    try:
        ds = FlowDataset(dataset)
        ds.validate()
    except DatasetError as err:
        _fail(err)
    typer.echo(f"{dataset}: kind={ds.kind} schema_version={ds.attrs['schema_version']} episodes={len(ds)}")
    for row in ds.index():
        typer.echo(f"  {row.name:<28} T={row.num_frames:<5} N={row.num_points:<5} {row.task!r}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the top-level app."""
    app.command()(ingest)
    app.command()(inspect)
