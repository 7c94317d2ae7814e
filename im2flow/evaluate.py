"""``im2flow2act flow eval``: metrics of a trained generator on held-out clips, beside three baselines.

Methods (every one answers the same question — the flow of the held-out clip from its first frame,
instruction and query grid):
- ``im2flow``: the trained generator, K samples.
- ``regression``: the same network trained with plain MSE (optional: a second run folder).
- ``zero motion``: every point stays where it is.
- ``nearest``: the training clip with the same instruction whose first frame looks most alike (32×32
  thumbnails), its motion moved onto the held-out query grid.
Instruction following uses scenes that admit several instructions (pick & place and pouring share their
layout for a seed): generate for each instruction and count it right when the flow is closer to the true
flow of *that* instruction than of the other.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from im2flow2act.im2flow.data import ClipConfig, FlowClips, build_clips
from im2flow2act.im2flow.flow_image import decode
from im2flow2act.im2flow.generator import FlowGenerator, load_generator
from im2flow2act.im2flow.metrics import ade, flow_metrics
from im2flow2act.im2flow.pictures import write_comparison
from im2flow2act.im2flow.train import EXPORT

Method = Callable[[FlowClips, list[int], list[str]], np.ndarray]


@dataclass
class FlowEvalConfig:
    run: str = "outputs/im2flow"
    """Training run folder: generator/ (the model) and clips.npz (its held-out split is evaluated)."""
    generator: str = ""
    """A model folder to evaluate instead of the run's generator/ (e.g. a released one); clips.npz still
    comes from ``run``."""
    regression_run: str = ""
    """Optional run folder of the same network trained with objective=regression (a baseline column)."""
    held_out_per_task: int = 10
    num_samples: int = 4
    """K for min-of-K ADE."""
    batch_size: int = 16
    seed: int = 0
    guidance_scale: float | None = None
    """Classifier-free guidance for sampling; None keeps the generator's own (set at training)."""
    train_clips: int = 0
    """Also score the generator on this many training clips (spread over the split): the gap to the
    held-out ADE shows memorisation."""
    gifs: bool = True
    held_out_data: list[str] = field(default_factory=list)
    """Flow datasets to score on instead of the run's held-out split — e.g. ``sim demos layouts=outside``
    demonstrations, layouts no training clip nearly copies; retrieval still draws from the run's training
    clips. Their box grids are tracked with ``tracker`` when their stored tracks are not that grid."""
    tracker: str = "lk"


def to_points(flows: np.ndarray, queries: np.ndarray, generator: FlowGenerator) -> np.ndarray:
    """Flow videos (..., T, 3, G, G) → (..., T, N, 3) as (x, y, visibility)."""
    tracks, visibility = decode(flows, queries, generator.config.flow)
    return np.concatenate([tracks, visibility[..., None].astype(np.float32)], axis=-1)


def generator_method(generator: FlowGenerator, num_samples: int, batch_size: int, seed: int) -> Method:
    def run(clips: FlowClips, index: list[int], texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(index), batch_size):
            idx = index[start : start + batch_size]
            flows = generator.generate(
                torch.from_numpy(clips.images[idx]),
                torch.from_numpy(clips.queries[idx]),
                texts[start : start + batch_size],
                num_samples,
                seed + start,
            ).numpy()
            out += [to_points(f, clips.queries[i], generator) for f, i in zip(flows, idx, strict=True)]
        return np.stack(out)  # (B, K, T, N, 3)

    return run


def zero_motion_method(num_frames: int) -> Method:
    def run(clips: FlowClips, index: list[int], texts: list[str]) -> np.ndarray:
        out = []
        for i in index:
            q = clips.queries[i]
            still = np.concatenate([q[:, 1:3], np.ones((len(q), 1), np.float32)], axis=-1)
            out.append(np.broadcast_to(still, (1, num_frames, *still.shape)))
        return np.stack(out)

    return run


def _thumbnail(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() / 255.0


def nearest_method(train: FlowClips, generator: FlowGenerator) -> Method:
    thumbs = np.stack([_thumbnail(im) for im in train.images])
    train_points = [to_points(f, q, generator) for f, q in zip(train.flows, train.queries, strict=True)]

    def run(clips: FlowClips, index: list[int], texts: list[str]) -> np.ndarray:
        out = []
        for i, text in zip(index, texts, strict=True):
            same = [j for j, t in enumerate(train.tasks) if t == text] or list(range(len(train)))
            j = same[int(np.argmin(((thumbs[same] - _thumbnail(clips.images[i])) ** 2).sum(1)))]
            moved = train_points[j].copy()
            moved[..., :2] += clips.queries[i][None, :, 1:3] - train.queries[j][None, :, 1:3]
            moved[..., :2] = np.clip(moved[..., :2], 0.0, 1.0)
            out.append(moved[None])
        return np.stack(out)

    return run


def instruction_pairs(clips: FlowClips) -> list[tuple[int, int]]:
    """Held-out clips sharing a first frame but not an instruction (e.g. pick & place vs pour, same seed)."""
    n = len(clips)
    return [
        (a, b)
        for a in range(n)
        for b in range(n)
        if clips.tasks[a] != clips.tasks[b] and np.array_equal(clips.images[a], clips.images[b])
    ]


def _nanmean(values: list[float]) -> float:
    """The mean of the defined values; NaN, without a warning, when none is (no still point on a mug)."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def evaluate_method(
    method: Method, held: FlowClips, true: list[np.ndarray], pairs: list[tuple[int, int]]
) -> dict:
    """Metrics per task and overall, instruction following on ``pairs``, seconds per flow."""
    index = list(range(len(held)))
    started = time.perf_counter()
    samples = method(held, index, held.tasks)
    seconds = (time.perf_counter() - started) / max(len(index), 1)
    per_clip = [flow_metrics(samples[i], true[i]) for i in index]
    by_task: dict[str, dict[str, float]] = {}
    for task in dict.fromkeys(held.tasks):
        rows = [m for m, t in zip(per_clip, held.tasks, strict=True) if t == task]
        by_task[task] = {k: _nanmean([r[k] for r in rows]) for k in rows[0]}
    overall = {k: _nanmean([r[k] for r in per_clip]) for k in per_clip[0]}
    followed = None
    if pairs:  # clip a was generated with its own instruction above: is it nearer a's flow than b's?
        right = [ade(samples[a][0], true[a]) < ade(samples[a][0], true[b]) for a, b in pairs]
        followed = float(np.mean(right))
    return {
        "overall": overall,
        "by_task": by_task,
        "instruction_following": followed,
        "seconds_per_flow": seconds,
        "samples": samples,
    }


def evaluate(config: FlowEvalConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run every method on the held-out clips; write metrics.json, metrics.md and comparison GIFs."""
    run = Path(config.run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = load_generator(config.generator or run / EXPORT)
    if config.guidance_scale is not None:
        generator.config.guidance_scale = config.guidance_scale
    train, held = FlowClips.load(run / "clips.npz").split(config.held_out_per_task)
    if config.held_out_data:
        clip_config = ClipConfig(generator.config.flow, config.tracker, {}, held_out_per_task=0)
        key = hashlib.sha1("\n".join(map(str, config.held_out_data)).encode()).hexdigest()[:10]
        cache = out / f"held_out_clips_{key}.npz"  # one cache per list of datasets
        held, problems = build_clips(config.held_out_data, clip_config, cache, progress)
        for problem in problems:
            print(f"skipped {problem}")
    pairs = instruction_pairs(held)
    true = [to_points(f, q, generator) for f, q in zip(held.flows, held.queries, strict=True)]
    methods: dict[str, Method] = {
        "im2flow": generator_method(generator, config.num_samples, config.batch_size, config.seed)
    }
    if config.regression_run:
        regression = load_generator(Path(config.regression_run) / EXPORT)
        methods["regression"] = generator_method(regression, 1, config.batch_size, config.seed)
    if len(train):  # retrieval needs clips to retrieve from
        methods["nearest"] = nearest_method(train, generator)
    methods["zero motion"] = zero_motion_method(generator.config.flow.num_frames)
    results = {}
    for name, method in tqdm(methods.items(), desc="flow eval", disable=not progress):
        results[name] = evaluate_method(method, held, true, pairs)
    if config.gifs:
        _write_gifs(out / "gifs", held, true, results)
    fit = train_fit(methods["im2flow"], train, config.train_clips, generator)
    summary = {
        "held_out_clips": len(held),
        "instruction_pairs": len(pairs),
        "num_samples": config.num_samples,
        "guidance_scale": generator.config.guidance_scale,
        "methods": {k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in results.items()},
        **({"train_fit": fit} if fit else {}),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out / "metrics.md").write_text(markdown_table(summary))
    return summary


def train_fit(method: Method, train: FlowClips, count: int, generator: FlowGenerator) -> dict:
    """The generator's metrics on ``count`` training clips spread over the split ({} when count is 0)."""
    if count <= 0 or not len(train):
        return {}
    seen = train.subset(np.linspace(0, len(train) - 1, min(count, len(train))).round().astype(int))
    true = [to_points(f, q, generator) for f, q in zip(seen.flows, seen.queries, strict=True)]
    result = evaluate_method(method, seen, true, [])
    return {"clips": len(seen), "overall": result["overall"], "by_task": result["by_task"]}


def _write_gifs(folder: Path, held: FlowClips, true: list[np.ndarray], results: dict) -> None:
    for task in dict.fromkeys(held.tasks):
        i = held.tasks.index(task)
        flows = [results[m]["samples"][i][0] for m in results] + [true[i]]
        labels = [*results, "true"]
        write_comparison(folder / f"{held.names[i]}.gif", held.images[i], held.queries[i], flows, labels)


def markdown_table(summary: dict) -> str:
    lines = [
        f"Held-out clips: {summary['held_out_clips']}; K = {summary['num_samples']} samples "
        f"(guidance {summary.get('guidance_scale', '–')}); "
        f"pixels of a 256-pixel frame; instruction pairs: {summary['instruction_pairs']}",
        "",
        "| method | ADE | FDE | min-of-K ADE | moving-part ADE | visibility acc. | instruction following "
        "| s / flow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        o = m["overall"]
        follow = "–" if m["instruction_following"] is None else f"{m['instruction_following']:.0%}"
        lines.append(
            f"| {name} | {o['ade']:.1f} | {o['fde']:.1f} | {o['min_ade']:.1f} "
            f"| {o.get('moving_ade', np.nan):.1f} | {o['visibility_acc']:.0%} | {follow} "
            f"| {m['seconds_per_flow']:.3f} |"
        )
    if "train_fit" in summary:
        fit, held_ade = summary["train_fit"], summary["methods"]["im2flow"]["overall"]["ade"]
        lines += [
            "",
            f"im2flow on {fit['clips']} training clips: ADE {fit['overall']['ade']:.1f} "
            f"(held out: {held_ade:.1f}); a large gap means memorisation",
        ]
    lines += _per_task_table(
        summary,
        "ADE per task (moving-part ADE):",
        lambda r: f"{r['ade']:.1f} ({r.get('moving_ade', np.nan):.1f})",
    )
    lines += _per_task_table(
        summary,
        "The moving part's reach (generated / true first-to-last displacement, 1 = as far) and the still "
        "part's drift (px):",
        lambda r: f"{r.get('moving_reach', np.nan):.2f} / {r.get('still_drift', np.nan):.1f}",
    )
    return "\n".join(lines) + "\n"


def _per_task_table(summary: dict, title: str, cell: Callable[[dict], str]) -> list[str]:
    """Lines of a table with a row per method and a column per task, each cell ``cell(by_task row)``."""
    tasks = _tasks(summary)
    lines = ["", title, "", "| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, m in summary["methods"].items():
        lines.append(f"| {name} | " + " | ".join(cell(m["by_task"][t]) for t in tasks) + " |")
    return lines


def _tasks(summary: dict) -> list[str]:
    first = next(iter(summary["methods"].values()))
    return list(first["by_task"])
