import av
import numpy as np
import pytest
from conftest import faststart_cut

from im2flow2act.preprocessing.video import VideoError, frame_indices, probe_video, read_video, write_video


def test_probe_real_clip_reads_headers(clip_path):
    info = probe_video(clip_path)
    assert (info.num_frames, info.width, info.height, info.codec) == (75, 640, 360, "h264")
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.duration == pytest.approx(2.5, abs=0.01)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_read_range_stride_resize(clip_path, backend):
    frames, idx, info = read_video(clip_path, start=10, end=40, stride=3, size=(128, 96), backend=backend)
    assert frames.shape == (10, 96, 128, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(idx, np.arange(10, 40, 3))
    assert frames.std() > 20  # real image content, not a blank frame


def test_backends_agree_on_pixels(clip_path):
    a, _, _ = read_video(clip_path, start=30, end=34, size=(160, 90), backend="decord")
    b, _, _ = read_video(clip_path, start=30, end=34, size=(160, 90), backend="pyav")
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def test_frame_indices_checks_the_range():
    np.testing.assert_array_equal(frame_indices(10, 2, None, 4), [2, 6])
    with pytest.raises(ValueError, match="empty"):
        frame_indices(10, 10)
    with pytest.raises(ValueError, match="stride"):
        frame_indices(10, 0, None, 0)


def test_missing_empty_and_corrupt_files_give_clear_errors(tmp_path, clip_path):
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty.mp4.*0 bytes"):
        probe_video(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match=r"garbage.mp4.*not a readable video"):
        read_video(garbage)
    truncated = tmp_path / "truncated.mp4"  # index (moov) at the end: cut it and nothing is readable
    truncated.write_bytes(clip_path.read_bytes()[:50_000])
    with pytest.raises(VideoError, match="truncated.mp4"):
        read_video(truncated)


def test_truncated_streamable_file_returns_the_frames_that_exist(tmp_path, clip_path):
    cut = faststart_cut(tmp_path, clip_path)
    with pytest.warns(UserWarning, match="truncated"):
        partial, idx, info = read_video(cut)
    assert info.num_frames == 75 and 0 < len(partial) < 75
    np.testing.assert_array_equal(idx, np.arange(len(partial)))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_then_read_back(tmp_path, suffix):
    rng = np.random.default_rng(1)
    base = (rng.random((1, 45, 61, 3)) * 255).astype(np.uint8)  # odd sizes: mp4 pads to even
    frames = np.repeat(base, 6, axis=0)
    frames[:, :, :10] = np.arange(6)[:, None, None, None] * 40  # a band that changes per frame
    path = write_video(tmp_path / f"out{suffix}", frames, fps=12)
    info = probe_video(path)
    assert info.num_frames == 6
    back, _, _ = read_video(path, backend="pyav")
    assert back.shape[0] == 6 and back.shape[1] >= 45 and back.shape[2] >= 61
    assert np.abs(back[:, :45, :10].astype(int) - frames[:, :, :10].astype(int)).mean() < 12
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        write_video(tmp_path / "x.avi2", frames, fps=12)


@pytest.mark.parametrize(
    ("container", "suffix", "codec", "pix_fmt"),
    [
        ("matroska", ".mkv", "libx264", "yuv420p"),
        ("avi", ".avi", "mpeg4", "yuv420p"),
        ("webm", ".webm", "libvpx-vp9", "yuv420p"),
        ("mov", ".mov", "mjpeg", "yuvj420p"),
    ],
)
def test_reads_common_containers_and_codecs(tmp_path, clip_path, container, suffix, codec, pix_fmt):
    frames, _, _ = read_video(clip_path, end=8, size=(96, 64))
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, pix_fmt
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (8, 96, 64)
    back, idx, _ = read_video(path, stride=2)
    assert back.shape == (4, 64, 96, 3)
    assert np.abs(back.astype(int) - frames[::2].astype(int)).mean() < 12
