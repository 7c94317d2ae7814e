"""Ingest one video into the flow dataset: read, grid in a box, track, store, draw an overlay.

This is the first end-to-end job. The prompt-driven version (grounding, segmentation, batches, URLs)
grows on top of :func:`ingest_video`; the tracker is chosen by name from the tracker registry.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from preprocessing.config import save_config, to_dict
from preprocessing.dataset import Episode, FlowDatasetWriter
from preprocessing.trackers import TRACKERS
from preprocessing.tracks import box_to_normalized, grid_in_box
from preprocessing.video import frame_indices, iter_video, probe_video
from preprocessing.visualize import write_overlay


@dataclass
class IngestConfig:
    frame_size: tuple[int, int] = (256, 256)
    """(width, height) frames are resized to for tracking and storage (the reference's 256×256)."""
    grid_size: int = 32
    """Queries are a grid_size × grid_size grid in the object box (32 → 1024 points)."""
    tracker: str = "lk"
    tracker_args: dict[str, Any] = field(default_factory=dict)
    """Options of the chosen tracker's config (e.g. win_size for lk)."""
    start: float = 0.0
    """Seconds into the video where the episode starts."""
    end: float | None = None
    """Seconds where it ends (exclusive); None = the end of the video."""
    stride: int = 1
    """Keep every stride-th frame."""
    max_frames: int | None = None
    """Stop after this many kept frames (None = no limit)."""
    video_backend: str = "auto"
    overlay: bool = True
    """Write an overlay mp4 of the tracks per episode."""
    overlay_height: int = 360
    """Overlay videos are drawn on frames of this height at the video's own aspect ratio."""
    overlay_trail: int = 8


@dataclass
class IngestResult:
    name: str
    written: bool
    """False when the episode was already in the dataset (a rerun skips it)."""
    num_frames: int = 0
    num_points: int = 0
    overlay: Path | None = None
    seconds: float = 0.0


def episode_name_for(video: str | Path) -> str:
    """A stable episode name from a video's file name (reruns find the same name)."""
    stem = Path(str(video)).stem or "video"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("._-") or "video"


def ingest_video(
    video: str | Path,
    box: tuple[float, float, float, float],
    task: str,
    out_dir: str | Path,
    config: IngestConfig | None = None,
    object_prompt: str = "",
    name: str | None = None,
) -> IngestResult:
    """Track a grid in ``box`` (pixels of the video) and add one episode to ``out_dir/dataset.zarr``."""
    cfg = config or IngestConfig()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    tracker = TRACKERS.build(cfg.tracker, cfg.tracker_args)  # fails on a bad tracker option before any work
    info = probe_video(video)
    box_norm = box_to_normalized(box, info.size)
    name = name or episode_name_for(video)

    writer = FlowDatasetWriter(out_dir / "dataset.zarr", kind="video")
    save_config(cfg, out_dir / "ingest_config.yaml")
    if writer.has(name):
        return IngestResult(name, written=False)

    first = int(round(cfg.start * info.fps))
    last = None if cfg.end is None else int(round(cfg.end * info.fps))
    indices = frame_indices(info.num_frames, first, last, cfg.stride)
    if cfg.max_frames is not None:
        indices = indices[: cfg.max_frames]
    frames = np.stack(
        list(
            tqdm(
                iter_video(video, indices, size=cfg.frame_size, backend=cfg.video_backend, info=info),
                total=len(indices),
                desc=f"read {Path(str(video)).name}",
                unit="frame",
                leave=False,
            )
        )
    )
    indices = indices[: len(frames)]
    queries = grid_in_box(box_norm, cfg.grid_size)
    tracks, visibility = tracker.track(frames, queries)
    fps = info.fps / cfg.stride
    episode = Episode(
        frames=frames,
        tracks=tracks,
        visibility=visibility,
        queries=queries,
        task=task,
        fps=fps,
        source=str(Path(str(video)).resolve()),
        frame_indices=indices,
        object_prompt=object_prompt,
        bbox=box_norm.tolist(),
        attrs={"tracker": cfg.tracker, "video_size": list(info.size), "ingest_config": to_dict(cfg)},
    )
    written = writer.write(name, episode)
    overlay = None
    if cfg.overlay and written:
        overlay = _write_episode_overlay(
            video, indices, info.size, tracks, visibility, fps, cfg, out_dir, name
        )
    return IngestResult(
        name, written, len(frames), len(queries), overlay, seconds=time.perf_counter() - started
    )


def _write_episode_overlay(video, indices, video_size, tracks, visibility, fps, cfg, out_dir, name) -> Path:
    """Re-read the frames at display size (the stored ones are squashed to frame_size) and draw."""
    height = cfg.overlay_height
    width = int(round(height * video_size[0] / video_size[1] / 2)) * 2
    frames = np.stack(list(iter_video(video, indices, size=(width, height), backend=cfg.video_backend)))
    return write_overlay(
        out_dir / "overlays" / f"{name}.mp4", frames, tracks, visibility, fps, cfg.overlay_trail
    )
