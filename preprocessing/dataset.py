"""The flow dataset: one zarr store for human videos, sim demonstrations and robot play (docs/design.md §5).

Layout of a store (a directory)::

    dataset.zarr/                 root group, attrs: schema_version, kind, created_with
      episode_000000/             one group per episode
        frames      uint8   (T, H, W, 3)   one compressed chunk per frame
        tracks      float32 (T, N, 2)      normalised (x, y), see im2flow2act.preprocessing.tracks
        visibility  bool    (T, N)
        queries     float32 (N, 3)         (t, x, y)
        [action, proprio, qpos, qvel, depth, segmentation: (T, ...); moving, robot: (N,)]
        attrs: task, object_prompt, bbox, fps, source, frame_indices (+ any extra attrs)

Episodes are written atomically: into a hidden temporary group that is renamed into place only when
complete. A write that fails (a full disk) removes its temporary group before raising, so the space is
free for the next episode; a killed run's temporary group is removed by the next writer, once its
process is gone. A rerun skips the episodes that exist. An episode needs at least two frames: one frame
holds no motion to learn a flow from. Readers validate the root on open and each episode on
access, and fail with the dataset path, the episode and the problem.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from im2flow2act.preprocessing.tracks import TrackShapeError, validate_tracks

SCHEMA_VERSION = 1
Kind = Literal["video", "sim_demo", "play"]
KINDS: tuple[str, ...] = ("video", "sim_demo", "play")
REQUIRED_ARRAYS = ("frames", "tracks", "visibility", "queries")
REQUIRED_ATTRS = ("task", "object_prompt", "bbox", "fps", "source", "frame_indices")
TIME_ARRAYS = ("action", "proprio", "qpos", "qvel", "depth", "segmentation")
"""Optional arrays whose first axis is time (T, ...)."""
POINT_MASKS = ("moving", "robot")
"""Optional per-point boolean masks (N,)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_TMP_PREFIX = ".tmp-"
_WRITE_BATCH = 16
MIN_EPISODE_FRAMES = 2
"""One frame holds no motion: a flow needs at least one displacement."""
_ACTIVE: set[str] = set()
"""Temporary groups this process is writing now (another writer in it must not remove them)."""
_ACTIVE_LOCK = threading.Lock()


class DatasetError(ValueError):
    """A flow dataset (or one of its episodes) that cannot be used; the message says where and why."""

    def __init__(self, where: str | Path, reason: str) -> None:
        self.where = str(where)
        self.reason = reason
        super().__init__(f"flow dataset {self.where}: {reason}")


class DatasetVersionError(DatasetError):
    """The store was written with another schema version."""


@dataclass
class Episode:
    """One episode in memory: what a writer takes and ``EpisodeView.load()`` returns.

    ``frames`` may also be an iterable of ``(H, W, 3)`` frames (e.g. a generator straight from a
    decoder or a simulator), written as they come; its length must equal ``tracks.shape[0]``.
    """

    frames: np.ndarray | Iterable[np.ndarray]
    tracks: np.ndarray
    visibility: np.ndarray
    queries: np.ndarray
    task: str
    fps: float
    source: str
    frame_indices: list[int] | np.ndarray
    object_prompt: str = ""
    bbox: list[float] | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.tracks.shape[1])


@dataclass(frozen=True)
class EpisodeSummary:
    """One row of the dataset index."""

    name: str
    task: str
    num_frames: int
    num_points: int
    source: str


def _blosc() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


class FlowDatasetWriter:
    """Creates (or reopens) a store and adds episodes atomically."""

    def __init__(self, root: str | Path, kind: Kind = "video", **root_attrs: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"dataset kind must be one of {KINDS}, got {kind!r}")
        self.root = Path(root)
        if _is_store(self.root):
            _check_root(self.root, expected_kind=kind)
        else:
            if self.root.exists() and any(self.root.iterdir()):
                raise DatasetError(self.root, "exists and is not a flow dataset (refusing to write into it)")
            group = zarr.open_group(str(self.root), mode="w")
            group.attrs.update(
                {"schema_version": SCHEMA_VERSION, "kind": kind, "created_with": "im2flow2act", **root_attrs}
            )
        self.kind = kind
        _remove_stale_temporaries(self.root)

    def has(self, name: str) -> bool:
        return (self.root / name / "zarr.json").is_file()

    def names(self) -> list[str]:
        return _episode_names(self.root)

    def next_name(self) -> str:
        """``episode_NNNNNN`` after the highest such name in the store."""
        numbers = [int(m.group(1)) for n in self.names() if (m := re.fullmatch(r"episode_(\d+)", n))]
        return f"episode_{max(numbers, default=-1) + 1:06d}"

    def write(self, name: str, episode: Episode, overwrite: bool = False) -> bool:
        """Write ``episode`` under ``name``; returns False (and writes nothing) if it already exists."""
        if not _NAME.match(name):
            raise ValueError(f"episode name {name!r} must be letters, digits, '_', '.', '-'")
        if self.has(name) and not overwrite:
            return False
        _check_episode(episode, where=self.root / name)
        _remove_stale_temporaries(self.root)  # e.g. a worker killed earlier in this batch
        tmp = self.root / f"{_TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with _ACTIVE_LOCK:
            _ACTIVE.add(tmp.name)
        try:
            _write_group(tmp, episode)
            final = self.root / name
            if overwrite and final.exists():
                shutil.rmtree(final)
            try:
                os.rename(tmp, final)
            except OSError:  # another worker finished the same episode first
                if self.has(name):
                    return False
                raise
        finally:
            _discard(tmp)
            with _ACTIVE_LOCK:
                _ACTIVE.discard(tmp.name)
        return True


def _discard(tmp: Path, quiet_s: float = 0.2, timeout_s: float = 10.0) -> None:
    """Remove a temporary group for good, also after a failed write.

    When one chunk write fails (ENOSPC), zarr raises while its other chunk writes of the same call still
    run and recreate folders after a plain rmtree; so wait for zarr's pending writes, then remove until
    the folder stays gone.
    """
    if not tmp.exists():
        return
    _wait_for_zarr_writes(timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shutil.rmtree(tmp, ignore_errors=True)
        time.sleep(quiet_s)
        if not tmp.exists():
            return


def _wait_for_zarr_writes(timeout_s: float) -> None:
    """Let the I/O tasks zarr still runs on its event loop finish (they outlive a failed call)."""
    import asyncio

    from zarr.core.sync import sync

    async def drain() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    sync(drain())


def _write_group(path: Path, ep: Episode) -> None:
    group = zarr.open_group(str(path), mode="w")
    t, n = ep.num_frames, ep.num_points
    _write_frames(group, path, ep.frames, t)
    group.create_array("tracks", data=ep.tracks.astype(np.float32), compressors=_blosc())
    group.create_array("visibility", data=ep.visibility.astype(bool), compressors=_blosc())
    group.create_array("queries", data=ep.queries.astype(np.float32), compressors=_blosc())
    for key, value in ep.arrays.items():
        value = np.asarray(value)
        chunks = (1, *value.shape[1:]) if key in ("depth", "segmentation") else None
        group.create_array(key, data=value, chunks=chunks or "auto", compressors=_blosc())
    group.attrs.update(
        {
            "task": ep.task,
            "object_prompt": ep.object_prompt,
            "bbox": None if ep.bbox is None else [float(v) for v in ep.bbox],
            "fps": float(ep.fps),
            "source": str(ep.source),
            "frame_indices": [int(i) for i in ep.frame_indices],
            "num_frames": t,
            "num_points": n,
            **_plain_attrs(ep.attrs),
        }
    )


def _write_frames(group: zarr.Group, where: Path, frames: np.ndarray | Iterable[np.ndarray], t: int) -> None:
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise DatasetError(where, "episode has no frames")
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise DatasetError(
            where, f"frames must be uint8 (T, H, W, 3); a frame is {first.shape} {first.dtype}"
        )
    h, w = first.shape[:2]
    arr = group.create_array(
        "frames", shape=(t, h, w, 3), dtype=np.uint8, chunks=(1, h, w, 3), compressors=_blosc()
    )
    batch, start, count = [first], 0, 1
    for frame in it:
        if count >= t:
            raise DatasetError(where, f"more frames than the {t} track steps")
        batch.append(np.asarray(frame))
        count += 1
        if len(batch) == _WRITE_BATCH:
            arr[start : start + len(batch)] = np.stack(batch)
            start += len(batch)
            batch = []
    if batch:
        arr[start : start + len(batch)] = np.stack(batch)
    if count != t:
        raise DatasetError(where, f"{count} frames for {t} track steps")


def _plain_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _check_episode(ep: Episode, where: Path) -> None:
    if ep.num_frames < MIN_EPISODE_FRAMES:
        raise DatasetError(
            where,
            f"episode from {ep.source} has {ep.num_frames} frame(s); at least {MIN_EPISODE_FRAMES} are "
            "needed (one frame holds no motion)",
        )
    try:
        validate_tracks(np.asarray(ep.tracks), np.asarray(ep.visibility), np.asarray(ep.queries))
    except TrackShapeError as err:
        raise DatasetError(where, str(err)) from err
    if len(ep.frame_indices) != ep.num_frames:
        raise DatasetError(
            where, f"frame_indices has {len(ep.frame_indices)} entries for {ep.num_frames} frames"
        )
    if isinstance(ep.frames, np.ndarray) and ep.frames.shape[:1] != (ep.num_frames,):
        raise DatasetError(where, f"frames {ep.frames.shape} do not match {ep.num_frames} track steps")
    _check_extra_shapes(
        {k: np.asarray(v).shape for k, v in ep.arrays.items()}, ep.num_frames, ep.num_points, where
    )


def _check_extra_shapes(shapes: dict[str, tuple[int, ...]], t: int, n: int, where: Path | str) -> None:
    for key, shape in shapes.items():
        if key in REQUIRED_ARRAYS:
            raise DatasetError(where, f"extra array {key!r} clashes with a required array")
        if key in TIME_ARRAYS and (len(shape) == 0 or shape[0] != t):
            raise DatasetError(where, f"{key} must have {t} steps in its first axis, got shape {shape}")
        if key in POINT_MASKS and shape != (n,):
            raise DatasetError(where, f"{key} must be a per-point mask of shape ({n},), got {shape}")


def _is_store(root: Path) -> bool:
    return (root / "zarr.json").is_file()


def _check_root(root: Path, expected_kind: str | None = None) -> dict[str, Any]:
    if not root.exists():
        raise DatasetError(root, "does not exist")
    if not _is_store(root):
        raise DatasetError(root, "is not a zarr flow dataset (no zarr.json at its root)")
    attrs = dict(zarr.open_group(str(root), mode="r").attrs)
    version = attrs.get("schema_version")
    if version is None:
        raise DatasetError(root, "has no schema_version attribute: not written by im2flow2act")
    if version != SCHEMA_VERSION:
        raise DatasetVersionError(
            root,
            f"schema version {version} but this im2flow2act reads version {SCHEMA_VERSION}; "
            "re-create the dataset with this version",
        )
    kind = attrs.get("kind")
    if kind not in KINDS:
        raise DatasetError(root, f"unknown dataset kind {kind!r} (expected one of {KINDS})")
    if expected_kind is not None and kind != expected_kind:
        raise DatasetError(root, f"is a {kind!r} dataset, expected {expected_kind!r}")
    return attrs


def _episode_names(root: Path) -> list[str]:
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(_TMP_PREFIX) and (p / "zarr.json").is_file()
    )


def _remove_stale_temporaries(root: Path) -> None:
    """Remove temporary episodes whose writing process is gone (an interrupted earlier run)."""
    for tmp in root.glob(f"{_TMP_PREFIX}*"):
        if _writer_gone(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _writer_gone(tmp: Path) -> bool:
    """True when no live process can still be writing ``tmp`` (its name carries the writer's pid).

    A pid can be reused (a rerun in a fresh container often gets the killed run's pid): a live process
    that started after the group was last changed is not its writer, and this process writes only
    the groups in ``_ACTIVE``.
    """
    match = re.search(r"-(\d+)-[0-9a-f]{8}$", tmp.name)
    if match is None:
        return True
    pid = int(match.group(1))
    if pid == os.getpid():
        with _ACTIVE_LOCK:
            return tmp.name not in _ACTIVE
    if not _process_alive(pid):
        return True
    started = _process_start_time(pid)
    try:
        changed = tmp.stat().st_mtime
    except FileNotFoundError:
        return False  # finished (renamed) meanwhile: nothing to remove
    return started is not None and started > changed + 2.0  # /proc's boot time has 1 s resolution


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), from Linux's /proc; None where that is unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line[:5] == "btime"
        )
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; the name may hold spaces
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None


class EpisodeView:
    """Lazy access to one stored episode; arrays are read only when asked for.

    ``view.frames`` is the zarr array itself, so ``view.frames[i]`` decodes one frame, not the episode.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.path = root / name
        self._group = zarr.open_group(str(self.path), mode="r")
        self.attrs: dict[str, Any] = dict(self._group.attrs)
        self._validate()

    def _validate(self) -> None:
        where = self.path
        keys = set(self.keys())
        for key in REQUIRED_ARRAYS:
            if key not in keys:
                raise DatasetError(where, f"missing required array {key!r}")
        for key in REQUIRED_ATTRS:
            if key not in self.attrs:
                raise DatasetError(where, f"missing required attribute {key!r}")
        frames, tracks = self._group["frames"], self._group["tracks"]
        vis, queries = self._group["visibility"], self._group["queries"]
        checks = [
            (frames.ndim == 4 and frames.shape[-1] == 3, f"frames must be (T, H, W, 3), got {frames.shape}"),
            (frames.dtype == np.uint8, f"frames must be uint8, got {frames.dtype}"),
            (tracks.ndim == 3 and tracks.shape[-1] == 2, f"tracks must be (T, N, 2), got {tracks.shape}"),
            (tracks.dtype == np.float32, f"tracks must be float32, got {tracks.dtype}"),
            (
                frames.shape[:1] == tracks.shape[:1],
                f"frames {frames.shape} and tracks {tracks.shape} disagree on T",
            ),
            (vis.shape == tracks.shape[:2], f"visibility {vis.shape} must be (T, N) = {tracks.shape[:2]}"),
            (vis.dtype == np.bool_, f"visibility must be bool, got {vis.dtype}"),
            (
                queries.shape == (tracks.shape[1], 3),
                f"queries {queries.shape} must be (N, 3) for N={tracks.shape[1]}",
            ),
            (queries.dtype == np.float32, f"queries must be float32, got {queries.dtype}"),
            (
                len(self.attrs["frame_indices"]) == tracks.shape[0],
                f"frame_indices has {len(self.attrs['frame_indices'])} entries for {tracks.shape[0]} frames",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise DatasetError(where, message)
        extras = {k: self._group[k].shape for k in keys - set(REQUIRED_ARRAYS)}
        _check_extra_shapes(extras, tracks.shape[0], tracks.shape[1], where)

    def keys(self) -> list[str]:
        return sorted(name for name, _ in self._group.arrays())

    @property
    def task(self) -> str:
        return str(self.attrs["task"])

    @property
    def num_frames(self) -> int:
        return int(self._group["tracks"].shape[0])

    @property
    def num_points(self) -> int:
        return int(self._group["tracks"].shape[1])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the stored frames."""
        shape = self._group["frames"].shape
        return (int(shape[2]), int(shape[1]))

    @property
    def frames(self) -> zarr.Array:
        return self._group["frames"]

    def frame(self, index: int) -> np.ndarray:
        return np.asarray(self._group["frames"][index])

    @property
    def tracks(self) -> np.ndarray:
        return np.asarray(self._group["tracks"][...])

    @property
    def visibility(self) -> np.ndarray:
        return np.asarray(self._group["visibility"][...])

    @property
    def queries(self) -> np.ndarray:
        return np.asarray(self._group["queries"][...])

    def array(self, key: str, index=Ellipsis) -> np.ndarray:
        """An array by name; ``index`` reads only part of it (``array("depth", 0)`` decodes one chunk)."""
        if key not in self.keys():
            raise DatasetError(self.path, f"no array {key!r}; it has {', '.join(self.keys())}")
        return np.asarray(self._group[key][index])

    def load(self) -> Episode:
        """The whole episode in memory."""
        required = {k: self.attrs[k] for k in REQUIRED_ATTRS}
        extra_attrs = {
            k: v for k, v in self.attrs.items() if k not in (*REQUIRED_ATTRS, "num_frames", "num_points")
        }
        return Episode(
            frames=np.asarray(self.frames[...]),
            tracks=self.tracks,
            visibility=self.visibility,
            queries=self.queries,
            arrays={k: self.array(k) for k in self.keys() if k not in REQUIRED_ARRAYS},
            attrs=extra_attrs,
            **required,
        )

    def summary(self) -> EpisodeSummary:
        return EpisodeSummary(
            self.name, self.task, self.num_frames, self.num_points, str(self.attrs["source"])
        )


class FlowDataset:
    """Read side: validated on open, random access by index or name, iteration, an index of tasks."""

    def __init__(self, root: str | Path, kind: Kind | None = None) -> None:
        self.root = Path(root)
        self.attrs = _check_root(self.root, expected_kind=kind)
        self.kind: str = self.attrs["kind"]
        self.names = _episode_names(self.root)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: int | str) -> EpisodeView:
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"no episode {key!r} in {self.root}")
            return EpisodeView(self.root, key)
        return EpisodeView(self.root, self.names[key])

    def __iter__(self) -> Iterator[EpisodeView]:
        return (EpisodeView(self.root, name) for name in self.names)

    def index(self) -> list[EpisodeSummary]:
        """Name, task text, frames, points and source of every episode (reads metadata only)."""
        rows = []
        for name in self.names:
            attrs = dict(zarr.open_group(str(self.root / name), mode="r").attrs)
            rows.append(
                EpisodeSummary(
                    name,
                    str(attrs.get("task", "")),
                    int(attrs.get("num_frames", -1)),
                    int(attrs.get("num_points", -1)),
                    str(attrs.get("source", "")),
                )
            )
        return rows

    def tasks(self) -> dict[str, list[str]]:
        """Task text → names of the episodes that show it."""
        out: dict[str, list[str]] = {}
        for row in self.index():
            out.setdefault(row.task, []).append(row.name)
        return out

    def validate(self) -> None:
        """Open every episode (each open validates it); raises on the first bad one."""
        for _ in self:
            pass
