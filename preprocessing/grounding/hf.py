"""Open-vocabulary detectors from ``transformers``: Grounding DINO and OWLv2.

Both load from a local folder or a Hub id (``model`` in their config), once per process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from im2flow2act.preprocessing.grounding.base import GROUNDERS, Box, ImageGrounder, clip_box
from im2flow2act.preprocessing.pretrained import load_once


@dataclass
class GroundingDinoConfig:
    model: str = "IDEA-Research/grounding-dino-tiny"
    """A Hub id, or a local folder saved with ``save_pretrained`` (model + processor)."""
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    device: str = "cpu"


@dataclass
class Owlv2Config:
    model: str = "google/owlv2-base-patch16-ensemble"
    threshold: float = 0.2
    device: str = "cpu"


def _load_detector(source: str, device: str):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    processor = AutoProcessor.from_pretrained(source)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(source).to(device).eval()
    return model, processor


def _sorted_boxes(result: dict, width: int, height: int, prompt: str) -> list[Box]:
    boxes = [
        Box(clip_box(b.tolist(), width, height), float(s), prompt)
        for b, s in zip(result["boxes"], result["scores"], strict=True)
    ]
    return sorted((b for b in boxes if b.area > 0), key=lambda b: b.score, reverse=True)


@GROUNDERS.register("grounding-dino", GroundingDinoConfig)
class GroundingDino(ImageGrounder):
    def __init__(self, config: GroundingDinoConfig | None = None) -> None:
        self.config = config or GroundingDinoConfig()
        c = self.config
        self.model, self.processor = load_once(
            "grounding-dino",
            c.model,
            c.device,
            lambda s: _load_detector(s, c.device),
            "grounder_args.model",
            GroundingDinoConfig.model,
        )

    def detect(self, image: np.ndarray, prompt: str) -> list[Box]:
        import torch

        text = prompt.strip().lower()
        text = text if text.endswith(".") else text + "."  # Grounding DINO's phrase separator
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.config.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        h, w = image.shape[:2]
        result = self.processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.config.box_threshold,
            text_threshold=self.config.text_threshold,
            target_sizes=[(h, w)],
        )[0]
        return _sorted_boxes(result, w, h, prompt)


@GROUNDERS.register("owlv2", Owlv2Config)
class Owlv2(ImageGrounder):
    def __init__(self, config: Owlv2Config | None = None) -> None:
        self.config = config or Owlv2Config()
        c = self.config
        self.model, self.processor = load_once(
            "owlv2",
            c.model,
            c.device,
            lambda s: _load_detector(s, c.device),
            "grounder_args.model",
            Owlv2Config.model,
        )

    def detect(self, image: np.ndarray, prompt: str) -> list[Box]:
        import torch

        inputs = self.processor(text=[[prompt.strip()]], images=image, return_tensors="pt").to(
            self.config.device
        )
        with torch.inference_mode():
            outputs = self.model(**inputs)
        h, w = image.shape[:2]
        side = max(h, w)  # OWLv2 pads to a square before resizing: boxes come back in the padded frame
        result = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.config.threshold, target_sizes=[(side, side)]
        )[0]
        return _sorted_boxes(result, w, h, prompt)
