"""Inputs of ``flow sample``: the first frame of an image or video, and the object box in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from im2flow2act.preprocessing.grounding import GROUNDERS, NoObjectFound
from im2flow2act.preprocessing.sources import parse_box
from im2flow2act.preprocessing.tracks import box_to_normalized
from im2flow2act.preprocessing.video import read_video

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def first_frame(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file, or the first frame of a video."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            return np.asarray(Image.open(path).convert("RGB"))
        except UnidentifiedImageError as err:
            raise ValueError(f"{path} is not a readable image") from err
    return read_video(path, end=1)[0][0]


def object_box(
    image: np.ndarray, box: str | None, grounder: str | None, prompt: str
) -> tuple[float, float, float, float]:
    """Normalised xyxy: the given pixel box, or the best detection of an image grounder."""
    h, w = image.shape[:2]
    if box:
        return tuple(float(v) for v in box_to_normalized(parse_box(box), (w, h)))
    if not grounder:
        raise ValueError("give the object box with --box x0,y0,x1,y1 or a detector with --grounder")
    if grounder in ("motion", "manifest"):
        raise ValueError(f"--grounder {grounder} needs a video or a given box; use --box for one image")
    boxes = GROUNDERS.build(grounder).ground(image[None], prompt)
    if not boxes:
        raise NoObjectFound(f"{grounder} found no {prompt!r}")
    return tuple(float(v) for v in boxes[0].xyxy)
