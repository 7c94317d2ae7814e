"""Fetch http(s) videos into a local cache: timeout, size cap, retries, atomic files.

The cache file is named from a hash of the URL, so a rerun reuses it. A download goes to ``*.part`` and is
renamed when complete; a failure leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from im2flow2act.preprocessing.sources import VIDEO_SUFFIXES


class DownloadError(RuntimeError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot download {url}: {reason}")


@dataclass
class DownloadConfig:
    timeout_s: float = 30.0
    """Socket timeout for connecting and for each read."""
    max_mb: float = 500.0
    """Refuse files larger than this (by Content-Length, or while streaming)."""
    retries: int = 2
    """Extra attempts after a failed one (not after a 4xx answer or an oversized file)."""
    backoff_s: float = 1.0


def cached_path(url: str, cache_dir: Path) -> Path:
    suffix = Path(urlparse(url).path).suffix.lower()
    suffix = suffix if suffix in VIDEO_SUFFIXES else ".mp4"
    stem = Path(urlparse(url).path).stem[:40] or "video"
    return cache_dir / f"{stem}-{hashlib.sha1(url.encode()).hexdigest()[:12]}{suffix}"


def fetch(url: str, cache_dir: str | Path, config: DownloadConfig | None = None) -> Path:
    """The local copy of ``url`` (downloaded now, or from the cache)."""
    cfg = config or DownloadConfig()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cached_path(url, cache_dir)
    if target.is_file():
        return target
    last = "unknown error"
    for attempt in range(cfg.retries + 1):
        try:
            _download(url, target, cfg)
            return target
        except _Permanent as err:
            raise DownloadError(url, str(err)) from None
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            last = str(getattr(err, "reason", err))
            if attempt < cfg.retries:
                time.sleep(cfg.backoff_s * (attempt + 1))
    raise DownloadError(url, f"{last} (after {cfg.retries + 1} attempts)")


class _Permanent(Exception):
    """A failure retrying cannot fix."""


def _download(url: str, target: Path, cfg: DownloadConfig) -> None:
    limit = int(cfg.max_mb * 1e6)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    request = urllib.request.Request(url, headers={"User-Agent": "im2flow2act"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length is not None and int(length) > limit:
                raise _Permanent(f"file is {int(length) / 1e6:.1f} MB, over the {cfg.max_mb:g} MB cap")
            size = 0
            with part.open("wb") as fh:
                while chunk := response.read(1 << 16):
                    size += len(chunk)
                    if size > limit:
                        raise _Permanent(f"file is over the {cfg.max_mb:g} MB cap")
                    fh.write(chunk)
            if size == 0:
                raise _Permanent("the server sent an empty file")
        part.replace(target)
    except urllib.error.HTTPError as err:
        if 400 <= err.code < 500:
            raise _Permanent(f"HTTP {err.code} {err.reason}") from None
        raise
    finally:
        part.unlink(missing_ok=True)
