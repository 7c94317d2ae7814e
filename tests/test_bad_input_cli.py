"""Bad input and faults (issue 28): each one a clear error line and an exit code, no traceback, nothing
half done.

Real inputs throughout: the real ``im2flow2act`` command in a subprocess, play episodes recorded by the sim
and copied without an array by the project's own writer, a real generation pool killed with -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import CLIP, run_cli

OUT_COMMANDS = {
    "sim demos": ["sim", "demos", "--task", "pick_place", "--episodes", "1", "image_size=[48,48]"],
    "policy train": ["policy", "train"],
    "flow train": ["flow", "train"],
    "pipeline run": ["pipeline", "run"],
    "ingest": ["ingest", str(CLIP), "--box", "136,0,228,108", "--task", "t"],
}
"""Commands whose ``--out`` folder is checked before any work."""


@pytest.fixture
def unwritable(tmp_path):
    """A folder path that cannot be created: inside a read-only folder, or under /sys when running as root
    (which writes through permission bits)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for candidate in (locked / "out", Path("/sys/im2flow2act-test-out")):
            try:
                candidate.mkdir()
            except OSError:
                yield candidate
                return
            candidate.rmdir()
        pytest.skip("no folder here refuses writes")
    finally:
        locked.chmod(0o755)


def _error_line(result: subprocess.CompletedProcess) -> str:
    """stderr, checked to be a clear refusal: exit code 2, an error line, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize("command", OUT_COMMANDS)
def test_out_that_is_a_file_or_cannot_be_written_is_refused_up_front(tmp_path, unwritable, command):
    """Before: FileExistsError / NotADirectoryError / PermissionError tracebacks (policy train: after
    loading all the data)."""
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder")
    stderr = _error_line(run_cli(*OUT_COMMANDS[command], "--out", str(a_file)))
    assert f"--out {a_file} is an existing file, not a folder" in stderr
    assert a_file.read_text() == "not a folder"
    stderr = _error_line(run_cli(*OUT_COMMANDS[command], "--out", str(unwritable)))
    assert f"--out {unwritable} cannot be written" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sim", "demos", "--workers", "-1"], "--workers -1 is out of range: at least 1"),
        (["sim", "play", "--episodes", "-2"], "--episodes -2 is out of range: at least 1"),
        (
            ["sim", "demos", "image_size=[0,0]"],
            "image_size=[0, 0]: (width, height) in pixels, each between 16 and",
        ),
        (["sim", "expert", "play_primitives=0"], "play_primitives=0 is out of range: at least 1"),
        (["policy", "train", "workers=-1"], "workers=-1 is out of range: at least 0"),
        (["flow", "train", "workers=-1"], "workers=-1 is out of range: at least 0"),
        (["flow", "train", "held_out_per_task=-1"], "held_out_per_task=-1 is out of range: at least 0"),
        (["flow", "sample", "x.png", "--task", "t", "-k", "0"], "--samples/-k 0 is out of range: at least 1"),
        (["pipeline", "run", "workers=-1"], "workers=-1 is out of range: at least 1"),
        (["pipeline", "run", "image_size=[0,0]"], "image_size=[0, 0]: (width, height) in pixels"),
        (["pipeline", "run", "policy.workers=-1"], "policy: invalid TrainConfig: workers=-1 is out of range"),
        (["pipeline", "run", "demos=2", "eval_episodes=2"], "demos=2 with eval_episodes=2 leaves no"),
    ],
)
def test_config_values_out_of_range_exit_2_naming_key_and_range(tmp_path, args, message):
    """Before: tracebacks deep inside (DataLoader, OpenGL framebuffer), or nothing done, exit 0."""
    out = tmp_path / "out"
    stderr = _error_line(run_cli(*args, "--out", str(out)))
    assert message in stderr
    assert not (out / "dataset.zarr").exists() and not (out / "checkpoint.pt").exists()


def test_policy_train_on_play_without_depth_names_store_episode_and_array(play_root, tmp_path):
    """Before: it trained, on 3-D points that were all zero."""
    from im2flow2act.preprocessing.dataset import FlowDataset, FlowDatasetWriter

    view = FlowDataset(play_root)[0]
    episode, name, root = view.load(), view.name, tmp_path / "no_depth.zarr"
    del episode.arrays["depth"]
    FlowDatasetWriter(root, kind="play").write(name, episode)
    stderr = _error_line(run_cli("policy", "train", "--out", str(tmp_path / "run"), f"data=[{root}]"))
    assert f"flow dataset {root / name}: play episode {name!r} has no 'depth' array" in stderr


def test_flow_train_with_every_episode_held_out_says_how_many(demos_root, tmp_path):
    """Before: ``ValueError: high <= 0`` from the first batch draw."""
    args = ["flow", "train", "--out", str(tmp_path / "run"), f"data=[{demos_root}]", "held_out_per_task=2"]
    stderr = _error_line(run_cli(*args))
    assert "no training clips" in stderr and "8 episode(s)" in stderr, stderr
    assert "'put the mug on the plate': 2" in stderr and "held_out_per_task=2 holds all 8 out" in stderr
    assert "set held_out_per_task to at most 1" in stderr


def test_a_file_system_fault_midway_is_one_line_naming_the_path(tmp_path, clip_path):
    """Checked ``--out`` folders cannot foresee everything: a folder where flow.npz goes fails at the end."""
    import torch
    from tiny_configs import tiny_generator_config

    from im2flow2act.im2flow.generator import FlowGenerator

    torch.manual_seed(0)
    generator = FlowGenerator(tiny_generator_config()).save_pretrained(tmp_path / "g")
    out = tmp_path / "sample"
    (out / "flow.npz").mkdir(parents=True)
    args = [
        "flow",
        "sample",
        str(clip_path),
        "--task",
        "t",
        "--generator",
        str(generator),
        "--box",
        "0,0,64,64",
    ]
    result = run_cli(*args, "-k", "1", "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {out / 'flow.npz'}: Is a directory" in result.stderr


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (``Z``: a zombie, already dead), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _spawned_children(pid: int) -> list[int]:
    """Pool workers of ``pid``: its children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _has_loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc (Linux)")
def test_sim_pool_workers_die_with_a_killed_parent(tmp_path):
    """Long play episodes (60 primitives): before the fix each worker ran its episode on, for nobody."""
    script = textwrap.dedent(
        f"""
        from im2flow2act.policies.sim.generate import GenerateConfig, generate
        cfg = GenerateConfig(
            tasks=["pick_place"], episodes=4, workers=2, image_size=(48, 48), play_primitives=60
        )
        cfg.record.num_points = 16
        generate("play", {str(tmp_path / "play")!r}, cfg, progress=False)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # both workers up and into an episode (the simulator loaded)
            workers = _spawned_children(parent.pid)
            if len(workers) == 2 and all(_has_loaded(w, "mujoco") for w in workers):
                break
            assert parent.poll() is None, "the generation ended before its workers started"
            time.sleep(0.2)
        assert len(workers) == 2, f"workers not seen: {workers}"
        time.sleep(1.0)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(workers):
            time.sleep(0.1)
        assert not _alive(workers), f"pool workers {_alive(workers)} outlived their killed parent"
    finally:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if _proc_state(pid) not in (None, "Z")]
