"""Find the object a prompt names: ``hand-object`` and ``motion`` (no download), ``manifest`` (a given box),
``grounding-dino`` and ``owlv2`` (transformers), picked by name from ``GROUNDERS``."""

from im2flow2act.preprocessing.grounding import given, hands, hf, motion  # noqa: F401  (registers the grounders)
from im2flow2act.preprocessing.grounding.base import (
    GROUNDERS,
    Box,
    Grounder,
    ImageGrounder,
    ModelNotAvailable,
    NoObjectFound,
)

__all__ = ["GROUNDERS", "Box", "Grounder", "ImageGrounder", "ModelNotAvailable", "NoObjectFound"]
