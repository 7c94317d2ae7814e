"""The ``manifest`` grounder: the box comes with the input (a manifest column or ``--box``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from im2flow2act.preprocessing.grounding.base import GROUNDERS, Box, Grounder, NoObjectFound


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
