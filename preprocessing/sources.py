"""What to ingest: video files, folders, manifests (CSV / JSONL) and http(s) URLs → a list of items.

A manifest row names a ``video`` (path relative to the manifest, or a URL) and may give ``task``,
``object_prompt``, ``box`` ("x0,y0,x1,y1" in pixels of the video, or a JSON list), ``start``/``end``
(seconds) and ``name``. Problems with one input are returned as :class:`BadInput` entries so a batch can
report them and go on with the rest. A given ``name`` is checked here, when the manifest is read, so a name
such as ``../x`` or ``zarr.json`` never reaches the dataset's folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from im2flow2act.preprocessing.download import unsupported_scheme

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
MANIFEST_COLUMNS = ("video", "task", "object_prompt", "box", "start", "end", "name")
EPISODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
"""The flow-dataset writer's rule for an episode's folder name (no separators, no leading dot)."""
URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")
"""Text that is a URL of some scheme; only http(s) ones are fetched, the rest are named, not looked up."""
RESERVED_NAMES = ("zarr.json",)
"""Names taken by the store's own files at its root."""
MAX_NAME_LENGTH = 120


@dataclass
class VideoItem:
    """One video to ingest, with everything known about it before grounding."""

    video: str
    """A local path or an http(s) URL."""
    task: str = ""
    object_prompt: str = ""
    box: tuple[float, float, float, float] | None = None
    """Object box in pixels of the video, when given (the ``manifest`` grounder uses it)."""
    start: float | None = None
    end: float | None = None
    name: str | None = None
    origin: str = ""
    """Where the item came from (the argument or ``manifest.csv:row 3``), for messages."""

    @property
    def is_url(self) -> bool:
        return is_url(self.video)

    @property
    def source(self) -> str:
        """What the episode records as its ``source``: the URL, or the local file's absolute path."""
        return self.video if self.is_url else str(Path(self.video).resolve())

    @property
    def segment(self) -> list[float | None]:
        """The item's own [start, end] seconds (None: the config's); tells clips of one video apart."""
        return [self.start, self.end]

    @property
    def identity(self) -> tuple[str, tuple[float | None, ...]]:
        """Two items with the same identity make the same episode; reruns compare it with the stored one."""
        return self.source, tuple(self.segment)

    def auto_names(self) -> list[str]:
        """Names tried for an unnamed item: the file stem, then the stem made unique by a hash of the source.

        Both are deterministic, so a rerun finds the episode again under whichever it got.
        """
        stem = episode_name_for(self.video)
        key = self.source if self.segment == [None, None] else f"{self.source}#{self.start},{self.end}"
        return [stem, f"{stem[: MAX_NAME_LENGTH - 9]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"]


@dataclass
class BadInput:
    """An input that cannot become an item; reported in the batch summary."""

    source: str
    reason: str


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def unsupported_url(text: str) -> str | None:
    """Why ``text`` cannot be ingested when it is a URL of a scheme other than http(s), else None.

    Without this an ``ftp://`` or ``file://`` input reads as a missing local file, which hides the fix.
    """
    if is_url(text) or not URL_LIKE.match(text):
        return None
    return unsupported_scheme(text)


def episode_name_for(video: str | Path) -> str:
    """A stable, valid episode name from a video's file name (reruns find the same name)."""
    stem = Path(str(video).split("?")[0]).stem or "video"
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip("._-")[:MAX_NAME_LENGTH] or "video"
    return f"{name}_" if name.lower() in RESERVED_NAMES else name


def check_episode_name(name: str) -> str:
    """``name`` if it can be an episode's folder in the dataset; else ValueError saying what is allowed."""
    if not EPISODE_NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"name {name!r} is not a valid episode name: letters, digits, '_', '.', '-', starting with a "
            f"letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"name {name!r} is reserved by the dataset store ({', '.join(RESERVED_NAMES)})")
    return name


def resolve_inputs(
    inputs: list[str],
    task: str = "",
    object_prompt: str = "",
    box: tuple[float, ...] | None = None,
    exclude: Sequence[str | Path] = (),
) -> tuple[list[VideoItem], list[BadInput]]:
    """Expand files, folders, manifests and URLs into items; command-line task/prompt/box are defaults.

    Folders are searched without the ``exclude`` folders (an ingest's own overlays and downloads, so an
    ``--out`` inside an input folder is not ingested back on the next run).
    """
    skip = [Path(p).resolve() for p in exclude]
    items: list[VideoItem] = []
    bad: list[BadInput] = []
    defaults = {"task": task, "object_prompt": object_prompt, "box": tuple(box) if box else None}
    for raw in inputs:
        if is_url(raw):
            items.append(VideoItem(raw, origin=raw, **defaults))
            continue
        if reason := unsupported_url(raw):
            bad.append(BadInput(raw, reason))
            continue
        path = Path(raw)
        if not path.exists():
            bad.append(BadInput(raw, "no such file or folder"))
        elif path.is_dir():
            videos, skipped = _folder_videos(path, skip)
            if not videos:
                own = f" outside this ingest's own outputs ({skipped} skipped)" if skipped else ""
                bad.append(BadInput(raw, f"folder has no video files{own} ({', '.join(VIDEO_SUFFIXES)})"))
            items += [VideoItem(str(p), origin=str(p), **defaults) for p in videos]
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            rows, problems = read_manifest(path, defaults)
            items += rows
            bad += problems
        else:
            items.append(VideoItem(str(path), origin=str(path), **defaults))
    return items, bad


def _folder_videos(folder: Path, skip: list[Path]) -> tuple[list[Path], int]:
    """Video files under ``folder`` (sorted) but not under ``skip``, and how many were left out."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    kept = [p for p in found if not any(p.resolve().is_relative_to(s) for s in skip)]
    return kept, len(found) - len(kept)


def read_manifest(path: Path, defaults: dict | None = None) -> tuple[list[VideoItem], list[BadInput]]:
    """Rows of a CSV or JSONL manifest; a missing ``video`` column fails the whole manifest, clearly."""
    defaults = defaults or {}
    try:
        rows = _read_rows(path)
    except (OSError, ValueError, csv.Error) as err:
        return [], [BadInput(str(path), f"unreadable manifest: {err}")]
    if not rows:
        return [], [BadInput(str(path), "manifest has no rows")]
    columns = set().union(*(r.keys() for r in rows))
    if "video" not in columns:
        return [], [
            BadInput(
                str(path),
                f"manifest has no 'video' column (columns: {', '.join(sorted(columns))}; "
                f"expected {', '.join(MANIFEST_COLUMNS)})",
            )
        ]
    unknown = sorted(columns - set(MANIFEST_COLUMNS))
    if unknown:
        return [], [
            BadInput(
                str(path),
                f"unknown manifest column(s) {', '.join(unknown)}; expected {', '.join(MANIFEST_COLUMNS)}",
            )
        ]
    items, bad = [], []
    for number, row in enumerate(rows, start=1):
        where = f"{path}:row {number}"
        try:
            items.append(_item_from_row(row, path.parent, where, defaults))
        except ValueError as err:
            bad.append(BadInput(where, str(err)))
    return items, bad


def _read_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(fh)]
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"line {number} is not JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"line {number} is not a JSON object")
            rows.append(row)
    return rows


def _item_from_row(row: dict, base: Path, where: str, defaults: dict) -> VideoItem:
    video = str(row.get("video") or "").strip()
    if not video:
        raise ValueError("empty 'video' value")
    if reason := unsupported_url(video):
        raise ValueError(reason)
    if not is_url(video) and not Path(video).is_absolute():
        video = str(base / video)
    box = parse_box(row["box"]) if row.get("box") not in (None, "") else defaults.get("box")
    start, end = _seconds(row.get("start"), "start"), _seconds(row.get("end"), "end")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"'end' ({end} s) must be after 'start' ({start} s)")
    return VideoItem(
        video=video,
        task=str(row.get("task") or defaults.get("task") or ""),
        object_prompt=str(row.get("object_prompt") or defaults.get("object_prompt") or ""),
        box=box,
        start=start,
        end=end,
        name=check_episode_name(str(row["name"]).strip()) if row.get("name") not in (None, "") else None,
        origin=where,
    )


def parse_box(value) -> tuple[float, float, float, float]:
    """A box from "x0,y0,x1,y1", "[x0, y0, x1, y1]" or a list."""
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        parts = [p for p in text.replace(" ", ",").split(",") if p]
    else:
        parts = list(value)
    try:
        numbers = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 4:
        raise ValueError(f"box {value!r} must be four numbers x0,y0,x1,y1 in pixels")
    return numbers  # type: ignore[return-value]


def _seconds(value, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ValueError(f"'{name}' must not be negative, got {seconds}")
    return seconds
