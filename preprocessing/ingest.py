"""Ingest videos into object flow: resolve → (download) → read → ground → (segment) → track → store.

:meth:`Ingestor.ingest` handles one video and raises a clear error for a bad one; :func:`ingest_batch` runs
many in a worker pool, skips finished episodes, reports failures in the summary and never stops for one
bad video. Models (grounder, segmenter, tracker) are built once per worker process.

Every item gets its own episode name before any work (:func:`assign_names`), and an episode that exists is
"already done" only when it was made from the same source (and clip); anything else is a conflict reported
for that item. An ``--out`` folder keeps one config (:func:`check_stored_config`).

Frames are read with :func:`~im2flow2act.preprocessing.video.decode_video` under ``IngestConfig.decode``:
a video under two frames fails, a long one is subsampled to a cap and a truncated one is kept but flagged,
in the episode's attrs and in the summary's note column.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr
from tqdm import tqdm

from im2flow2act.core.config import ConfigError, save_config, to_dict
from im2flow2act.core.processes import ExecutorConfig, pool_map
from im2flow2act.preprocessing.dataset import Episode, FlowDatasetWriter
from im2flow2act.preprocessing.download import DownloadConfig, fetch, forget
from im2flow2act.preprocessing.drift import DriftConfig, mark_drift, track_quality
from im2flow2act.preprocessing.grounding import GROUNDERS, Box
from im2flow2act.preprocessing.segmentation import SEGMENTERS
from im2flow2act.preprocessing.sources import VideoItem, check_episode_name, episode_name_for
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import (
    box_to_normalized,
    grid_in_box,
    grid_in_mask,
    moving_mask,
    resample_tracks,
)
from im2flow2act.preprocessing.video import (
    DecodeConfig,
    DecodedVideo,
    VideoError,
    VideoInfo,
    decode_video,
    frame_indices,
    iter_video,
    probe_video,
)
from im2flow2act.preprocessing.visualize import write_overlay


@dataclass
class IngestConfig:
    frame_size: tuple[int, int] = (256, 256)
    """(width, height) frames are resized to for grounding, tracking and storage (the reference's 256×256)."""
    grid_size: int = 32
    """Queries: a grid_size × grid_size grid in the object box (32 → 1024 points), or as many in the mask."""
    grounder: str = "auto"
    """How the object is found: auto (the input's box when it has one, else hand-object — motion when the
    palm detector is not installed), manifest (a given box only), hand-object, motion, grounding-dino,
    owlv2."""
    grounder_args: dict[str, Any] = field(default_factory=dict)
    segmenter: str | None = None
    """Optional mask inside the box: sam (query points then lie on the object only)."""
    segmenter_args: dict[str, Any] = field(default_factory=dict)
    tracker: str = "object-lk"
    """How the points are tracked: object-lk (LK held together by the object's motion; no weights), lk,
    cotracker3 (weights), … (preprocessing/trackers)."""
    tracker_args: dict[str, Any] = field(default_factory=dict)
    """Options of the chosen tracker's config (e.g. win_size for lk)."""
    moving_threshold_px: float = 2.5
    """A point whose visible positions span more than this (pixels of a 256 frame) is marked moving."""
    drift: DriftConfig = field(default_factory=DriftConfig)
    """After tracking, a point whose patch no longer matches its query frame's is made not visible
    (preprocessing/drift.py); the episode records how many points stayed consistent to the end and the
    summary warns below drift.warn_kept_to_end."""
    resample_frames: int = 32
    """Also store tracks resampled uniformly to this many frames (0 = don't); full-rate tracks are kept."""
    start: float = 0.0
    """Seconds into the video where the episode starts (a manifest's start column overrides it)."""
    end: float | None = None
    """Seconds where it ends (exclusive); None = the end of the video."""
    stride: int = 1
    """Keep every stride-th frame."""
    max_frames: int | None = None
    """Stop after this many kept frames (None = no limit; decode.max_frames still caps a long video)."""
    video_backend: str = "auto"
    overlay: bool | None = None
    """Write an overlay mp4 per episode; None = only for small batches (≤ overlay_auto_limit videos)."""
    overlay_auto_limit: int = 20
    overlay_height: int = 360
    """Overlay videos are drawn on frames of this height at the video's own aspect ratio."""
    overlay_trail: int = 8
    download: DownloadConfig = field(default_factory=DownloadConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    """Limits on reading a video: min_frames (2), max_frames held in memory (1024, subsampled beyond),
    on_truncated (flag | error)."""

    def __post_init__(self) -> None:
        """Out-of-range values fail when the config is read, naming the key, not per video deep inside."""
        for problem in _config_problems(self):
            raise ValueError(problem)


VIDEO_BACKENDS = ("auto", "decord", "pyav")
MAX_FRAME_SIDE = 4096
MAX_GRID_SIZE = 256


def _config_problems(c: IngestConfig) -> Iterator[str]:
    size = tuple(c.frame_size) if isinstance(c.frame_size, (list, tuple)) else ()
    if len(size) != 2 or not all(_is_int(v) and 8 <= v <= MAX_FRAME_SIDE for v in size):
        allowed = f"each an integer from 8 to {MAX_FRAME_SIDE}"
        yield f"frame_size must be [width, height], {allowed}, got {c.frame_size!r}"
    checks = [
        (
            "grid_size",
            c.grid_size,
            _is_int(c.grid_size) and 1 <= c.grid_size <= MAX_GRID_SIZE,
            f"an integer from 1 to {MAX_GRID_SIZE}",
        ),
        ("stride", c.stride, _is_int(c.stride) and c.stride >= 1, "an integer of at least 1"),
        (
            "max_frames",
            c.max_frames,
            c.max_frames is None or (_is_int(c.max_frames) and c.max_frames >= 2),
            "null or an integer of at least 2 (tracking needs two frames)",
        ),
        (
            "resample_frames",
            c.resample_frames,
            _is_int(c.resample_frames) and (c.resample_frames == 0 or c.resample_frames >= 2),
            "0 (off) or an integer of at least 2",
        ),
        ("start", c.start, c.start >= 0, "a number of seconds, at least 0"),
        (
            "end",
            c.end,
            c.end is None or c.end > c.start,
            f"null or a number of seconds above start ({c.start})",
        ),
        ("moving_threshold_px", c.moving_threshold_px, c.moving_threshold_px >= 0, "a number of at least 0"),
        ("video_backend", c.video_backend, c.video_backend in VIDEO_BACKENDS, " | ".join(VIDEO_BACKENDS)),
        (
            "overlay_auto_limit",
            c.overlay_auto_limit,
            _is_int(c.overlay_auto_limit) and c.overlay_auto_limit >= 0,
            "an integer of at least 0",
        ),
        (
            "overlay_height",
            c.overlay_height,
            _is_int(c.overlay_height)
            and 16 <= c.overlay_height <= MAX_FRAME_SIDE
            and c.overlay_height % 2 == 0,
            f"an even integer from 16 to {MAX_FRAME_SIDE} (video encoders need even sizes)",
        ),
        (
            "overlay_trail",
            c.overlay_trail,
            _is_int(c.overlay_trail) and c.overlay_trail >= 0,
            "an integer of at least 0",
        ),
        ("download.timeout_s", c.download.timeout_s, c.download.timeout_s > 0, "a number of seconds above 0"),
        ("download.max_mb", c.download.max_mb, c.download.max_mb > 0, "a number of megabytes above 0"),
        (
            "download.retries",
            c.download.retries,
            _is_int(c.download.retries) and c.download.retries >= 0,
            "an integer of at least 0",
        ),
        (
            "download.backoff_s",
            c.download.backoff_s,
            c.download.backoff_s >= 0,
            "a number of seconds, at least 0",
        ),
    ]
    for key, value, ok, allowed in checks:
        if not ok:
            yield f"{key} must be {allowed}, got {value!r}"
    least = c.decode.min_frames
    if _is_int(c.max_frames) and c.max_frames >= 2 and _is_int(least) and c.max_frames < least:
        yield f"max_frames must be at least decode.min_frames ({least}), got {c.max_frames}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


DATA_NEUTRAL_KEYS = ("overlay", "overlay_auto_limit", "overlay_height", "overlay_trail", "download")
"""Config keys a rerun into the same --out may change: they shape the overlay videos and how files are
fetched, never an episode's frames, points or tracks. Every other key must match the stored config."""


class NameConflict(ValueError):
    """An episode name is already used by a different source (or clip) in the dataset or the batch."""


@dataclass
class IngestResult:
    name: str
    source: str
    status: str
    """"written", "skipped" (in the dataset from the same source, or a duplicate input) or "failed"."""
    reason: str = ""
    num_frames: int = 0
    num_points: int = 0
    moving_fraction: float = 0.0
    kept_to_end: float = 0.0
    """Share of the points still visible (tracked and consistent with their first look) in the last frame."""
    drifted: float = 0.0
    """Share of the points the drift check took away where the tracker still called them visible."""
    box: list[float] | None = None
    overlay: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    """What the read noticed about a written video (truncated, subsampled to the frame cap)."""
    warnings: list[str] = field(default_factory=list)
    """What the tracking noticed: few points consistent to the end (the flow is mostly not observed)."""

    @property
    def written(self) -> bool:
        return self.status == "written"


def stored_identity(root: Path, name: str) -> tuple[str, tuple] | None:
    """(source, segment) of the stored episode ``name``, or None when there is none."""
    if not (root / name / "zarr.json").is_file():
        return None
    attrs = zarr.open_group(str(root / name), mode="r").attrs
    return str(attrs.get("source", "")), tuple(attrs.get("segment") or (None, None))


def _describe(identity: tuple[str, tuple]) -> str:
    source, (start, end) = identity
    return source if (start, end) == (None, None) else f"{source} [{start}, {end}] s"


def assign_names(items: list[VideoItem], root: str | Path) -> list[str | IngestResult]:
    """Per item, in order, its episode name, or the result that replaces ingesting it (duplicate, conflict).

    Given names are reserved first, then each unnamed item takes the first of its :meth:`auto_names` that is
    free or already holds the same source; reruns therefore land on the same names and skip.
    """
    root = Path(root)
    taken: dict[str, VideoItem] = {}
    out: list[str | IngestResult | None] = [None] * len(items)
    order = [i for i, it in enumerate(items) if it.name] + [i for i, it in enumerate(items) if not it.name]
    for i in order:
        item = items[i]
        try:
            candidates = [check_episode_name(item.name)] if item.name else item.auto_names()
        except ValueError as err:  # a name set in code, past the manifest's check
            out[i] = IngestResult(str(item.name), item.video, "failed", reason=str(err))
            continue
        out[i] = _pick_name(item, candidates, taken, root)
        if isinstance(out[i], str):
            taken[out[i]] = item
    return out  # type: ignore[return-value]


def _pick_name(item: VideoItem, candidates: list[str], taken: dict[str, VideoItem], root: Path):
    for name in candidates:
        other = taken.get(name)
        if other is not None and other.identity == item.identity:
            return _duplicate(item, other, name)
    for name in candidates:
        if name not in taken and stored_identity(root, name) == item.identity:
            return name  # already written from this source: the worker skips it
    for name in candidates:
        if name not in taken and stored_identity(root, name) is None:
            return name
    holders = [
        f"{n!r} holds {_describe(stored_identity(root, n))}"
        if n not in taken
        else f"{n!r} is {taken[n].origin}"
        for n in candidates
    ]
    reason = (
        f"name conflict: {'; '.join(holders)}, not {_describe(item.identity)}: give this input its own name"
    )
    return IngestResult(candidates[0], item.video, "failed", reason=reason)


def _duplicate(item: VideoItem, other: VideoItem, name: str) -> IngestResult:
    labels = ("task", "object_prompt", "box")
    differs = [k for k in labels if getattr(item, k) != getattr(other, k)]
    if differs:
        reason = (
            f"name conflict: same video as {other.origin} (episode {name!r}) but a different "
            f"{'/'.join(differs)}: give each its own name"
        )
        return IngestResult(name, item.video, "failed", reason=reason)
    return IngestResult(name, item.video, "skipped", reason=f"same video as {other.origin}, ingested once")


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
        name = item.name or _single_name(item, self.writer.root)
        if self._already_written(name, item):
            return IngestResult(name, item.video, "skipped")
        video = (
            fetch(item.video, self.out_dir / "downloads", cfg.download) if item.is_url else Path(item.video)
        )
        d = self._decode(item, video)
        frames, indices, info = d.frames, d.indices, d.info

        given = Box(tuple(box_to_normalized(item.box, info.size).tolist())) if item.box is not None else None
        box = self.grounder.ground(frames, item.object_prompt, given)[0]
        mask = self.segmenter.segment(frames[0], box) if self.segmenter else None
        if mask is not None and mask.any():
            queries = grid_in_mask(mask, cfg.grid_size**2)
        else:
            queries = grid_in_box(box.xyxy, cfg.grid_size)
        tracks, tracker_visibility = self.tracker.track(frames, queries)
        visibility = mark_drift(frames, tracks, tracker_visibility, queries, cfg.drift)
        quality = track_quality(visibility, tracker_visibility)
        warnings = []
        if cfg.drift.enabled and quality["kept_to_end"] < cfg.drift.warn_kept_to_end:
            warnings.append(
                f"low track quality: {quality['kept_to_end']:.0%} of points consistent to the end "
                f"({quality['drifted']:.0%} drifted)"
            )
        moving = moving_mask(tracks, visibility, cfg.moving_threshold_px)
        arrays: dict[str, np.ndarray] = {"moving": moving}
        if cfg.resample_frames:
            resampled, resampled_vis, times = resample_tracks(tracks, visibility, cfg.resample_frames)
            arrays.update(
                tracks_resampled=resampled, visibility_resampled=resampled_vis, resampled_times=times
            )
        if mask is not None:
            arrays["object_mask"] = mask
        fps = d.fps  # the kept frames' rate: the stride and any subsampling to the frame cap
        episode = Episode(
            frames=frames,
            tracks=tracks,
            visibility=visibility,
            queries=queries,
            task=item.task,
            fps=fps,
            source=item.source,
            frame_indices=indices,
            object_prompt=item.object_prompt,
            bbox=list(box.xyxy),
            arrays=arrays,
            attrs={
                "tracker": cfg.tracker,
                "grounder": getattr(self.grounder, "name", cfg.grounder),
                "box_score": box.score,
                "track_quality": quality,
                "video_size": list(info.size),
                "segment": item.segment,
                "ingest_config": to_dict(cfg),
                **d.attrs(),
            },
        )
        if not self.writer.write(name, episode):  # another process wrote it meanwhile
            self._already_written(name, item)
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
            kept_to_end=quality["kept_to_end"],
            drifted=quality["drifted"],
            box=list(box.xyxy),
            overlay=overlay_path,
            seconds=time.perf_counter() - started,
            notes=list(d.notes),
            warnings=warnings,
        )

    def _decode(self, item: VideoItem, video: Path) -> DecodedVideo:
        """The item's frames under ``config.decode``; a download that fails to decode is dropped from the
        cache, so the next run fetches it again instead of failing on the same bytes."""
        cfg = self.config
        try:
            info = probe_video(video)
            indices = _clip_indices(item, info, cfg)
            return decode_video(
                video, indices, size=cfg.frame_size, backend=cfg.video_backend, config=cfg.decode, info=info
            )
        except VideoError:
            if item.is_url:
                forget(item.video, self.out_dir / "downloads")
            raise

    def _already_written(self, name: str, item: VideoItem) -> bool:
        """True when ``name`` holds this item's episode; NameConflict when it holds another source's."""
        check_episode_name(name)
        stored = stored_identity(self.writer.root, name)
        if stored is None:
            return False
        if stored != item.identity:
            raise NameConflict(
                f"name conflict: episode {name!r} holds {_describe(stored)}, not {_describe(item.identity)}"
            )
        return True

    def _overlay(self, video, indices, video_size, tracks, visibility, fps, name) -> Path:
        """Re-read the frames at display size (the stored ones are squashed to frame_size) and draw."""
        cfg = self.config
        height = cfg.overlay_height
        width = int(round(height * video_size[0] / video_size[1] / 2)) * 2
        frames = np.stack(list(iter_video(video, indices, size=(width, height), backend=cfg.video_backend)))
        path = self.out_dir / "overlays" / f"{name}.mp4"
        return write_overlay(path, frames, tracks, visibility, fps, cfg.overlay_trail)


def _clip_indices(item: VideoItem, info: VideoInfo, cfg: IngestConfig) -> np.ndarray:
    """Source frame indices of the item's clip: its (or the config's) start/end, stride and max_frames."""
    start = cfg.start if item.start is None else item.start
    end = cfg.end if item.end is None else item.end
    indices = frame_indices(
        info.num_frames,
        int(round(start * info.fps)),
        None if end is None else int(round(end * info.fps)),
        cfg.stride,
    )
    return indices if cfg.max_frames is None else indices[: cfg.max_frames]


def _single_name(item: VideoItem, root: Path) -> str:
    """The name :func:`assign_names` would give ``item`` alone (for direct :meth:`Ingestor.ingest` calls)."""
    picked = assign_names([item], root)[0]
    if isinstance(picked, IngestResult):
        raise NameConflict(picked.reason)
    return picked


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
    items: list[VideoItem],
    config: IngestConfig,
    out_dir: str | Path,
    workers: int = 1,
    progress: bool = True,
    executor: ExecutorConfig | None = None,
) -> list[IngestResult]:
    """Ingest every item (in ``workers`` processes, or Ray actors with a ``ray`` executor: then ``out_dir``
    and the videos must be paths every node sees); results come back in input order, one per item.

    Raises ConfigError before any work when ``workers`` < 1 or ``out_dir`` holds episodes made with a
    different config (:func:`check_stored_config`).
    """
    if not _is_int(workers) or workers < 1:
        raise ConfigError(f"workers must be an integer of at least 1, got {workers!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = check_stored_config(config, out_dir)
    _init_worker(config, str(out_dir))  # fails here, once, on a bad option or missing weights
    if record:
        save_config(config, out_dir / "ingest_config.yaml")
    assert _WORKER is not None
    names = assign_names(items, _WORKER.writer.root)
    overlay = config.overlay if config.overlay is not None else len(items) <= config.overlay_auto_limit
    todo = [i for i, n in enumerate(names) if isinstance(n, str)]
    jobs = [(replace(items[i], name=names[i]), overlay) for i in todo]
    results: list[IngestResult | None] = [n if isinstance(n, IngestResult) else None for n in names]
    bar = tqdm(total=len(items), desc="ingest", unit="video", disable=not progress)
    bar.update(len(items) - len(jobs))
    done = pool_map(_ingest_one, jobs, workers, _init_worker, (config, str(out_dir)), executor=executor)
    for i, result in zip(todo, done, strict=True):
        results[i] = result
        bar.update()
        bar.set_postfix_str(f"{result.name}: {result.status}")
    bar.close()
    return results  # type: ignore[return-value]  # imap keeps the input order


def check_stored_config(config: IngestConfig, out_dir: Path) -> bool:
    """Whether ``ingest_config.yaml`` should be (re)written; ConfigError if ``out_dir`` holds other data.

    The record describes the episodes already there, so a rerun with a different value of any key but
    :data:`DATA_NEUTRAL_KEYS` is refused, naming the keys, and an existing record is never overwritten.
    With no episodes yet there is nothing to describe and the record is written afresh.
    """
    path = out_dir / "ingest_config.yaml"
    root = out_dir / "dataset.zarr"
    names = FlowDatasetWriter(root, kind="video").names() if (root / "zarr.json").is_file() else []
    if not names:
        return True
    if path.is_file():
        try:
            stored, where = yaml.safe_load(path.read_text()) or {}, str(path)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML ({err}); it records how {root} was made") from err
    else:
        stored = zarr.open_group(str(root / names[0]), mode="r").attrs.get("ingest_config") or {}
        where = f"episode {names[0]!r} of {root}"
    if not isinstance(stored, dict):
        raise ConfigError(f"{where} must hold a mapping of config keys; it records how {root} was made")
    differ = config_differences(stored, config)
    if differ:
        raise ConfigError(
            f"{out_dir} holds {len(names)} episode(s) ingested with a different config ({where}): "
            f"{'; '.join(differ)}. Use another --out, or the stored values for these keys"
        )
    return not path.is_file()


def config_differences(stored: dict[str, Any], config: IngestConfig) -> list[str]:
    """``key: stored there, current now`` for each data key that differs, nested sections by their own keys.

    A key the record lacks (written before the key existed, e.g. ``decode``) counts as its default, so an
    old record matches a current default config and still differs from a changed one.
    """
    defaults = to_dict(IngestConfig())
    now = to_dict(config)
    sections = {f.name for f in fields(IngestConfig) if is_dataclass(f.default_factory)}
    differ = []
    for key, value in now.items():
        if key in DATA_NEUTRAL_KEYS:
            continue
        was = stored.get(key, defaults[key])
        if key in sections and isinstance(was, dict):
            was = {**defaults[key], **was}
            differ += [
                f"{key}.{k}: {was.get(k)!r} there, {v!r} now" for k, v in value.items() if was.get(k) != v
            ]
        elif was != value:
            differ.append(f"{key}: {was!r} there, {value!r} now")
    return differ


def summary_table(results: list[IngestResult], bad_inputs: list[Any] = ()) -> str:
    head = f"{'episode':<28}{'status':<9}{'frames':>7}{'points':>7}{'moving':>8}{'kept':>6}{'seconds':>9}"
    lines = [f"{head}  note"]
    for r in results:
        note = "; ".join(text for text in (r.reason, *r.warnings, *r.notes, r.overlay) if text)
        lines.append(
            f"{r.name[:27]:<28}{r.status:<9}{r.num_frames:>7}{r.num_points:>7}"
            f"{r.moving_fraction:>8.0%}{r.kept_to_end if r.written else 0:>6.0%}{r.seconds:>9.1f}  {note}"
        )
    for bad in bad_inputs:
        lines.append(
            f"{str(bad.source)[:27]:<28}{'failed':<9}{'':>7}{'':>7}{'':>8}{'':>6}{'':>9}  {bad.reason}"
        )
    done = sum(r.written for r in results)
    failed = sum(r.status == "failed" for r in results) + len(bad_inputs)
    skipped = sum(r.status == "skipped" for r in results)
    frames = sum(r.num_frames for r in results)
    noted = sum(bool(r.notes) for r in results)
    flagged = f"; {noted} with decode notes (truncated or subsampled: see note)" if noted else ""
    warned = sum(bool(r.warnings) for r in results)
    if warned:
        flagged += f"; {warned} with low track quality (see note)"
    lines.append(f"{done} written, {skipped} skipped, {failed} failed; {frames} frames{flagged}")
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
        "with_notes": sum(bool(r.notes) for r in results),
        "low_track_quality": sum(bool(r.warnings) for r in results),
        "episodes": [asdict(r) for r in results],
        "bad_inputs": [{"source": b.source, "reason": b.reason} for b in bad_inputs],
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
