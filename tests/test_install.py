"""The project as a user installs it: a wheel, not the checkout.

The wheel is built from the repository and installed (without its dependencies, which this venv already
has) into a folder that goes first on ``PYTHONPATH``; every command runs from an empty directory, so
nothing can come from the checkout: not the stage folders, not ``configs/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = (".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__", "tests", "docs", "data")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(site folder holding the installed wheel, environment that puts it first)."""
    root = tmp_path_factory.mktemp("install")
    wheels, site = root / "wheels", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    source = root / "source"  # a copy: building in place would leave build/ (and stale files) in the repo
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source], check=True)
    (wheel,) = wheels.glob("im2flow2act-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    env = {**os.environ, "PYTHONPATH": str(site), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return site, env


def _python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)


def test_wheel_holds_one_namespace_with_presets_and_types(installed):
    site, _ = installed
    top = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")} - {"bin", "__pycache__"}
    assert top == {"im2flow2act"}, f"the wheel installs top-level names besides im2flow2act: {top}"
    package = site / "im2flow2act"
    for sub in ("preprocessing", "im2flow", "policies", "core", "configs"):
        assert (package / sub / "__init__.py").is_file(), sub
    assert (package / "py.typed").is_file()
    assert (package / "configs" / "pipeline" / "quick.yaml").is_file()
    assert (package / "policies" / "sim" / "tasks.py").is_file()


def test_installed_package_imports_from_anywhere_and_squats_no_generic_name(installed, tmp_path):
    site, env = installed
    found = _python(
        "import im2flow2act, im2flow2act.policies.sim, im2flow2act.im2flow.generator; "
        "print(im2flow2act.__version__); print(im2flow2act.policies.sim.__file__)",
        env,
        tmp_path,
    )
    assert found.returncode == 0, found.stderr
    version, where = found.stdout.split()
    assert version.count(".") == 2
    assert Path(where).is_relative_to(site), f"imported from {where}, not from the installed wheel"
    for generic in ("preprocessing", "policies", "im2flow"):
        squat = _python(f"import {generic}", env, tmp_path)
        assert squat.returncode != 0 and "ModuleNotFoundError" in squat.stderr, generic


def test_installed_cli_runs_help_and_the_quick_preset_by_name(installed, tmp_path):
    _, env = installed
    cli = [sys.executable, "-m", "im2flow2act"]
    for command in (cli, [*cli, "pipeline", "run"]):
        shown = subprocess.run([*command, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert shown.returncode == 0 and "Usage" in shown.stdout, shown.stderr
    overrides = ["demos=1", "tasks=[pick_place]", "workers=1", "image_size=[64,64]"]
    run = subprocess.run(
        [*cli, "pipeline", "run", "--preset", "quick", "--until", "demos", "--out", "run", *overrides],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "1_demos" / "stage.json").is_file()
    assert "name: quick" in (tmp_path / "run" / "pipeline_config.yaml").read_text()


def test_unknown_preset_names_the_shipped_ones(installed, tmp_path):
    _, env = installed
    run = subprocess.run(
        [sys.executable, "-m", "im2flow2act", "pipeline", "run", "--preset", "quik"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "unknown pipeline preset 'quik'" in run.stderr and "full, quick" in run.stderr


def test_wheel_declares_the_command(installed):
    site, _ = installed
    (info,) = site.glob("im2flow2act-*.dist-info")
    assert "im2flow2act = im2flow2act.cli:main" in (info / "entry_points.txt").read_text()
