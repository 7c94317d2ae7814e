"""Bad media and faults (issue 28): short, truncated and long videos, hostile downloads, a full disk.

Everything here is real: videos written with PyAV, servers on 127.0.0.1 in a thread, zarr stores on disk.
A full disk is made by having zarr's own file write (third-party) raise ENOSPC part-way through an episode.
"""

from __future__ import annotations

import errno
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
import zarr.storage._local as zarr_local
from conftest import faststart_cut
from test_dataset import make_episode

from im2flow2act.preprocessing.dataset import DatasetError, FlowDataset, FlowDatasetWriter
from im2flow2act.preprocessing.download import DownloadConfig, DownloadError, cached_path, fetch, forget
from im2flow2act.preprocessing.video import (
    DecodeConfig,
    VideoError,
    decode_video,
    probe_video,
    read_video,
    write_video,
)

QUICK = DownloadConfig(timeout_s=5, retries=1, backoff_s=0.01)


def _frames(num: int, size: int = 32) -> np.ndarray:
    """Frames whose brightness encodes their index (so a subsampled read can be checked by value)."""
    frames = np.zeros((num, size, size, 3), np.uint8)
    frames[:] = (np.arange(num) * 250 // max(1, num - 1))[:, None, None, None]
    return frames


# ----------------------------------------------------------------------------- item 4: short, truncated


def test_truncated_faststart_mp4_is_flagged_with_declared_and_decoded_counts(tmp_path, clip_path):
    cut = faststart_cut(tmp_path, clip_path)
    with pytest.warns(UserWarning, match=r"cut.mp4: truncated: decoding stopped .* of the 75"):
        result = decode_video(cut, size=(64, 36))
    attrs = result.attrs()
    assert result.truncated and attrs["truncated"] is True
    assert attrs["declared_frames"] == 75 and attrs["requested_frames"] == 75
    assert 0 < attrs["decoded_frames"] == len(result.frames) == len(result.indices) < 75
    assert "truncated" in attrs["decode_notes"][0]
    with pytest.raises(VideoError, match=r"cut.mp4.*truncated.*75 the container declares"):
        decode_video(cut, config=DecodeConfig(on_truncated="error"))


def test_a_whole_video_is_not_flagged(clip_path):
    result = decode_video(clip_path, np.arange(0, 75, 5), size=(64, 36))
    assert not result.truncated and result.attrs()["decode_notes"] == []
    assert result.decoded == result.attrs()["decoded_frames"] == 15 and result.step == 5
    assert result.fps == pytest.approx(29.97 / 5, abs=0.01)


def test_one_frame_video_fails_naming_the_file(tmp_path):
    one = write_video(tmp_path / "one.mp4", _frames(1), fps=10)
    with pytest.raises(VideoError, match=r"one.mp4.*too short.*1 frame.*min_frames=2"):
        decode_video(one)
    two = write_video(tmp_path / "two.mp4", _frames(2), fps=10)
    assert decode_video(two).decoded == 2
    with pytest.raises(VideoError, match=r"two.mp4.*too short.*range holds 2.*min_frames=3"):
        decode_video(two, [0, 1], config=DecodeConfig(min_frames=3))
    assert read_video(one)[0].shape[0] == 1  # a plain read of one frame (a first image) still works


def test_dataset_refuses_a_one_frame_episode_naming_its_source(tmp_path):
    writer = FlowDatasetWriter(tmp_path / "ds.zarr")
    with pytest.raises(DatasetError, match=r"sim:test:0 has 1 frame\(s\); at least 2"):
        writer.write("one", make_episode(t=1))
    assert FlowDataset(tmp_path / "ds.zarr").names == [] and not list((tmp_path / "ds.zarr").glob(".tmp-*"))


# ----------------------------------------------------------------------------- item 10: a cap on frames


def test_long_video_is_subsampled_to_the_cap_with_a_note(tmp_path):
    path = write_video(tmp_path / "long.mp4", _frames(60), fps=30)
    with pytest.warns(UserWarning, match=r"long.mp4: 60 frames is over max_frames=16: kept one frame in 4"):
        result = decode_video(path, config=DecodeConfig(max_frames=16))
    np.testing.assert_array_equal(result.indices, np.arange(0, 60, 4))
    assert result.frames.shape == (15, 32, 32, 3) and result.fps == pytest.approx(7.5)
    assert np.all(np.diff(result.frames[:, 16, 16, 0].astype(int)) > 0)  # really the kept frames
    assert result.attrs()["requested_frames"] == 60 and not result.truncated
    with pytest.warns(UserWarning, match="kept the first ones only"):
        cut = decode_video(path, config=DecodeConfig(max_frames=16, on_long="cut"))
    np.testing.assert_array_equal(cut.indices, np.arange(16))


def test_read_video_never_holds_more_than_the_cap(tmp_path):
    path = write_video(tmp_path / "long.mp4", _frames(240, size=64), fps=30)
    whole = 240 * 64 * 64 * 3
    tracemalloc.start()
    try:
        with pytest.warns(UserWarning, match="over max_frames=20"):
            frames, indices, _ = read_video(path, max_frames=20, backend="pyav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frames) == len(indices) == 20
    assert peak < whole / 2, f"peak {peak / 1e6:.1f} MB for a {whole / 1e6:.1f} MB video"


def test_decode_config_checks_its_options():
    with pytest.raises(ValueError, match="max_frames"):
        DecodeConfig(min_frames=4, max_frames=2)
    with pytest.raises(ValueError, match="on_long"):
        DecodeConfig(on_long="drop")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- item 7: downloads


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /trickle.mp4 (1 byte / 0.05 s), /page.mp4 (HTML, labelled text/html),
    /short.mp4 (closes half-way), anything else from ``files`` as video/mp4."""

    files: dict[str, bytes] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        try:
            if self.path == "/trickle.mp4":
                self._head("video/mp4", 10_000)
                end = time.monotonic() + 8.0  # long enough to fail the timing check, short enough to end
                for byte in (b"\0\0\0\x18ftypisom" * 1000)[:10_000]:
                    if time.monotonic() > end:
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            elif self.path == "/page.mp4":
                body = b"<html><body>please log in</body></html>"
                self._head("text/html; charset=utf-8", len(body))
                self.wfile.write(body)
            elif self.path == "/short.mp4":
                self._head("video/mp4", 1000)
                self.wfile.write(b"\0" * 500)
            elif self.path in self.files:
                self._head("video/mp4", len(self.files[self.path]))
                self.wfile.write(self.files[self.path])
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a deadline): expected

    def _head(self, kind: str, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.end_headers()


@pytest.fixture
def media_server():
    files: dict[str, bytes] = {}
    handler = type("Handler", (_Handler,), {"files": files})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


def test_trickling_server_stops_at_the_overall_deadline(tmp_path, media_server):
    base, _ = media_server
    cache = tmp_path / "downloads"
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"trickle.mp4: took longer than the 1 s deadline"):
        fetch(f"{base}/trickle.mp4", cache, DownloadConfig(timeout_s=5, deadline_s=1.0, retries=2))
    assert time.monotonic() - started < 4.0
    assert not list(cache.iterdir())  # no .part, nothing cached


def test_html_served_as_mp4_is_refused_and_never_cached(tmp_path, media_server, http_server):
    base, _ = media_server
    cache = tmp_path / "downloads"
    with pytest.raises(DownloadError, match=r"page.mp4: the server sent text/html, not a video"):
        fetch(f"{base}/page.mp4", cache, QUICK)
    static, www = http_server  # labels x.mp4 as video/mp4 by its name: the bytes give it away
    (www / "x.mp4").write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    with pytest.raises(DownloadError, match=r"x.mp4: the server sent text, not a video .*DOCTYPE"):
        fetch(f"{static}/x.mp4", cache, QUICK)
    (www / "noise.mp4").write_bytes(b"\0" + np.random.default_rng(0).bytes(4096))  # binary, not a video
    with pytest.raises(DownloadError, match=r"noise.mp4: the downloaded file is not a readable video"):
        fetch(f"{static}/noise.mp4", cache, QUICK)
    assert not list(cache.iterdir())


def test_a_bad_cached_download_is_dropped_and_fetched_again(tmp_path, clip_path, http_server):
    base, www = http_server
    url, cache = f"{base}/clip.mp4", tmp_path / "downloads"
    cache.mkdir()
    cached_path(url, cache).write_text("<html>an error page an older run kept</html>")
    shutil.copy(clip_path, www / "clip.mp4")
    local = fetch(url, cache, QUICK)
    assert local == cached_path(url, cache) and probe_video(local).num_frames == 75
    assert forget(url, cache) and not local.exists() and not forget(url, cache)


def test_a_transfer_cut_short_is_retried_then_reported(tmp_path, media_server):
    base, _ = media_server
    with pytest.raises(DownloadError, match=r"closed after 500 of 1000 bytes \(after 2 attempts\)"):
        fetch(f"{base}/short.mp4", tmp_path / "downloads", QUICK)


@pytest.mark.parametrize(
    ("url", "hint"),
    [("ftp://example.org/a.mp4", "download it first"), ("file:///data/a.mp4", "plain path")],
)
def test_unsupported_url_schemes_are_named(tmp_path, url, hint):
    scheme = url.split(":")[0]
    with pytest.raises(DownloadError, match=rf"unsupported URL scheme {scheme}://.*{hint}"):
        fetch(url, tmp_path / "downloads")
    with pytest.raises(VideoError, match=rf"{scheme}:// URLs are not supported"):
        probe_video(url)  # reached as a local path, it is not "no such file"


# ----------------------------------------------------------------------------- item 9: a full disk


def test_disk_full_mid_episode_frees_its_space_and_the_next_episode_is_written(tmp_path, monkeypatch):
    root = tmp_path / "ds.zarr"
    writer = FlowDatasetWriter(root)
    real_put = zarr_local._put
    calls = {"frames": 0}
    lock = threading.Lock()

    def put(path, value, exclusive=False):  # zarr's file write: ENOSPC at the 9th frame chunk
        if "/frames/c/" in str(path):
            with lock:
                calls["frames"] += 1
                number = calls["frames"]
            if number == 9:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            time.sleep(0.02)  # a slow disk: the batch's other chunk writes are still under way
        return real_put(path, value, exclusive)

    monkeypatch.setattr(zarr_local, "_put", put)
    with pytest.raises(OSError, match="No space left"):
        writer.write("big", make_episode(t=48))
    time.sleep(0.3)  # anything still in flight would land now
    assert sorted(p.name for p in root.iterdir()) == ["zarr.json"]
    monkeypatch.undo()
    assert writer.write("next", make_episode(t=48, seed=2))
    assert FlowDataset(root).names == ["next"]


def test_stale_temporaries_are_removed_even_when_their_pid_is_reused(tmp_path):
    root = tmp_path / "ds.zarr"
    FlowDatasetWriter(root).write("kept", make_episode())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        reused = root / f".tmp-old-{sleeper.pid}-0123abcd"  # a killed run's group; its pid is now another's
        live = root / f".tmp-live-{sleeper.pid}-4567cdef"  # made after that process started: maybe its
        mine = root / f".tmp-mine-{os.getpid()}-89abcdef"  # this process's pid, but no write of it runs
        for group in (reused, live, mine):
            (group / "frames").mkdir(parents=True)
        an_hour_ago = time.time() - 3600
        os.utime(reused, (an_hour_ago, an_hour_ago))
        FlowDatasetWriter(root)
        assert sorted(p.name for p in root.glob(".tmp-*")) == [live.name]
    finally:
        sleeper.kill()
        sleeper.wait()
    FlowDatasetWriter(root)  # its process is gone now
    assert not list(root.glob(".tmp-*")) and FlowDataset(root).names == ["kept"]
