"""Grounders that need no model of their own: ``manifest`` (the box comes with the input) and ``auto``
(that box when there is one, else the best grounder that needs no download)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from im2flow2act.preprocessing.grounding.base import GROUNDERS, Box, Grounder, NoObjectFound
from im2flow2act.preprocessing.pretrained import ModelNotAvailable


@dataclass
class GivenBoxConfig:
    """Nothing to set: the box is the input's own."""


@GROUNDERS.register("manifest", GivenBoxConfig)
class GivenBoxGrounder(Grounder):
    def __init__(self, config: GivenBoxConfig | None = None) -> None:
        self.config = config or GivenBoxConfig()

    def ground(self, frames: np.ndarray, prompt: str, given_box: Box | None = None) -> list[Box]:
        if given_box is None:
            raise NoObjectFound(
                "the manifest grounder needs a box: add a 'box' column or pass --box x0,y0,x1,y1"
            )
        return [given_box]


@dataclass
class AutoConfig:
    fallbacks: list[str] = field(default_factory=lambda: ["hand-object", "motion"])
    """Tried in order for an input without a box: the first whose model is installed grounds it.
    ``hand-object`` needs the palm detector from ``mediapipe==0.10.14`` (scripts/setup.sh installs it);
    without it, ``motion``, which boxes whatever moves most (often the hand or the person)."""
    fallback_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options per fallback grounder, e.g. {hand-object: {max_frames: 64}}."""

    def __post_init__(self) -> None:
        if not self.fallbacks:
            raise ValueError("auto grounder: fallbacks must name at least one grounder")
        for name in self.fallbacks:
            if name not in GROUNDERS.names() or name in ("auto", "manifest"):
                raise ValueError(f"auto grounder: fallbacks must be grounders that find a box, got {name!r}")


@GROUNDERS.register("auto", AutoConfig)
class AutoGrounder(Grounder):
    """The ingest default: a manifest's or ``--box``'s box is used as given; other inputs go to the first
    fallback that can be built (built on first need, so inputs with boxes never load a model)."""

    def __init__(self, config: AutoConfig | None = None) -> None:
        self.config = config or AutoConfig()
        self._grounder: Grounder | None = None
        self._grounder_name = ""
        self.name = "manifest"
        """The grounder that answered the last input (recorded in its episode)."""

    def _fallback(self) -> Grounder:
        if self._grounder is None:
            missing = []
            for name in self.config.fallbacks:
                try:
                    self._grounder = GROUNDERS.build(name, self.config.fallback_args.get(name, {}))
                except ModelNotAvailable as err:
                    missing.append(f"{name}: {err}")
                    continue
                self._grounder_name = name
                break
            else:
                raise ModelNotAvailable("auto grounder: no fallback can be built — " + "; ".join(missing))
            if missing:
                warnings.warn(f"auto grounder uses {self._grounder_name}: {'; '.join(missing)}", stacklevel=2)
        return self._grounder

    def ground(self, frames: np.ndarray, prompt: str, given_box: Box | None = None) -> list[Box]:
        if given_box is not None:
            self.name = "manifest"
            return [given_box]
        boxes = self._fallback().ground(frames, prompt, None)
        self.name = self._grounder_name
        return boxes
