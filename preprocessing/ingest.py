"""Ingest videos into object flow: resolve → (download) → read → ground → (segment) → track → store.

:func:`ingest_item` handles one video and raises a clear error for a bad one; :func:`ingest_batch` runs
many in a worker pool, skips finished episodes, reports failures in the summary and never stops for one
bad video. Models (grounder, segmenter, tracker) are built once per worker process.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from im2flow2act.core.config import save_config, to_dict
from im2flow2act.preprocessing.dataset import Episode, FlowDatasetWriter
from im2flow2act.preprocessing.download import DownloadConfig, fetch
from im2flow2act.preprocessing.grounding import GROUNDERS, Box
from im2flow2act.preprocessing.segmentation import SEGMENTERS
from im2flow2act.preprocessing.sources import VideoItem
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import (
    box_to_normalized,
    grid_in_box,
    grid_in_mask,
    moving_mask,
    resample_tracks,
)
from im2flow2act.preprocessing.video import frame_indices, iter_video, probe_video
from im2flow2act.preprocessing.visualize import write_overlay


@dataclass
class IngestConfig:
    frame_size: tuple[int, int] = (256, 256)
    """(width, height) frames are resized to for grounding, tracking and storage (the reference's 256×256)."""
    grid_size: int = 32
    """Queries: a grid_size × grid_size grid in the object box (32 → 1024 points), or as many in the mask."""
    grounder: str = "manifest"
    """How the object is found: manifest (a given box), motion, grounding-dino, owlv2."""
    grounder_args: dict[str, Any] = field(default_factory=dict)
    segmenter: str | None = None
    """Optional mask inside the box: sam (query points then lie on the object only)."""
    segmenter_args: dict[str, Any] = field(default_factory=dict)
    tracker: str = "lk"
    tracker_args: dict[str, Any] = field(default_factory=dict)
    """Options of the chosen tracker's config (e.g. win_size for lk)."""
    moving_threshold_px: float = 2.5
    """A point whose visible positions span more than this (pixels of a 256 frame) is marked moving."""
    resample_frames: int = 32
    """Also store tracks resampled uniformly to this many frames (0 = don't); full-rate tracks are kept."""
    start: float = 0.0
    """Seconds into the video where the episode starts (a manifest's start column overrides it)."""
    end: float | None = None
    """Seconds where it ends (exclusive); None = the end of the video."""
    stride: int = 1
    """Keep every stride-th frame."""
    max_frames: int | None = None
    """Stop after this many kept frames (None = no limit)."""
    video_backend: str = "auto"
    overlay: bool | None = None
    """Write an overlay mp4 per episode; None = only for small batches (≤ overlay_auto_limit videos)."""
    overlay_auto_limit: int = 20
    overlay_height: int = 360
    """Overlay videos are drawn on frames of this height at the video's own aspect ratio."""
    overlay_trail: int = 8
    download: DownloadConfig = field(default_factory=DownloadConfig)


@dataclass
class IngestResult:
    name: str
    source: str
    status: str
    """"written", "skipped" (already in the dataset) or "failed"."""
    reason: str = ""
    num_frames: int = 0
    num_points: int = 0
    moving_fraction: float = 0.0
    box: list[float] | None = None
    overlay: str | None = None
    seconds: float = 0.0

    @property
    def written(self) -> bool:
        return self.status == "written"


def episode_name_for(video: str | Path) -> str:
    """A stable episode name from a video's file name (reruns find the same name)."""
    stem = Path(str(video).split("?")[0]).stem or "video"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("._-") or "video"


class Ingestor:
    """Holds the models for one process and ingests items into ``out_dir/dataset.zarr``."""

    def __init__(self, config: IngestConfig, out_dir: str | Path) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.tracker = TRACKERS.build(config.tracker, config.tracker_args)
        self.grounder = GROUNDERS.build(config.grounder, config.grounder_args)
        self.segmenter = (
            SEGMENTERS.build(config.segmenter, config.segmenter_args) if config.segmenter else None
        )
        self.writer = FlowDatasetWriter(self.out_dir / "dataset.zarr", kind="video")

    def ingest(self, item: VideoItem, overlay: bool = True) -> IngestResult:
        """One video → one episode. Raises on a bad video (the batch turns that into a 'failed' row)."""
        cfg = self.config
        started = time.perf_counter()
        name = item.name or episode_name_for(item.video)
        if self.writer.has(name):
            return IngestResult(name, item.video, "skipped")
        video = (
            fetch(item.video, self.out_dir / "downloads", cfg.download) if item.is_url else Path(item.video)
        )
        info = probe_video(video)
        start = cfg.start if item.start is None else item.start
        end = cfg.end if item.end is None else item.end
        indices = frame_indices(
            info.num_frames,
            int(round(start * info.fps)),
            None if end is None else int(round(end * info.fps)),
            cfg.stride,
        )
        if cfg.max_frames is not None:
            indices = indices[: cfg.max_frames]
        frames = np.stack(
            list(iter_video(video, indices, size=cfg.frame_size, backend=cfg.video_backend, info=info))
        )
        indices = indices[: len(frames)]

        given = Box(tuple(box_to_normalized(item.box, info.size).tolist())) if item.box is not None else None
        box = self.grounder.ground(frames, item.object_prompt, given)[0]
        mask = self.segmenter.segment(frames[0], box) if self.segmenter else None
        if mask is not None and mask.any():
            queries = grid_in_mask(mask, cfg.grid_size**2)
        else:
            queries = grid_in_box(box.xyxy, cfg.grid_size)
        tracks, visibility = self.tracker.track(frames, queries)
        moving = moving_mask(tracks, visibility, cfg.moving_threshold_px)
        arrays: dict[str, np.ndarray] = {"moving": moving}
        if cfg.resample_frames:
            resampled, resampled_vis, times = resample_tracks(tracks, visibility, cfg.resample_frames)
            arrays.update(
                tracks_resampled=resampled, visibility_resampled=resampled_vis, resampled_times=times
            )
        if mask is not None:
            arrays["object_mask"] = mask
        fps = info.fps / cfg.stride
        episode = Episode(
            frames=frames,
            tracks=tracks,
            visibility=visibility,
            queries=queries,
            task=item.task,
            fps=fps,
            source=item.video if item.is_url else str(Path(item.video).resolve()),
            frame_indices=indices,
            object_prompt=item.object_prompt,
            bbox=list(box.xyxy),
            arrays=arrays,
            attrs={
                "tracker": cfg.tracker,
                "grounder": cfg.grounder,
                "box_score": box.score,
                "video_size": list(info.size),
                "ingest_config": to_dict(cfg),
            },
        )
        if not self.writer.write(name, episode):
            return IngestResult(name, item.video, "skipped")
        overlay_path = None
        if overlay:
            overlay_path = str(self._overlay(video, indices, info.size, tracks, visibility, fps, name))
        return IngestResult(
            name,
            item.video,
            "written",
            num_frames=len(frames),
            num_points=len(queries),
            moving_fraction=float(moving.mean()),
            box=list(box.xyxy),
            overlay=overlay_path,
            seconds=time.perf_counter() - started,
        )

    def _overlay(self, video, indices, video_size, tracks, visibility, fps, name) -> Path:
        """Re-read the frames at display size (the stored ones are squashed to frame_size) and draw."""
        cfg = self.config
        height = cfg.overlay_height
        width = int(round(height * video_size[0] / video_size[1] / 2)) * 2
        frames = np.stack(list(iter_video(video, indices, size=(width, height), backend=cfg.video_backend)))
        path = self.out_dir / "overlays" / f"{name}.mp4"
        return write_overlay(path, frames, tracks, visibility, fps, cfg.overlay_trail)


# ----------------------------------------------------------------------------- batches
_WORKER: Ingestor | None = None


def _init_worker(config: IngestConfig, out_dir: str) -> None:
    global _WORKER
    _WORKER = Ingestor(config, out_dir)


def _ingest_one(args: tuple[VideoItem, bool]) -> IngestResult:
    item, overlay = args
    name = item.name or episode_name_for(item.video)
    started = time.perf_counter()
    try:
        assert _WORKER is not None
        return _WORKER.ingest(item, overlay)
    except Exception as err:  # one bad video is a row in the summary, never the end of the batch
        reason = "".join(traceback.format_exception_only(type(err), err)).strip().splitlines()[-1]
        return IngestResult(name, item.video, "failed", reason=reason, seconds=time.perf_counter() - started)


def ingest_batch(
    items: list[VideoItem], config: IngestConfig, out_dir: str | Path, workers: int = 1, progress: bool = True
) -> list[IngestResult]:
    """Ingest every item (in ``workers`` processes); results come back in input order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _init_worker(config, str(out_dir))  # fails here, once, on a bad option or missing weights
    save_config(config, out_dir / "ingest_config.yaml")
    overlay = config.overlay if config.overlay is not None else len(items) <= config.overlay_auto_limit
    jobs = [(item, overlay) for item in items]
    bar = tqdm(total=len(jobs), desc="ingest", unit="video", disable=not progress)
    results: list[IngestResult] = []
    for result in _map(jobs, config, str(out_dir), workers):
        results.append(result)
        bar.update()
        bar.set_postfix_str(f"{result.name}: {result.status}")
    bar.close()
    return results  # imap keeps the input order


def _map(jobs: list, config: IngestConfig, out_dir: str, workers: int) -> Iterator[IngestResult]:
    if workers <= 1:
        yield from map(_ingest_one, jobs)
        return
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(config, out_dir))
    try:
        yield from pool.imap(_ingest_one, jobs)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def summary_table(results: list[IngestResult], bad_inputs: list[Any] = ()) -> str:
    lines = [f"{'episode':<28}{'status':<9}{'frames':>7}{'points':>7}{'moving':>8}{'seconds':>9}  note"]
    for r in results:
        note = r.reason if r.status == "failed" else (r.overlay or "")
        lines.append(
            f"{r.name[:27]:<28}{r.status:<9}{r.num_frames:>7}{r.num_points:>7}"
            f"{r.moving_fraction:>8.0%}{r.seconds:>9.1f}  {note}"
        )
    for bad in bad_inputs:
        lines.append(f"{str(bad.source)[:27]:<28}{'failed':<9}{'':>7}{'':>7}{'':>8}{'':>9}  {bad.reason}")
    done = sum(r.written for r in results)
    failed = sum(r.status == "failed" for r in results) + len(bad_inputs)
    skipped = sum(r.status == "skipped" for r in results)
    frames = sum(r.num_frames for r in results)
    lines.append(f"{done} written, {skipped} skipped, {failed} failed; {frames} frames")
    return "\n".join(lines)


def write_summary(
    out_dir: str | Path, results: list[IngestResult], bad_inputs: list[Any], wall: float
) -> Path:
    path = Path(out_dir) / "summary.json"
    payload = {
        "wall_seconds": round(wall, 2),
        "videos": len(results) + len(bad_inputs),
        "written": sum(r.written for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "failed": sum(r.status == "failed" for r in results) + len(bad_inputs),
        "frames": sum(r.num_frames for r in results),
        "episodes": [asdict(r) for r in results],
        "bad_inputs": [{"source": b.source, "reason": b.reason} for b in bad_inputs],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
