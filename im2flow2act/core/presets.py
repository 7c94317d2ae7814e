"""Presets by name: the YAML configs shipped inside the package, found from any working directory.

A preset argument is a path to a YAML file (used as given) or a name. A name is looked up among the
shipped configs of one stage (``quick`` for ``pipeline`` is ``configs/pipeline/quick.yaml``), so a
non-editable install runs ``im2flow2act pipeline run --preset quick`` from anywhere.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from im2flow2act.core.config import ConfigError

STAGES = ("pipeline", "policy", "im2flow", "preprocessing", "sim")


def preset_dir(stage: str) -> Path:
    """The folder of one stage's shipped presets."""
    if stage not in STAGES:
        raise ValueError(f"no presets for stage {stage!r}; stages: {', '.join(STAGES)}")
    return Path(str(resources.files("im2flow2act.configs"))) / stage


def preset_names(stage: str) -> list[str]:
    return sorted(p.stem for p in preset_dir(stage).glob("*.yaml"))


def resolve_preset(stage: str, name_or_path: str | Path) -> Path:
    """A YAML file for ``name_or_path``: an existing file as given, else the shipped preset of that name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    shipped = preset_dir(stage) / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"unknown {stage} preset {str(name_or_path)!r}; shipped: {', '.join(preset_names(stage))} "
            "(or give a path to a YAML file)"
        )
    return shipped
