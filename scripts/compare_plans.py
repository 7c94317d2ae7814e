"""Draw a generated plan beside the simulator's own plan of the same demonstration, over the scene.

    MUJOCO_GL=egl .venv/bin/python scripts/compare_plans.py --run runs/full --task open_drawer \
        --demos open_drawer_000053 open_drawer_000059 [--out outputs/compare_plans.jpg]

For each held-out demonstration named: the scene rendered at its layout, the simulator's tracks of its
moving points (green: the plan the policy follows best) and the plan the run's generator makes from the
scene and the instruction (red), as the evaluation's ``generated`` plan source makes it before rigid
completion (medoid of ``--flows`` samples, points on the object, moving ones). Dots are where the points
start, lines where they go, crosses the mean start (the policy's object frame is anchored there).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

GREEN, RED = (0, 190, 0), (0, 0, 255)


def draw_plan(image: np.ndarray, tracks: np.ndarray, colour: tuple[int, int, int], lines: int = 40) -> None:
    """Tracks (T, N, 2) normalised, drawn in place onto ``image`` (BGR)."""
    size = np.array(image.shape[1::-1])
    pixels = tracks * size
    for i in range(0, tracks.shape[1], max(1, tracks.shape[1] // lines)):
        cv2.polylines(image, [pixels[:, i].astype(np.int32)], False, colour, 1, cv2.LINE_AA)
    for x, y in pixels[0]:
        cv2.circle(image, (int(x), int(y)), 3, colour, -1)
    cx, cy = pixels[0].mean(axis=0)
    cv2.drawMarker(image, (int(cx), int(cy)), colour, cv2.MARKER_CROSS, 30, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `pipeline run` folder")
    parser.add_argument("--task", required=True)
    parser.add_argument("--demos", nargs="+", required=True, help="demonstration names in the run's demos")
    parser.add_argument("--flows", type=int, default=4)
    parser.add_argument("--scale", type=int, default=3, help="drawing scale of the frame")
    parser.add_argument("--out", type=Path, default=Path("outputs/compare_plans.jpg"))
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")

    from im2flow2act.im2flow.generator import load_generator
    from im2flow2act.policies.plans import (
        GeneratedPlanConfig,
        moving_points,
        on_object_mask,
        plan_from_generator,
    )
    from im2flow2act.policies.sim.env import SimEnv
    from im2flow2act.policies.sim.scene import SceneConfig
    from im2flow2act.preprocessing.dataset import FlowDataset
    from im2flow2act.preprocessing.tracks import grid_in_box

    generator = load_generator(args.run / "4_im2flow" / "generator")
    views = {v.name: v for v in FlowDataset(args.run / "1_demos" / "dataset.zarr") if v.name in args.demos}
    missing = sorted(set(args.demos) - set(views))
    if missing:
        raise SystemExit(f"not in {args.run / '1_demos'}: {', '.join(missing)}")
    tiles = []
    with SimEnv(args.task, "robot", SceneConfig(image_size=views[args.demos[0]].frame_size)) as env:
        for name in args.demos:
            view = views[name]
            env.reset(int(view.attrs["seed"]))
            scene = env.render()
            box = view.attrs["bbox"]
            keep = on_object_mask(view, grid_in_box(box, generator.config.flow.grid_size))
            truth, _ = moving_points(view.tracks, view.visibility)
            generated, _ = plan_from_generator(
                generator,
                scene,
                view.task,
                box,
                args.flows,
                GeneratedPlanConfig.moving_threshold_px,
                int(view.attrs["seed"]),
                keep,
            )
            h, w = scene.shape[:2]
            tile = cv2.resize(
                cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), (w * args.scale, h * args.scale), cv2.INTER_NEAREST
            )
            draw_plan(tile, truth, GREEN)
            draw_plan(tile, generated, RED)
            label = f"{name}: simulator {truth.shape[1]} pts, generated {generated.shape[1]}"
            cv2.putText(tile, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(tiles, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"picture: {args.out}")


if __name__ == "__main__":
    main()
