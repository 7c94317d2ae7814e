"""Shared fixtures: the committed real clip and a synthetic texture video with known motion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "data" / "clips" / "cups_clip.mp4"
CLIP_BOX = (136, 0, 228, 108)  # the red cup in the clip's first frame, pixels of 640x360
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "videos"  # real clips (SOURCES.md there), beside the repo


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `im2flow2act` command as a user would, capturing its output."""
    exe = Path(sys.executable).with_name("im2flow2act")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def clip_path() -> Path:
    assert CLIP.is_file(), f"the committed test clip is missing: {CLIP}"
    return CLIP


def moving_texture(num_frames: int = 24, size: int = 256, seed: int = 0, step=(1.7, 0.9)):
    """A smooth random texture translated by a known sub-pixel shift per frame.

    Returns ``(frames uint8 (T, size, size, 3), shifts float32 (T, 2))``: content that sits at pixel p in
    frame 0 sits at p + shifts[t] in frame t.
    """
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((size * 3, size * 3, 3)).astype(np.float32), (0, 0), 2.0)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    frames, shifts = [], []
    for t in range(num_frames):
        dx, dy = step[0] * t, step[1] * t + 3.0 * np.sin(t / 5.0)
        warp = np.float32([[1, 0, dx - size], [0, 1, dy - size]])
        frames.append(cv2.warpAffine(big, warp, (size, size), flags=cv2.INTER_LINEAR))
        shifts.append((dx, dy))
    return np.stack(frames), np.asarray(shifts, np.float32)


@pytest.fixture
def texture_video():
    return moving_texture()


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path / "www"`` on 127.0.0.1 (a free port) for the test; yields (base_url, folder)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda *args: None  # a client that hangs up early (size cap) is expected
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/video.mp4"


@pytest.fixture(scope="session")
def play_root(tmp_path_factory):
    """Two real play episodes (table and drawer scenes) at 96×96 with 48 ground-truth points, made once."""
    from im2flow2act.policies.sim.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("play")
    cfg = GenerateConfig(
        tasks=["pick_place", "open_drawer"], episodes=1, image_size=(96, 96), play_primitives=2
    )
    cfg.record.num_points = 48
    generate("play", out, cfg, progress=False)
    return out / "dataset.zarr"


@pytest.fixture(scope="session")
def demos_root(tmp_path_factory):
    """Two sphere demonstrations per task at 96×96 (pick & place and pour share layouts), made once."""
    from im2flow2act.policies.sim.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("demos")
    cfg = GenerateConfig(
        tasks=["pick_place", "pour", "open_drawer", "fold_cloth"], episodes=2, image_size=(96, 96)
    )
    cfg.record.num_points = 32
    generate("demos", out, cfg, progress=False)
    return out / "dataset.zarr"


def faststart_cut(tmp_path: Path, clip_path: Path) -> Path:
    """The real clip re-encoded with its index first (as streamed mp4s are), then cut in half."""
    import av

    from im2flow2act.preprocessing.video import read_video

    frames, _, _ = read_video(clip_path, size=(128, 72))
    full = tmp_path / "faststart.mp4"
    with av.open(str(full), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 72, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut
