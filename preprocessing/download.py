"""Fetch http(s) videos into a local cache: timeouts, an overall deadline, size cap, retries, atomic files.

The cache file is named from a hash of the URL, so a rerun reuses it. A download goes to ``*.part`` and is
renamed when complete; a failure leaves nothing that looks finished. What is kept must be a video: a text
answer (an HTML login or error page) is refused while downloading, and a file that does not open and
decode as a video is deleted, whether just downloaded or found in the cache, so a rerun fetches it again
instead of failing on the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from im2flow2act.preprocessing.video import VideoError, iter_video, probe_video

SCHEMES = ("http", "https")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
_SNIFF_BYTES = 512


class DownloadError(RuntimeError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot download {url}: {reason}")


@dataclass
class DownloadConfig:
    timeout_s: float = 30.0
    """Socket timeout for connecting and for each read."""
    deadline_s: float = 600.0
    """The most one download may take, retries included (a server trickling bytes never hangs a batch):
    600 s fetch a max_mb file of 500 MB at about 1 MB/s."""
    max_mb: float = 500.0
    """Refuse files larger than this (by Content-Length, or while streaming)."""
    retries: int = 2
    """Extra attempts after a failed one (not after a 4xx answer, an oversized file or a non-video)."""
    backoff_s: float = 1.0


def unsupported_scheme(url: str) -> str | None:
    """Why ``url`` cannot be downloaded because of its scheme, or None for http(s)."""
    scheme = urlparse(url).scheme.lower()
    if scheme in SCHEMES:
        return None
    hint = "give the file's plain path" if scheme == "file" else "download it first and give the path"
    return f"unsupported URL scheme {scheme + '://' if scheme else '(none)'}: only http(s) is fetched; {hint}"


def cached_path(url: str, cache_dir: Path) -> Path:
    from im2flow2act.preprocessing.sources import VIDEO_SUFFIXES  # here: sources may import this module

    suffix = Path(urlparse(url).path).suffix.lower()
    suffix = suffix if suffix in VIDEO_SUFFIXES else ".mp4"
    stem = Path(urlparse(url).path).stem[:40] or "video"
    return cache_dir / f"{stem}-{hashlib.sha1(url.encode()).hexdigest()[:12]}{suffix}"


def forget(url: str, cache_dir: str | Path) -> bool:
    """Delete the cached copy of ``url`` (e.g. after it failed to decode); True if there was one."""
    target = cached_path(url, Path(cache_dir))
    existed = target.is_file()
    target.unlink(missing_ok=True)
    return existed


def fetch(url: str, cache_dir: str | Path, config: DownloadConfig | None = None) -> Path:
    """The local copy of ``url`` (downloaded now, or from the cache), checked to open as a video."""
    cfg = config or DownloadConfig()
    if reason := unsupported_scheme(url):
        raise DownloadError(url, reason)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cached_path(url, cache_dir)
    if target.is_file():
        if _video_problem(target) is None:
            return target
        target.unlink(missing_ok=True)  # a bad cached copy (an earlier run kept a page): fetch again
    _download_with_retries(url, target, cfg)
    if problem := _video_problem(target):
        target.unlink(missing_ok=True)
        raise DownloadError(url, f"the downloaded file is not a readable video ({problem}); not cached")
    return target


def _download_with_retries(url: str, target: Path, cfg: DownloadConfig) -> None:
    watchdog = _Watchdog(cfg.deadline_s)
    last = "unknown error"
    try:
        for attempt in range(cfg.retries + 1):
            try:
                _download(url, target, cfg, watchdog)
                return
            except _Permanent as err:
                raise DownloadError(url, str(err)) from None
            except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as err:
                last = str(getattr(err, "reason", err))
            if watchdog.expired:
                raise DownloadError(url, f"took longer than the {cfg.deadline_s:g} s deadline (deadline_s)")
            if attempt < cfg.retries:
                time.sleep(min(cfg.backoff_s * (attempt + 1), watchdog.remaining()))
        raise DownloadError(url, f"{last} (after {cfg.retries + 1} attempts)")
    finally:
        watchdog.cancel()


class _Permanent(Exception):
    """A failure retrying cannot fix."""


class _Watchdog:
    """Shuts the download's sockets down when the deadline passes, so no read can outlast it."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener, with every connection's socket handed to the watchdog once connected."""

    def watched(http_class: type) -> type:
        class Watched(http_class):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                super().connect()
                watchdog.watch(self.sock)

        return Watched

    class Http(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kwargs):  # type: ignore[override]
            return super().do_open(watched(http_class), req, **kwargs)

    class Https(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kwargs):  # type: ignore[override]
            return super().do_open(watched(http_class), req, **kwargs)

    return urllib.request.build_opener(Http, Https)


def _download(url: str, target: Path, cfg: DownloadConfig, watchdog: _Watchdog) -> None:
    limit = int(cfg.max_mb * 1e6)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    request = urllib.request.Request(url, headers={"User-Agent": "im2flow2act"})
    timeout = max(0.01, min(cfg.timeout_s, watchdog.remaining()))
    try:
        with _opener(watchdog).open(request, timeout=timeout) as response:
            _check_headers(response, cfg, limit)
            length = response.headers.get("Content-Length")
            size = _copy_body(response, part, cfg, limit)
            if size == 0:
                raise _Permanent("the server sent an empty file")
            if watchdog.expired:
                raise OSError(f"stopped at the deadline after {size} bytes")
            if length is not None and size < int(length):
                raise OSError(f"the connection closed after {size} of {int(length)} bytes")
        part.replace(target)
    except urllib.error.HTTPError as err:
        if 400 <= err.code < 500:
            raise _Permanent(f"HTTP {err.code} {err.reason}") from None
        raise
    finally:
        part.unlink(missing_ok=True)


def _check_headers(response, cfg: DownloadConfig, limit: int) -> None:
    length = response.headers.get("Content-Length")
    if length is not None and int(length) > limit:
        raise _Permanent(f"file is {int(length) / 1e6:.1f} MB, over the {cfg.max_mb:g} MB cap")
    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if kind.startswith(_TEXT_TYPES):
        raise _Permanent(f"the server sent {kind}, not a video (an error or login page?)")


def _copy_body(response, part: Path, cfg: DownloadConfig, limit: int) -> int:
    size = 0
    with part.open("wb") as fh:
        while chunk := response.read(1 << 16):
            if size == 0 and _is_text(chunk[:_SNIFF_BYTES]):
                raise _Permanent(f"the server sent text, not a video (it starts {chunk[:40]!r})")
            size += len(chunk)
            if size > limit:
                raise _Permanent(f"file is over the {cfg.max_mb:g} MB cap")
            fh.write(chunk)
    return size


def _is_text(head: bytes) -> bool:
    """HTML, JSON or plain text: every video container has binary (NUL) bytes in its first header."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.reason == "unexpected end of data"  # only a character cut at the end of the sniff
    return True


def _video_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable video (it must open and its first frame decode), or None."""
    try:
        info = probe_video(path)
        if next(iter_video(path, np.array([0]), backend="pyav", info=info), None) is None:
            return "its first frame does not decode"
    except VideoError as err:
        return err.reason
    return None
