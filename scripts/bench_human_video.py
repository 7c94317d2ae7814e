"""Benchmark the weight-free human-video path on the hand-labelled shared clips: grounders × trackers.

    .venv/bin/python scripts/bench_human_video.py [--videos ../shared/data/videos]
        [--labels data/labels/human_clips.json] [--sheet outputs/bench/human_video_sheet.png]
        [--out outputs/bench/human_video.jsonl]

Per clip (read whole, resized to 256×256 as ingest does) and grounder: the first-frame box and its IoU
with the labelled box, and the grounder's frames per second. Then per tracker, as ingest would run it:
a 16×16 grid of queries in that box plus the labelled points, tracked over the whole clip, then the drift
check (``preprocessing/drift.py``). At every labelled frame where the labelled point is visible:

* ``within 8``: the tracked position lies within 8 px (of the 256-pixel frame) of the label;
* ``kept``: within 8 px *and* still visible after the drift check — the done criterion;
* ``caught``: of the positions more than 8 px off that the tracker called visible, the share the drift
  check turned off; ``false off``: of the positions within 8 px, the share it turned off;
* ``grid kept``: the episode's track-quality figure, the share of grid points visible at the end.

``manifest`` grounds with the labelled box itself: the trackers' figures without grounding errors.
``object-lk+dis`` and ``object-lk+affine`` are ``object-lk`` with DIS flow as each point's measure, and
with an affine frame-to-frame motion instead of a similarity.
Prints a markdown table, appends a JSON row and draws a contact sheet: per clip the labelled frames with
the labelled points (crosses) and the tracked ones (dots: green visible, red not), and the box found
(red) against the labelled one (green).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
LABELS = REPO / "data" / "labels" / "human_clips.json"
GROUNDERS_RUN = ("manifest", "motion", "hand-object")
TRACKERS_RUN = {
    "lk": {},
    "object-lk": {},
    "object-lk+dis": {"measure": "dis"},
    "object-lk+affine": {"motion": "affine"},
}
TOLERANCE_PX = 8.0


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def labelled(clip: dict) -> tuple[np.ndarray, list[tuple[int, int, np.ndarray | None]]]:
    """(queries (P, 3) of the labelled points at frame 0, [(point, frame, label px or None)])."""
    points = list(clip["points"].values())
    queries = np.array([[0.0, p["0"][0] / 256, p["0"][1] / 256] for p in points], np.float32)
    checks = [
        (i, int(t), None if xy is None else np.array(xy, np.float64))
        for i, p in enumerate(points)
        for t, xy in p.items()
        if int(t) > 0
    ]
    return queries, checks


def run_tracker(name, options, frames, queries):
    from im2flow2act.preprocessing.drift import mark_drift
    from im2flow2act.preprocessing.trackers import TRACKERS

    tracker = TRACKERS.build(name.split("+")[0], options)
    started = time.perf_counter()
    tracks, visibility = tracker.track(frames, queries)
    seconds = time.perf_counter() - started
    checked = mark_drift(frames, tracks, visibility, queries)
    return tracks, visibility, checked, seconds


def score(tracks, visibility, checked, checks, grid_from: int) -> dict:
    within = kept = wrong_visible = caught = right = false_off = 0
    for i, t, xy in checks:
        if xy is None:
            continue
        error = float(np.linalg.norm(tracks[t, i] * 256 - xy))
        ok = error <= TOLERANCE_PX
        within += ok
        kept += ok and bool(checked[t, i])
        if not ok and visibility[t, i]:
            wrong_visible += 1
            caught += not checked[t, i]
        if ok:
            right += 1
            false_off += not checked[t, i]
    total = sum(xy is not None for _, _, xy in checks)
    return {
        "labelled": total,
        "within": within / total,
        "kept": kept / total,
        "caught": caught / wrong_visible if wrong_visible else float("nan"),
        "false_off": false_off / right if right else float("nan"),
        "grid_kept": float(checked[-1, grid_from:].mean()),
    }


def draw(frames, clip, box, tracks, checked, checks, num_points) -> np.ndarray:
    times = sorted({0, *(t for _, t, _ in checks)})
    tiles = []
    for t in times:
        img = cv2.resize(frames[t], (384, 384), interpolation=cv2.INTER_CUBIC)[:, :, ::-1].copy()
        s = 384 / 256
        if t == 0:
            x0, y0, x1, y1 = (int(v * s) for v in clip["box"])
            cv2.rectangle(img, (x0, y0), (x1, y1), (0, 255, 0), 2)
            x0, y0, x1, y1 = (int(v * 384) for v in box)
            cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 255), 2)
        for i in range(num_points):
            x, y = tracks[t, i] * 384
            cv2.circle(img, (int(x), int(y)), 5, (0, 200, 0) if checked[t, i] else (0, 0, 255), -1)
        for _i, tt, xy in checks:
            if tt == t and xy is not None:
                cv2.drawMarker(img, (int(xy[0] * s), int(xy[1] * s)), (255, 255, 0), cv2.MARKER_CROSS, 16, 2)
        cv2.putText(img, f"t={t}", (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        tiles.append(img)
    return np.concatenate(tiles, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=VIDEOS)
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--sheet", type=Path, default=REPO / "outputs" / "bench" / "human_video_sheet.png")
    parser.add_argument("--sheet-grounder", default="hand-object")
    parser.add_argument("--sheet-tracker", default="object-lk")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "human_video.jsonl")
    args = parser.parse_args()

    from im2flow2act.core.bench_log import append_row
    from im2flow2act.preprocessing.grounding import GROUNDERS, Box
    from im2flow2act.preprocessing.tracks import grid_in_box
    from im2flow2act.preprocessing.video import read_video

    labels = json.loads(args.labels.read_text())["clips"]
    grounders = {name: GROUNDERS.build(name) for name in GROUNDERS_RUN}
    rows, ground_rows, sheet = [], [], []
    for clip_name, clip in labels.items():
        frames, _, _ = read_video(args.videos / clip["video"], size=(256, 256))
        queries, checks = labelled(clip)
        for g_name, grounder in grounders.items():
            given = Box(tuple(np.array(clip["box"], np.float64) / 256))
            started = time.perf_counter()
            box = grounder.ground(frames, clip["prompt"], given)[0]
            seconds = time.perf_counter() - started
            used = min(len(frames), getattr(grounder.config, "max_frames", len(frames)))
            overlap = iou(np.array(box.xyxy) * 256, clip["box"])
            ground_rows.append(
                {
                    "clip": clip_name,
                    "grounder": g_name,
                    "iou": overlap,
                    "fps": used / seconds if seconds else 0.0,
                    "box": [round(v * 256, 1) for v in box.xyxy],
                }
            )
            grid = grid_in_box(box.xyxy, 16)
            all_queries = np.concatenate([queries, grid])
            for t_name, options in TRACKERS_RUN.items():
                tracks, visibility, checked, seconds = run_tracker(t_name, options, frames, all_queries)
                row = score(tracks, visibility, checked, checks, len(queries))
                row.update(clip=clip_name, grounder=g_name, tracker=t_name, fps=len(frames) / seconds)
                rows.append(row)
                print(
                    f"{clip_name:<9} {g_name:<12} {t_name:<16} IoU {overlap:.2f}  "
                    f"within {row['within']:.0%}  "
                    f"kept {row['kept']:.0%}  grid kept {row['grid_kept']:.0%}  {row['fps']:.0f} fps",
                    flush=True,
                )
                if g_name == args.sheet_grounder and t_name == args.sheet_tracker:
                    sheet.append(draw(frames, clip, box.xyxy, tracks, checked, checks, len(queries)))

    print("\nGrounding (first-frame box against the labelled box)\n")
    print("| clip | " + " | ".join(g for g in GROUNDERS_RUN if g != "manifest") + " |")
    print("|---|" + "---|" * (len(GROUNDERS_RUN) - 1))
    for clip_name in labels:
        cells = [
            f"{r['iou']:.2f} ({r['fps']:.0f} fps)"
            for g in GROUNDERS_RUN
            if g != "manifest"
            for r in ground_rows
            if r["clip"] == clip_name and r["grounder"] == g
        ]
        print(f"| {clip_name} | " + " | ".join(cells) + " |")

    print("\nTracking the labelled points (all clips pooled, each labelled point-frame counts once)\n")
    print(
        "| grounder | tracker | within 8 px | kept (visible, within 8 px) | drift caught | false off "
        "| grid kept to end | fps |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for g in GROUNDERS_RUN:
        for t in TRACKERS_RUN:
            sel = [r for r in rows if r["grounder"] == g and r["tracker"] == t]
            weight = np.array([r["labelled"] for r in sel], float)

            def pooled(key, sel=sel, weight=weight):
                values = np.array([r[key] for r in sel], float)
                ok = np.isfinite(values)
                return float(np.average(values[ok], weights=weight[ok])) if ok.any() else float("nan")

            figures = {k: pooled(k) for k in ("within", "kept", "caught", "false_off")}
            figures["grid_kept"] = float(np.mean([r["grid_kept"] for r in sel]))
            figures["fps"] = float(np.mean([r["fps"] for r in sel]))
            summary[f"{g}/{t}"] = figures
            print(
                f"| {g} | {t} | {figures['within']:.0%} | {figures['kept']:.0%} | {figures['caught']:.0%} | "
                f"{figures['false_off']:.0%} | {figures['grid_kept']:.0%} | {figures['fps']:.0f} |"
            )
    print("\nPer clip, kept (visible, within 8 px):\n")
    print("| grounder / tracker | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for g in GROUNDERS_RUN:
        for t in TRACKERS_RUN:
            cells = [
                f"{r['kept']:.0%} of {r['labelled']}"
                for c in labels
                for r in rows
                if r["clip"] == c and r["grounder"] == g and r["tracker"] == t
            ]
            print(f"| {g} / {t} | " + " | ".join(cells) + " |")
    if sheet:
        width = max(s.shape[1] for s in sheet)
        padded = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s in sheet]
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(args.sheet), np.concatenate(padded, axis=0))
        print(f"\ncontact sheet ({args.sheet_grounder} + {args.sheet_tracker}): {args.sheet}")
    append_row(args.out, "human_video", grounding=ground_rows, tracking=rows, summary=summary)


if __name__ == "__main__":
    main()
