"""A contact sheet: frames (tracks drawn) of one episode per task per dataset, or of overlay videos.

    .venv/bin/python scripts/contact_sheet.py outputs/sim_demos/dataset.zarr outputs/sim_play/dataset.zarr \
        --out docs/results/sim_contact_sheet.png
    .venv/bin/python scripts/contact_sheet.py outputs/ingest/overlays/*.mp4 \
        --out docs/results/ingest_contact_sheet.jpg
    .venv/bin/python scripts/contact_sheet.py outputs/im2flow/bench_eval/gifs/*.gif --last \
        --out outputs/flowgen_samples.jpg   # generated vs true flows: each GIF's last frame, full size
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from im2flow2act.preprocessing.dataset import FlowDataset
from im2flow2act.preprocessing.video import read_video
from im2flow2act.preprocessing.visualize import draw_tracks


def strip_of(frames: np.ndarray, columns: int, label: str) -> np.ndarray:
    picks = np.linspace(0, len(frames) - 1, columns).round().astype(int)
    strip = np.concatenate([frames[i] for i in picks], axis=1).copy()
    cv2.putText(strip, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(strip, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "datasets", nargs="+", type=Path, help="flow datasets (.zarr) or overlay videos (.mp4)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results/sim_contact_sheet.png"))
    parser.add_argument("--columns", type=int, default=5)
    parser.add_argument("--last", action="store_true", help="videos: only the last frame, at full size")
    args = parser.parse_args()
    rows = []
    for path in args.datasets:
        if path.suffix in (".mp4", ".gif"):  # an overlay video: tracks are already drawn
            if args.last:
                rows.append(strip_of(read_video(path)[0][-1:], 1, path.stem))
            else:
                rows.append(strip_of(read_video(path, size=(320, 240))[0], args.columns, path.stem))
            continue
        ds = FlowDataset(path)
        seen: set[str] = set()
        for view in ds:
            scene = str(view.attrs.get("task_name", view.task))
            if scene in seen:
                continue
            seen.add(scene)
            label = f"{ds.kind}: {scene} ({view.attrs.get('embodiment', '')}) - {view.task}"
            drawn = draw_tracks(
                np.asarray(view.frames[...]), view.tracks, view.visibility, trail=6, occluded="hide"
            )
            rows.append(strip_of(drawn, args.columns, label))
    sheet = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(
        args.out, optimize=True, **({"quality": 85} if args.out.suffix == ".jpg" else {})
    )
    print(f"{len(rows)} episodes → {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
