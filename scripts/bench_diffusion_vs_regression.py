"""Diffusion against regression for flows: does im2flow keep the demonstrations' modes a regressor averages?

    MUJOCO_GL=egl .venv/bin/python scripts/bench_diffusion_vs_regression.py
        [--tasks pick_place pour fold_cloth] [--demos 30] [--layouts 6] [--steps 1500] [--samples 8]
        [--work outputs/bench/diffusion_vs_regression] [--picture docs/results/diffusion_vs_regression.png]
        [--out outputs/bench/diffusion_vs_regression.jsonl]
        [--set generator.flow.displacement_scale=6 --tag _s6] [--guidance 1] [--split-layouts 10]
        [--pipeline runs/full [--policy-columns tracked/oracle generated/rigid-lk] [--play-episodes 5]
         [--play-windows 50]]
        [--parts flows policy]

One run, on this machine:

1. sphere demonstrations of each task (``sim demos``' seeds 0…, every mode drawn at random, as the
   pipeline makes them) train two generators with the same network, data, steps, batch and seed — one
   with the diffusion objective (im2flow), one with plain MSE regression;
2. ``--layouts`` held-out layouts per task (seeds from ``HELD_OUT_SEED``, never trained on) are
   demonstrated once per mode of the task (``Task.modes``: the detour's side; for the cloth also the
   corner), each mode forced, so every layout has one true flow per mode (LK on the rendered video, as
   training clips are made);
3. per layout, ``--samples`` diffusion samples (``--guidance``: none by default) and the regressor's one
   answer from the first frame and the instruction are classified by mode (``im2flow/modes.py``).

Prints per task: the share of layouts where the K samples cover every mode, the mean number of modes
covered, and for the first diffusion sample and the regressor's answer their distance to the nearest
mode's true flow and to the modes' mean flow (pixels of a 256-pixel frame, weighted to where the modes
differ); draws, for the first layout, the true flows of every mode, the K samples and the regressor's
answer over the first frame.

Then, with ``--split-layouts N`` (0 skips it), every method (diffusion, regression, nearest-neighbour
retrieval, zero motion; ``flow eval``'s metrics) on two held-out splits of N plain demonstrations per task:
``all`` (layouts drawn like the training ones: retrieval finds near copies) scored with the generators
above, and ``outside`` (arrangements of mug, plate and bowl, drawer and cloth positions no training
layout has; ``TaskConfig.layouts``) scored with a second pair trained on ``layouts=inside``
demonstrations.

With ``--pipeline RUN`` (a finished ``pipeline run`` folder, e.g. ``--preset full``), the same for actions:
its policy is trained again with the MSE objective (same config, play, steps and seed); both run in closed
loop on every task's held-out demonstrations, on each of ``--policy-columns`` (the demonstration's flow
with the oracle, and the system itself: generated flow with rigid-lk; the diffusion policy's episodes the
pipeline already ran are reused), with the tasks' progress measures; then, open loop,
on windows of play episodes never trained on, the spread of ``--policy-samples`` sampled chunks against the
regressor's one (``policies/multimodality.py``; run first, it takes minutes). Without it that half is
skipped.

Appends one JSON row with everything. Each stage is kept in ``--work`` and reused by a rerun.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from im2flow2act.policies.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 50_000
"""First seed of the held-out layouts: far from the training demonstrations' 0…demos-1."""
HELD_OUT_PLAY_SEED = 100_000
"""First seed of the play episodes of the open-loop look: far from the pipeline's play, 0…play-1."""
COLOURS = {0: (0, 200, 0), 1: (0, 120, 255), 2: (255, 160, 0), 3: (200, 0, 200)}


def mode_demonstrations(tasks: list[str], layouts: int, size: int, store: Path) -> None:
    """One sphere demonstration per (task, held-out layout, mode), the mode forced; resumable."""
    from im2flow2act.policies.sim.agents import follow
    from im2flow2act.policies.sim.env import SimEnv
    from im2flow2act.policies.sim.record import record
    from im2flow2act.policies.sim.scene import SceneConfig
    from im2flow2act.preprocessing.dataset import FlowDatasetWriter

    writer = FlowDatasetWriter(store, kind="sim_demo")
    for task in tasks:
        with SimEnv(task, "sphere", SceneConfig(image_size=(size, size))) as env:
            for k in range(layouts):
                seed = HELD_OUT_SEED + k
                for mode in env.task.modes:
                    name = layout_name(task, seed) + "__" + mode.replace("+", "-")
                    if writer.has(name):
                        continue

                    def agent(e, rng, mode=mode):
                        return follow(e, e.task.human(e.model, e.data, rng, mode=mode))

                    episode = record(env, seed, agent).episode
                    episode.attrs["human_mode"] = env.task.last_mode
                    writer.write(name, episode)
                print(f"{task} layout {seed}: {len(env.task.modes)} modes", flush=True)


def layout_name(task: str, seed: int) -> str:
    return f"{task}_{seed:06d}"


def parse_name(name: str) -> tuple[str, str]:
    """A mode episode's name → (layout, mode)."""
    layout, token = name.split("__")
    return layout, token.replace("-", "+")


def train(data: Path, run: Path, objective: str, steps: int, overrides: list[str]) -> Path:
    """One generator; returns its run folder. ``overrides`` are ``flow train`` config keys
    (``generator.flow.displacement_scale=6``) given to both objectives alike."""
    from im2flow2act.core.config import load_config
    from im2flow2act.im2flow.train import FlowTrainConfig, FlowTrainer

    config = load_config(FlowTrainConfig, None, overrides)
    config.data, config.held_out_per_task = [str(data)], 0
    config.max_steps, config.batch_size = steps, 32
    config.generator.objective = objective
    print(f"training the {objective} generator, {steps} steps → {run}", flush=True)
    FlowTrainer(config, run).fit()  # resumes from the run's checkpoint; a finished run only re-exports
    return run


def split_table(
    work: Path, args: argparse.Namespace, runs: dict[str, Path], held_out: Path, split: str
) -> dict:
    """``flow eval`` of the diffusion run (regression as a column) on ``held_out``; prints its tables."""
    from im2flow2act.im2flow.evaluate import FlowEvalConfig, evaluate, markdown_table

    config = FlowEvalConfig(
        run=str(runs["diffusion"]),
        regression_run=str(runs["regression"]),
        held_out_per_task=0,
        num_samples=4,
        gifs=False,
        held_out_data=[str(held_out)],
    )
    summary = evaluate(config, work / f"eval_{split}{args.tag}", progress=False)
    print(f"\nSplit `{split}` (diffusion: im2flow)\n\n{markdown_table(summary)}")
    methods = summary["methods"]
    return {
        name: {
            "ade": m["overall"]["ade"],
            "min_ade": m["overall"]["min_ade"],
            "instruction_following": m["instruction_following"],
            "ade_by_task": {task: row["ade"] for task, row in m["by_task"].items()},
        }
        for name, m in methods.items()
    }


def regression_policy(pipeline: Pipeline, work: Path) -> Path:
    """The pipeline's policy trained again, same config, play, steps and seed, with the MSE objective;
    returns its model folder (resumes from its checkpoint; a finished run only re-exports)."""
    from im2flow2act.core.config import load_config
    from im2flow2act.policies.train import TrainConfig, Trainer

    config = load_config(TrainConfig, pipeline.folder("policy") / "train_config.yaml")
    config.policy.objective = "regression"
    run = work / "policy_regression"
    print(f"training the regression policy, {config.max_steps} steps → {run}", flush=True)
    Trainer(config, run).fit()
    return run / "policy"


def closed_loop(pipeline: Pipeline, work: Path, column: str, workers: int, regression: Path) -> dict:
    """Both policies on every task's held-out demonstrations, on one of the pipeline's evaluation columns
    (``plan/tracker``, e.g. ``tracked/oracle``: the demonstration's flow; ``generated/rigid-lk``: the
    system's); the diffusion policy's episodes the pipeline already ran are adopted, not run again."""
    from im2flow2act.policies.evaluate import EpisodeLog, episode_log_path, evaluate
    from im2flow2act.policies.metrics import summary_markdown

    base = pipeline.evaluation_configs()[column]
    configs = {
        "diffusion": replace(base, videos=False, workers=workers),
        "regression": replace(base, policy=str(regression), videos=False, workers=workers),
    }
    done = episode_log_path(pipeline.folder("evaluate") / base.plan_source, base)
    summaries = {}
    for objective, config in configs.items():
        out = work / "policy_eval" / column.replace("/", "_") / objective
        out.mkdir(parents=True, exist_ok=True)
        taken = EpisodeLog(out, config).take_from(done)
        print(f"{objective} policy, {column}: {taken} episodes taken from {done}", flush=True)
        summaries[objective] = evaluate(config, out, progress=True)
        print(f"\n{objective} policy, {column}\n\n{summary_markdown(summaries[objective])}")
    return summaries


def open_loop(pipeline: Pipeline, work: Path, args: argparse.Namespace, regression: Path) -> dict:
    """Sampled chunks of both policies on windows of play never trained on (seeds from
    ``HELD_OUT_PLAY_SEED``), per task scene."""
    from im2flow2act.policies.data import PlayWindows
    from im2flow2act.policies.multimodality import chunk_report, sample_chunks
    from im2flow2act.policies.sim.generate import GenerateConfig, generate
    from im2flow2act.policies.train import load_policy

    config = pipeline.config
    play = work / "play_held_out"
    generate(
        "play",
        play,
        GenerateConfig(
            tasks=list(config.tasks),
            episodes=args.play_episodes,
            workers=args.workers,
            image_size=tuple(config.image_size),
            seed=HELD_OUT_PLAY_SEED,
        ),
    )
    policies = {
        "diffusion": load_policy(pipeline.folder("policy") / "policy"),
        "regression": load_policy(regression),
    }
    windows = PlayWindows(play / "dataset.zarr", config.policy.windows, seed=1)
    rng = np.random.default_rng(0)
    reports = {}
    for task in config.tasks:
        mine = [i for i, (e, _) in enumerate(windows.index) if windows.episodes[e].name.startswith(task)]
        if not mine:
            continue
        chosen = sorted(rng.choice(mine, size=min(args.play_windows, len(mine)), replace=False).tolist())
        diffusion, truth = sample_chunks(policies["diffusion"], windows, chosen, args.policy_samples)
        regression_chunks, _ = sample_chunks(policies["regression"], windows, chosen, 1)
        reports[task] = chunk_report(diffusion, regression_chunks[:, 0], truth)
    print(
        f"\nActions, open loop: {args.policy_samples} diffusion chunks vs the regressor's one on "
        f"{args.play_windows} windows per scene of {args.play_episodes} held-out play episodes per scene "
        "(end-effector paths, cm)\n"
    )
    print(
        "| scene | diffusion spread | diffusion first / best of K → play | regression → play | bimodal "
        "windows | on those, regression → nearer way / middle | gripper split |"
    )
    print("|---|---|---|---|---|---|---|")
    for task, r in reports.items():
        print(
            f"| {task} | {r['spread_cm']:.2f} | {r['diffusion_first_cm']:.2f} / "
            f"{r['diffusion_best_cm']:.2f} | {r['regression_cm']:.2f} | {r['bimodal']:.0%} | "
            f"{r['regression_to_nearest_cm']:.2f} / "
            f"{r['regression_to_middle_cm']:.2f} | {r['gripper_split']:.0%} |"
        )
    return reports


def policy_part(args: argparse.Namespace) -> dict:
    """The policy comparison on a finished pipeline run: open loop (minutes), then closed loop."""
    from im2flow2act.core.config import load_config
    from im2flow2act.policies.pipeline import Pipeline, PipelineConfig

    pipeline = Pipeline(load_config(PipelineConfig, args.pipeline / "pipeline_config.yaml"), args.pipeline)
    columns = sorted(pipeline.evaluation_configs())
    unknown = sorted(set(args.policy_columns) - set(columns))
    if unknown:  # before an hour of training, not after
        raise SystemExit(f"--policy-columns: {unknown} not among the run's columns {columns}")
    work = args.work / "policy"
    regression = regression_policy(pipeline, work)
    chunks = open_loop(pipeline, work, args, regression)
    columns = {c: closed_loop(pipeline, work, c, args.workers, regression) for c in args.policy_columns}
    print("\nActions, closed loop (plan / online tracker; successes and episodes holding the object)\n")
    tasks = list(next(iter(columns.values()))["diffusion"]["tasks"])
    print("| column | policy | " + " | ".join(tasks) + " |")
    print("|---|---|" + "---|" * len(tasks))
    for column, summaries in columns.items():
        for objective, summary in summaries.items():
            rows = summary["tasks"]
            cells = [
                f"{r['success_rate']:.0%} (held {r['held']}/{r['episodes']})" for r in map(rows.get, tasks)
            ]
            print(f"| {column} | {objective} | " + " | ".join(cells) + " |")
    return {"closed_loop": columns, "open_loop": chunks}


def path_px(flow: np.ndarray, size: int) -> np.ndarray:
    from im2flow2act.im2flow.modes import object_path

    return (object_path(flow) * size).astype(np.int32)


def draw(
    image: np.ndarray, truth: dict, samples: np.ndarray, regressed: np.ndarray, title: str
) -> np.ndarray:
    """The layout's first frame (512 px) with each mode's true object path (coloured, thick), the K
    diffusion samples (white, thin) and the regressor's answer (red, dashed)."""
    size = 512
    img = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)[:, :, ::-1].copy()
    for k, (mode, flow) in enumerate(truth.items()):
        cv2.polylines(img, [path_px(flow, size)], False, COLOURS[k % 4], 5, cv2.LINE_AA)
        cv2.putText(img, f"true: {mode}", (8, 50 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.6, COLOURS[k % 4], 2)
    for s in samples:
        cv2.polylines(img, [path_px(s, size)], False, (255, 255, 255), 1, cv2.LINE_AA)
    reg = path_px(regressed, size)
    for a, b in zip(reg[:-1:2], reg[1::2], strict=False):
        cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), (0, 0, 255), 3, cv2.LINE_AA)
    cv2.putText(img, title, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    cv2.putText(
        img,
        "white: diffusion samples   red: regression",
        (8, size - 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.55,
        (255, 255, 255),
        2,
    )
    return img


def flow_part(args: argparse.Namespace) -> dict:
    """Modes and the two held-out splits (the flows half); returns its part of the JSON row."""
    import torch

    from im2flow2act.im2flow.data import ClipConfig, build_clips
    from im2flow2act.im2flow.evaluate import to_points
    from im2flow2act.im2flow.generator import load_generator
    from im2flow2act.im2flow.modes import mode_report
    from im2flow2act.im2flow.train import EXPORT
    from im2flow2act.policies.sim.generate import GenerateConfig, generate

    work = args.work
    demos = work / "demos"
    cfg = GenerateConfig(
        tasks=list(args.tasks), episodes=args.demos, workers=args.workers, image_size=(args.size, args.size)
    )
    generate("demos", demos, cfg)
    modes_store = work / "modes" / "dataset.zarr"
    mode_demonstrations(args.tasks, args.layouts, args.size, modes_store)
    objectives = ("diffusion", "regression")
    runs = {
        objective: train(
            demos / "dataset.zarr", work / f"{objective}{args.tag}", objective, args.steps, args.set
        )
        for objective in objectives
    }
    generators = {objective: load_generator(runs[objective] / EXPORT) for objective in objectives}
    flow_config = generators["diffusion"].config.flow
    clips, problems = build_clips(
        [modes_store], ClipConfig(flow_config, "lk", {}, 0), work / f"mode_clips{args.tag}.npz"
    )
    assert not problems, problems

    layouts: dict[tuple[str, str], list[int]] = {}
    for i, name in enumerate(clips.names):
        layouts.setdefault((clips.tasks[i], parse_name(name)[0]), []).append(i)

    rows, picture = [], None
    order = {task: k for k, task in enumerate(args.tasks)}  # the picture shows the first task's first layout

    def task_of(layout: str) -> str:
        return layout.rsplit("_", 1)[0]

    for (instruction, layout), index in sorted(
        layouts.items(), key=lambda i: (order[task_of(i[0][1])], i[0][1])
    ):
        truth = {
            parse_name(clips.names[i])[1]: to_points(
                clips.flows[i], clips.queries[i], generators["diffusion"]
            )
            for i in index
        }
        first = index[0]
        image = torch.from_numpy(clips.images[first : first + 1])
        queries = torch.from_numpy(clips.queries[first : first + 1])
        answers = {}
        for objective, generator in generators.items():
            k = args.samples if objective == "diffusion" else 1
            guidance = args.guidance if objective == "diffusion" else None  # regression has none
            flows = generator.generate(image, queries, [instruction], k, first, guidance).numpy()[0]
            answers[objective] = np.stack([to_points(f, clips.queries[first], generator) for f in flows])
        reports = {objective: mode_report(answers[objective], truth) for objective in answers}
        rows.append({"layout": layout, "instruction": instruction, "modes": len(truth), **reports})
        d, r = reports["diffusion"], reports["regression"]
        print(
            f"{layout:<26} modes apart {d['modes_apart_px']:5.1f} px | diffusion covers {len(d['covered'])}/"
            f"{len(truth)} ({', '.join(d['covered'])}) | regression → {r['modes'][0]}, "
            f"{r['to_nearest_mode_px']:.1f} px from it, {r['to_mean_px']:.1f} px from the mean",
            flush=True,
        )
        if picture is None:
            picture = draw(clips.images[first], truth, answers["diffusion"], answers["regression"][0], layout)

    print(
        f"\nFlows: {args.samples} diffusion samples (guidance {args.guidance:g}) vs one regression answer, "
        f"{args.layouts} held-out layouts per task, {args.demos} training demonstrations per task, "
        f"{args.steps} steps each{', ' + ' '.join(args.set) if args.set else ''}\n"
    )
    print(
        "| task | modes | layouts | diffusion: K cover all modes | modes covered (mean) | diffusion sample → "
        "nearest mode / mean (px) | regression → nearest mode / mean (px) | modes apart (px) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for task in args.tasks:
        sel = [row for row in rows if task_of(row["layout"]) == task]
        if not sel:
            continue
        mean = lambda key, obj, sel=sel: float(np.mean([row[obj][key] for row in sel]))  # noqa: E731
        summary[task] = {
            "layouts": len(sel),
            "modes": sel[0]["modes"],
            "covers_all": float(np.mean([row["diffusion"]["covers_all"] for row in sel])),
            "covered": float(np.mean([len(row["diffusion"]["covered"]) for row in sel])),
            "diffusion_to_nearest": mean("to_nearest_mode_px", "diffusion"),
            "diffusion_to_mean": mean("to_mean_px", "diffusion"),
            "regression_to_nearest": mean("to_nearest_mode_px", "regression"),
            "regression_to_mean": mean("to_mean_px", "regression"),
            "modes_apart": mean("modes_apart_px", "diffusion"),
        }
        s = summary[task]
        print(
            f"| {task} | {s['modes']} | {s['layouts']} | {s['covers_all']:.0%} | {s['covered']:.1f} | "
            f"{s['diffusion_to_nearest']:.1f} / {s['diffusion_to_mean']:.1f} | "
            f"{s['regression_to_nearest']:.1f} / {s['regression_to_mean']:.1f} | {s['modes_apart']:.1f} |"
        )
    splits = {}
    if args.split_layouts > 0:
        held = {split: work / f"held_out_{split}_{args.split_layouts}" for split in ("all", "outside")}
        for split, folder in held.items():
            layout_cfg = replace(cfg, episodes=args.split_layouts, seed=HELD_OUT_SEED, layouts=split)
            generate("demos", folder, layout_cfg)
        inside = work / "demos_inside"
        generate("demos", inside, replace(cfg, layouts="inside"))
        inside_runs = {
            objective: train(
                inside / "dataset.zarr",
                work / f"{objective}_inside{args.tag}",
                objective,
                args.steps,
                args.set,
            )
            for objective in objectives
        }
        splits["all"] = split_table(work, args, runs, held["all"] / "dataset.zarr", "all")
        splits["outside"] = split_table(work, args, inside_runs, held["outside"] / "dataset.zarr", "outside")
    if picture is not None:
        for path in [work / "picture.png", *([args.picture] if args.picture else [])]:
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), picture)
            print(f"picture: {path}")
    return dict(
        demos=args.demos,
        layouts=args.layouts,
        steps=args.steps,
        samples=args.samples,
        guidance=args.guidance,
        overrides=args.set,
        summary=summary,
        rows=rows,
        split_layouts=args.split_layouts,
        splits=splits,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["pick_place", "pour", "fold_cloth"])
    parser.add_argument("--demos", type=int, default=30, help="training demonstrations per task")
    parser.add_argument("--layouts", type=int, default=6, help="held-out layouts per task")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument(
        "--split-layouts",
        type=int,
        default=10,
        help="held-out layouts per task and split (0: no split tables)",
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "bench" / "diffusion_vs_regression")
    parser.add_argument("--picture", type=Path, default=None, help="also write the picture here")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="flow train config overrides for both generators, e.g. generator.flow.displacement_scale=6",
    )
    parser.add_argument("--tag", default="", help="suffix of the two run folders (other --set, other runs)")
    parser.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance of the mode-coverage samples (1 = none: guidance pulls the samples "
        "toward one answer); the split tables sample at the generator's own, as `flow eval` does",
    )
    parser.add_argument(
        "--pipeline",
        type=Path,
        default=None,
        help="a finished `pipeline run` folder (e.g. runs/full): adds the policy comparison on its play",
    )
    parser.add_argument(
        "--policy-columns",
        nargs="+",
        default=["tracked/oracle", "generated/rigid-lk"],
        help="the pipeline's evaluation columns (plan/tracker) the two policies run on in closed loop",
    )
    parser.add_argument("--play-episodes", type=int, default=5, help="held-out play episodes per scene")
    parser.add_argument("--play-windows", type=int, default=50, help="play windows per scene, open loop")
    parser.add_argument("--policy-samples", type=int, default=16, help="diffusion chunks per window")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["flows", "policy"],
        default=["flows", "policy"],
        help="what to run (policy needs --pipeline)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "outputs" / "bench" / "diffusion_vs_regression.jsonl"
    )
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from im2flow2act.core.bench_log import append_row

    row = {}
    if "flows" in args.parts:
        row |= flow_part(args)
    if "policy" in args.parts:
        if args.pipeline is None:
            print("\npolicy comparison skipped: give --pipeline RUN, a finished `pipeline run` folder")
        else:
            row["policy"] = policy_part(args)
    append_row(args.out, "diffusion_vs_regression", parts=args.parts, **row)


if __name__ == "__main__":
    main()
