"""A contact sheet: a few frames (tracks drawn) of one episode per task from each given dataset.

    .venv/bin/python scripts/contact_sheet.py outputs/sim_demos/dataset.zarr outputs/sim_play/dataset.zarr \
        --out docs/sim_contact_sheet.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from preprocessing.dataset import FlowDataset
from preprocessing.visualize import draw_tracks


def episode_strip(view, columns: int, label: str) -> np.ndarray:
    frames = np.asarray(view.frames[...])
    drawn = draw_tracks(frames, view.tracks, view.visibility, trail=6, occluded="hide")
    picks = np.linspace(0, len(frames) - 1, columns).round().astype(int)
    strip = np.concatenate([drawn[i] for i in picks], axis=1).copy()
    cv2.putText(strip, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(strip, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/sim_contact_sheet.png"))
    parser.add_argument("--columns", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for path in args.datasets:
        ds = FlowDataset(path)
        seen: set[str] = set()
        for view in ds:
            scene = str(view.attrs.get("task_name", view.task))
            if scene in seen:
                continue
            seen.add(scene)
            label = f"{ds.kind}: {scene} ({view.attrs.get('embodiment', '')}) - {view.task}"
            rows.append(episode_strip(view, args.columns, label))
    sheet = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out, optimize=True)
    print(f"{len(rows)} episodes → {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
