"""The grounding interface: find the object a prompt names, as boxes in normalised xyxy.

Image grounders (Grounding DINO, OWLv2) implement ``detect(image, prompt)``; every grounder implements
``ground(frames, prompt, given_box)``, which ingest calls — the motion grounder needs the whole clip, the
manifest grounder only the box it was given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from im2flow2act.core.registry import Registry
from im2flow2act.preprocessing.pretrained import ModelNotAvailable  # noqa: F401  (re-exported: grounders raise it)

GROUNDERS: Registry[Grounder] = Registry("grounder")


@dataclass(frozen=True)
class Box:
    """A detection: normalised (x0, y0, x1, y1), a score, and the text it answers."""

    xyxy: tuple[float, float, float, float]
    score: float = 1.0
    label: str = ""

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.xyxy
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class NoObjectFound(RuntimeError):
    """The grounder found nothing for the prompt (or, for motion, nothing moving)."""


class Grounder(ABC):
    @abstractmethod
    def ground(self, frames: np.ndarray, prompt: str, given_box: Box | None = None) -> list[Box]:
        """Boxes for the object in ``frames[0]``, best first; raises :class:`NoObjectFound` if none."""


class ImageGrounder(Grounder):
    """A grounder that looks at one image: grounds on the first frame."""

    @abstractmethod
    def detect(self, image: np.ndarray, prompt: str) -> list[Box]:
        """Boxes (best first) for ``prompt`` in an RGB uint8 image; empty when none passes the thresholds."""

    def ground(self, frames: np.ndarray, prompt: str, given_box: Box | None = None) -> list[Box]:
        if not prompt.strip():
            raise NoObjectFound("no object prompt given (use --prompt or an object_prompt column)")
        boxes = self.detect(frames[0], prompt)
        if not boxes:
            raise NoObjectFound(f"nothing matching {prompt!r} was detected in the first frame")
        return boxes


def clip_box(xyxy, width: float = 1.0, height: float = 1.0) -> tuple[float, float, float, float]:
    """A pixel box → normalised and clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    return (
        float(np.clip(x0 / width, 0, 1)),
        float(np.clip(y0 / height, 0, 1)),
        float(np.clip(x1 / width, 0, 1)),
        float(np.clip(y1 / height, 0, 1)),
    )
