"""Batch jobs through a local Ray with 2 CPUs: the same episodes as the local executor, array by array;
bad items as failed rows; a killed worker's item retried; a killed driver resumed by a rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SHARED_VIDEOS, run_cli
from store_compare import store_differences

pytest.importorskip("ray")

CLIPS = ["cups.mp4", "pillow.mp4", "backpack.mp4"]
INGEST_FAST = ["max_frames=24", "grid_size=8", "--no-overlay"]


@pytest.fixture(scope="module")
def clips_and_a_bad_one(tmp_path_factory) -> list[str]:
    bad = tmp_path_factory.mktemp("bad") / "corrupt.mp4"
    bad.write_bytes(b"\x00\x01 not a video" * 64)
    return [str(SHARED_VIDEOS / c) for c in CLIPS] + [str(bad)]


@pytest.fixture(scope="module")
def local_ingest(tmp_path_factory, clips_and_a_bad_one) -> tuple[Path, str]:
    """The batch ingested by the local executor (one worker): the reference, made once."""
    out = tmp_path_factory.mktemp("local") / "out"
    done = run_cli("ingest", *clips_and_a_bad_one, "--out", str(out), *INGEST_FAST)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def summary_rows(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {e["name"]: (e["status"], e.get("reason", "")) for e in summary["episodes"]}


def test_ingest_through_ray_equals_the_local_executor_and_reports_the_bad_video(
    tmp_path, clips_and_a_bad_one, local_ingest
):
    local_out, local_stdout = local_ingest
    on_ray = run_cli(
        "ingest",
        *clips_and_a_bad_one,
        "--workers",
        "2",
        "--executor",
        "ray",
        "--out",
        str(tmp_path / "ray"),
        *INGEST_FAST,
    )
    assert on_ray.returncode == 0, on_ray.stderr
    assert store_differences(local_out / "dataset.zarr", tmp_path / "ray" / "dataset.zarr") == []
    rows = summary_rows(tmp_path / "ray")
    assert rows == summary_rows(local_out)
    assert rows["corrupt"][0] == "failed" and "corrupt.mp4" in rows["corrupt"][1]
    assert {n for n, (s, _) in rows.items() if s == "written"} == {"cups", "pillow", "backpack"}
    assert untimed_table(on_ray.stdout) == untimed_table(local_stdout)


def untimed_table(stdout: str) -> list[str]:
    """The ingest summary table's lines, each row's seconds column blanked."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("episode"))
    end = next(i for i, line in enumerate(lines) if " written, " in line)
    return [line[:65] + line[74:] for line in lines[start : end + 1]]


def test_sim_episodes_through_ray_equal_the_local_executor(tmp_path):
    args = ["--task", "pick_place", "--task", "open_drawer", "--episodes", "2", "image_size=[64,64]"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    for kind, extra in (("local", []), ("ray", ["--workers", "2", "--executor", "ray"])):
        exe = Path(sys.executable).with_name("im2flow2act")
        done = subprocess.run(
            [str(exe), "sim", "play", *args, *extra, "--out", str(tmp_path / kind)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert done.returncode == 0, done.stderr
    assert store_differences(tmp_path / "local" / "dataset.zarr", tmp_path / "ray" / "dataset.zarr") == []
    tasks = {k: json.loads((tmp_path / k / "summary.json").read_text())["tasks"] for k in ("local", "ray")}
    drop = lambda t: {n: {k: v for k, v in row.items() if "second" not in k} for n, row in t.items()}  # noqa: E731
    assert drop(tasks["local"]) == drop(tasks["ray"])


def ray_workers() -> list[int]:
    """PIDs of this machine's RayWorker actor processes (Ray titles them ``ray::RayWorker…``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::RayWorker"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def start_ingest(args: list[str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("im2flow2act")
    return subprocess.Popen(
        [str(exe), "ingest", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_killed_worker_is_restarted_and_its_video_retried(tmp_path, clips_and_a_bad_one, local_ingest):
    out = tmp_path / "ray"
    args = [*clips_and_a_bad_one, "--workers", "2", "--executor", "ray", "--out", str(out), *INGEST_FAST]
    job = start_ingest(args)
    wait_for(lambda: len(ray_workers()) == 2 or job.poll() is not None)
    assert job.poll() is None, job.communicate()
    os.kill(ray_workers()[0], signal.SIGKILL)  # mid-item: the actors are busy from their first video on
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr
    rows = summary_rows(out)
    assert {n for n, (s, _) in rows.items() if s == "written"} == {"cups", "pillow", "backpack"}, rows
    assert store_differences(local_ingest[0] / "dataset.zarr", out / "dataset.zarr") == []


def test_a_killed_driver_leaves_whole_episodes_and_a_rerun_resumes(
    tmp_path, clips_and_a_bad_one, local_ingest
):
    out = tmp_path / "ray"
    args = [*clips_and_a_bad_one, "--workers", "2", "--executor", "ray", "--out", str(out), *INGEST_FAST]
    job = start_ingest(args)
    store = out / "dataset.zarr"
    episodes = lambda: [p for p in store.glob("*") if p.is_dir() and not p.name.startswith(".")]  # noqa: E731
    wait_for(lambda: episodes() or job.poll() is not None)
    job.send_signal(signal.SIGKILL)
    job.communicate()
    wait_for(lambda: not ray_workers(), timeout_s=60)  # the actors die with the driver that owns them
    again = run_cli("ingest", *args)
    assert again.returncode == 0, again.stderr
    assert store_differences(local_ingest[0] / "dataset.zarr", store) == []
    assert "skipped" in again.stdout
