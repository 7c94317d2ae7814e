"""Video I/O: probe, read (range, stride, resize) and write, for any container FFmpeg knows.

Reading uses ``decord`` (fast random access by frame index) and falls back to PyAV (sequential
decode), so a file decord rejects still opens. Frames come back as RGB ``uint8 (T, H, W, 3)`` and are
resized with OpenCV after decoding, so both back-ends give the same pixels up to codec rounding.
Frames are read and resized in small batches: a long full-HD video never sits in memory at full size.

:func:`decode_video` is the checked read for building episodes: it caps the frames held in memory
(``DecodeConfig.max_frames``), fails on a video too short to hold motion (``min_frames``) and records
decoded against declared frames, so a truncated file is flagged instead of passing as a short clip.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import cv2
import numpy as np

Backend = Literal["auto", "decord", "pyav"]
_BATCH = 16
DEFAULT_MAX_FRAMES = 1024
"""Frames one read holds at most: 1024 frames at the 256×256 ingest size are 200 MB (a 6000-frame video
held whole took 2.5 GB with the tracker's copies); 1024 frames are 34 s at 30 fps, longer than a task clip."""
_URL_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, read from its headers without decoding every frame."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    codec: str

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Frames, fps, size and codec from the container; counts by demuxing (no decode) if absent."""
    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(path, "the file has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.name
            num_frames = int(stream.frames or 0)
            if num_frames <= 0:
                num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoError(path, f"not a readable video container ({err})") from err
    if num_frames <= 0:
        raise VideoError(path, "the video has no frames")
    if width <= 0 or height <= 0:
        raise VideoError(path, f"invalid frame size {width}x{height}")
    return VideoInfo(str(path), num_frames, fps, width, height, codec)


def frame_indices(num_frames: int, start: int = 0, end: int | None = None, stride: int = 1) -> np.ndarray:
    """The source frame indices a (start, end, stride) read returns; ``end`` is exclusive."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    end = num_frames if end is None else min(end, num_frames)
    if start < 0 or start >= end:
        raise ValueError(f"frame range [{start}, {end}) is empty for a video of {num_frames} frames")
    return np.arange(start, end, stride)


@dataclass
class DecodeConfig:
    """Limits on one checked read (:func:`decode_video`), so bad or huge inputs fail or are noted."""

    min_frames: int = 2
    """Fewer decoded frames raise VideoError. Two is the least that holds motion (one displacement); it
    is the default because it is the only bound that is not a matter of taste: raise it to drop clips
    too short to show a task."""
    max_frames: int | None = DEFAULT_MAX_FRAMES
    """At most this many frames are decoded and held in memory (None = no cap); see on_long."""
    on_long: Literal["subsample", "cut"] = "subsample"
    """A range over max_frames: "subsample" keeps every k-th frame (the whole task, at a lower frame
    rate; the flow is resampled to a few dozen steps anyway), "cut" keeps the first max_frames."""
    on_truncated: Literal["flag", "error"] = "flag"
    """A file that decodes clearly fewer frames than its container declares: "flag" keeps the frames
    that exist and records it (``truncated`` in the attrs, a warning), "error" raises VideoError."""

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
        if self.max_frames is not None and self.max_frames < self.min_frames:
            raise ValueError(f"max_frames ({self.max_frames}) must be >= min_frames ({self.min_frames})")
        if self.on_long not in ("subsample", "cut"):
            raise ValueError(f"on_long must be 'subsample' or 'cut', got {self.on_long!r}")
        if self.on_truncated not in ("flag", "error"):
            raise ValueError(f"on_truncated must be 'flag' or 'error', got {self.on_truncated!r}")


@dataclass
class DecodedVideo:
    """Frames of a checked read, with what was declared, asked for and decoded (for episode attrs)."""

    frames: np.ndarray
    """RGB uint8 (T, H, W, 3)."""
    indices: np.ndarray
    """Source frame index of each frame (T,)."""
    info: VideoInfo
    requested: int
    """Frames the asked range holds (before the max_frames cap)."""
    planned: int
    """Frames asked of the decoder (after the cap)."""
    step: int
    """Source frames between two kept ones (the read's stride times the cap's subsampling)."""
    notes: list[str] = field(default_factory=list)

    @property
    def decoded(self) -> int:
        return len(self.frames)

    @property
    def truncated(self) -> bool:
        """Clearly fewer frames than planned: more missing than a container's count is commonly off by."""
        return self.planned - self.decoded > max(1, round(0.02 * self.planned))

    @property
    def fps(self) -> float:
        """The frame rate of the kept frames."""
        return self.info.fps / self.step

    def attrs(self) -> dict[str, Any]:
        """What an episode records about its decode (docs/design.md §5)."""
        return {
            "declared_frames": self.info.num_frames,
            "requested_frames": self.requested,
            "decoded_frames": self.decoded,
            "truncated": self.truncated,
            "decode_notes": list(self.notes),
        }


def decode_video(
    path: str | Path,
    indices: Sequence[int] | np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    backend: Backend = "auto",
    config: DecodeConfig | None = None,
    info: VideoInfo | None = None,
) -> DecodedVideo:
    """Decode ``indices`` (default: every frame) under ``config``'s limits; see :class:`DecodeConfig`.

    Never holds more than ``max_frames`` frames; raises :class:`VideoError` naming the file for a video
    (or range) shorter than ``min_frames`` and, with ``on_truncated="error"``, for a truncated file.
    """
    cfg = config or DecodeConfig()
    info = info or probe_video(path)
    wanted = np.arange(info.num_frames) if indices is None else np.asarray(indices, dtype=int)
    notes: list[str] = []
    planned, factor = _cap(wanted, cfg, notes)
    if len(planned) < cfg.min_frames:
        span = f"the video has {info.num_frames}" if indices is None else f"the range holds {len(planned)}"
        raise VideoError(path, f"too short: {span} frame(s), at least min_frames={cfg.min_frames} needed")
    frames = _decode_into_array(path, planned, size, backend, info)
    step = (int(wanted[1] - wanted[0]) if len(wanted) > 1 else 1) * factor
    result = DecodedVideo(frames, planned[: len(frames)], info, len(wanted), len(planned), step, notes)
    _check_decoded(path, result, cfg)
    for note in notes:
        warnings.warn(f"{path}: {note}", stacklevel=2)
    return result


def _cap(wanted: np.ndarray, cfg: DecodeConfig, notes: list[str]) -> tuple[np.ndarray, int]:
    """The indices to decode under max_frames, and the subsampling factor applied."""
    if cfg.max_frames is None or len(wanted) <= cfg.max_frames:
        return wanted, 1
    if cfg.on_long == "cut":
        notes.append(f"{len(wanted)} frames is over max_frames={cfg.max_frames}: kept the first ones only")
        return wanted[: cfg.max_frames], 1
    factor = math.ceil(len(wanted) / cfg.max_frames)
    kept = wanted[::factor]
    notes.append(
        f"{len(wanted)} frames is over max_frames={cfg.max_frames}: "
        f"kept one frame in {factor} ({len(kept)} frames)"
    )
    return kept, factor


def _decode_into_array(
    path: str | Path, indices: np.ndarray, size: tuple[int, int] | None, backend: Backend, info: VideoInfo
) -> np.ndarray:
    """Decode into one preallocated array: peak memory is the frames kept, not twice that."""
    out: np.ndarray | None = None
    count = 0
    for frame in iter_video(path, indices, size=size, backend=backend, info=info):
        if out is None:
            out = np.empty((len(indices), *frame.shape), dtype=np.uint8)
        out[count] = frame
        count += 1
    if out is None:
        raise VideoError(path, "no frame could be decoded (corrupt or truncated file)")
    return out[:count]


def _check_decoded(path: str | Path, result: DecodedVideo, cfg: DecodeConfig) -> None:
    missing = result.planned - result.decoded
    if missing <= 0:
        return
    last = int(result.indices[-1]) + 1
    message = (
        f"truncated: decoding stopped after source frame {last} of the {result.info.num_frames} the "
        f"container declares ({result.decoded} of {result.planned} requested frames)"
    )
    if not result.truncated:
        result.notes.append(f"decoded {result.decoded} of {result.planned} requested frames")
    elif cfg.on_truncated == "error":
        raise VideoError(path, message)
    else:
        result.notes.append(message)
    if result.decoded < cfg.min_frames:
        raise VideoError(
            path,
            f"too short: only {result.decoded} frame(s) could be decoded of {result.planned} "
            f"(truncated or corrupt file), at least min_frames={cfg.min_frames} needed",
        )


def read_video(
    path: str | Path,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
    backend: Backend = "auto",
    max_frames: int | None = DEFAULT_MAX_FRAMES,
) -> tuple[np.ndarray, np.ndarray, VideoInfo]:
    """Read frames ``start:end:stride`` as RGB uint8, resized to ``size`` = (width, height) if given.

    Returns ``(frames (T, H, W, 3), source frame indices (T,), info)``. A file that decodes to fewer
    frames than its header promises (truncated download) returns the frames that exist with a warning,
    provided there is at least one; a file with none raises :class:`VideoError`. A range over
    ``max_frames`` is subsampled to fit, with a warning (``max_frames=None`` reads everything).
    """
    info = probe_video(path)
    indices = frame_indices(info.num_frames, start, end, stride)
    cfg = DecodeConfig(min_frames=1, max_frames=max_frames)
    result = decode_video(path, indices, size=size, backend=backend, config=cfg, info=info)
    return result.frames, result.indices, info


def iter_video(
    path: str | Path,
    indices: Sequence[int] | np.ndarray,
    size: tuple[int, int] | None = None,
    backend: Backend = "auto",
    info: VideoInfo | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames at increasing ``indices``, one at a time, resized to ``size`` if given."""
    info = info or probe_video(path)
    indices = np.asarray(indices, dtype=int)
    if len(indices) and (np.any(np.diff(indices) <= 0) or indices[0] < 0):
        raise ValueError("frame indices must be non-negative and strictly increasing")
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown video backend {backend!r}; use auto, decord or pyav")
    if backend in ("auto", "decord"):
        reader = _open_decord(path, required=backend == "decord")
        if reader is not None:
            done = 0
            try:
                for frame in _iter_decord(reader, path, indices):
                    yield _resize(frame, size)
                    done += 1
                return
            except VideoError:
                if backend == "decord":
                    raise
            indices = indices[done:]  # decord gave up part-way: PyAV decodes the rest if it can
    yield from (_resize(f, size) for f in _iter_pyav(path, indices))


def _open_decord(path: str | Path, required: bool):  # -> decord.VideoReader | None
    try:
        import decord
    except ImportError as err:
        if required:
            raise VideoError(path, "the decord back-end is not installed (pip install decord)") from err
        return None
    try:
        return decord.VideoReader(str(path), num_threads=1)
    except Exception as err:  # decord raises its own DECORDError and RuntimeError
        if required:
            raise VideoError(path, f"decord cannot open it ({_first_line(err)})") from err
        return None


def _iter_decord(reader, path: str | Path, indices: np.ndarray) -> Iterator[np.ndarray]:
    indices = indices[indices < len(reader)]
    for lo in range(0, len(indices), _BATCH):
        batch = indices[lo : lo + _BATCH].tolist()
        try:
            frames = reader.get_batch(batch).asnumpy()
        except Exception as err:
            raise VideoError(
                path, f"decoding frames {batch[0]}..{batch[-1]} failed ({_first_line(err)})"
            ) from err
        yield from frames


def _iter_pyav(path: str | Path, indices: np.ndarray) -> Iterator[np.ndarray]:
    """Decode sequentially, yielding the wanted frames; a stream that ends early just stops."""
    wanted = iter(indices.tolist())
    target = next(wanted, None)
    if target is None:
        return
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i == target:
                    yield frame.to_ndarray(format="rgb24")
                    target = next(wanted, None)
                    if target is None:
                        return
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(path, f"decoding stopped at frame {target} ({_first_line(err)})") from err


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (frame.shape[1], frame.shape[0]) == tuple(size):
        return np.ascontiguousarray(frame)
    shrinking = size[0] < frame.shape[1] and size[1] < frame.shape[0]
    return cv2.resize(frame, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def write_video(
    path: str | Path, frames: np.ndarray | Sequence[np.ndarray], fps: float, crf: int = 23
) -> Path:
    """Write RGB uint8 frames as H.264 mp4 (``.mp4``) or an animated GIF (``.gif``).

    Odd frame sizes are padded by one pixel (H.264 with yuv420p needs even sizes). The file is
    written under a temporary name and renamed, so a crash never leaves a broken video behind.
    """
    path = Path(path)
    frames_list = [np.asarray(f) for f in frames]
    if not frames_list:
        raise ValueError(f"no frames to write to {path}")
    first = frames_list[0]
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {first.shape} {first.dtype}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        _write_gif(tmp, frames_list, fps)
    elif suffix in (".mp4", ".mov", ".mkv"):
        _write_h264(tmp, frames_list, fps, crf)
    else:
        raise ValueError(f"cannot write {path}: use a .mp4 or .gif name")
    tmp.replace(path)
    return path


def _write_h264(path: Path, frames: list[np.ndarray], fps: float, crf: int) -> None:
    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise ValueError(f"all frames must be {w}x{h}, got {frame.shape[1]}x{frame.shape[0]}")
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    duration_ms = max(20, int(math.floor(1000.0 / fps)))
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        if scheme := _URL_LIKE.match(str(path)):
            raise VideoError(path, _unsupported_scheme(scheme.group(1)))
        raise VideoError(path, "no such file")
    if not path.is_file():
        raise VideoError(path, "not a file")
    if path.stat().st_size == 0:
        raise VideoError(path, "the file is empty (0 bytes)")
    return path


def _unsupported_scheme(scheme: str) -> str:
    hint = "give the file's plain path" if scheme.lower() == "file" else "download it first"
    return f"{scheme}:// URLs are not supported (only http:// and https:// are downloaded); {hint}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
