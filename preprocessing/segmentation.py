"""Optional object masks: SAM (transformers ``SamModel``) prompted with the grounded box.

With a mask, query points are a grid inside the mask instead of the whole box, so background inside the
box is not tracked as object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from im2flow2act.core.registry import Registry
from im2flow2act.preprocessing.grounding.base import Box
from im2flow2act.preprocessing.pretrained import load_once

SEGMENTERS: Registry = Registry("segmenter")


@dataclass
class SamConfig:
    model: str = "facebook/sam-vit-base"
    """A Hub id, or a local folder saved with ``save_pretrained`` (model + processor)."""
    device: str = "cpu"


def _load_sam(source: str, device: str):
    from transformers import SamModel, SamProcessor

    return SamModel.from_pretrained(source).to(device).eval(), SamProcessor.from_pretrained(source)


@SEGMENTERS.register("sam", SamConfig)
class SamSegmenter:
    def __init__(self, config: SamConfig | None = None) -> None:
        self.config = config or SamConfig()
        c = self.config
        self.model, self.processor = load_once(
            "sam",
            c.model,
            c.device,
            lambda s: _load_sam(s, c.device),
            "segmenter_args.model",
            SamConfig.model,
        )

    def segment(self, image: np.ndarray, box: Box) -> np.ndarray:
        """bool (H, W) mask of the object inside ``box`` (normalised xyxy) in an RGB image."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box.xyxy
        inputs = self.processor(
            images=image, input_boxes=[[[x0 * w, y0 * h, x1 * w, y1 * h]]], return_tensors="pt"
        )
        inputs = inputs.to(self.config.device)
        import torch

        with torch.inference_mode():
            outputs = self.model(**inputs, multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )
        return masks[0][0, 0].numpy().astype(bool)
