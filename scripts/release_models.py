"""Copy the models a `pipeline run` trained into the repository's `models/`, each with its model card (the
cards and configs are kept in git, the weights are not: .gitignore).

    .venv/bin/python scripts/release_models.py --run outputs/full [--out models]

Each released folder is the run's exported model folder (config.json + model.safetensors, unchanged) and a
README.md whose front matter (kind, file size, SHA-256, parameter count, storage dtypes) is checked against
the files by tests/test_released_models.py. The card's tables are read from the run's own records: its
training config, its stage timings and every evaluation summary the run has written so far.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml
from safetensors import safe_open

from im2flow2act.core.checkpoint import file_sha256
from im2flow2act.policies.pipeline import STAGES
from im2flow2act.policies.sim.tasks import task_names

LIMIT_BYTES = 100 * 1024 * 1024
"""All released weights together stay under this (they live in git)."""
REFERENCE = {"pick_place": 90, "pour": 85, "open_drawer": 90, "fold_cloth": 35}
"""Im2Flow2Act (Xu et al., CoRL 2024), simulation, language-conditioned, success %."""
RELEASES = {
    "policy": ("policy-full", "6_policy/policy"),
    "generator": ("generator-full", "4_im2flow/generator"),
}


def weights_facts(weights: Path) -> dict:
    """What the card's front matter states about a safetensors file (the test recomputes every one)."""
    parameters, dtypes = 0, set()
    with safe_open(str(weights), "pt") as f:
        for name in f.keys():  # noqa: SIM118 (not a dict)
            piece = f.get_slice(name)
            count = 1
            for n in piece.get_shape():
                count *= n
            parameters += count
            dtypes.add(piece.get_dtype())
    return {
        "bytes": weights.stat().st_size,
        "sha256": file_sha256(weights),
        "tensor_elements": parameters,
        "dtypes": sorted(dtypes),
    }


def stage_folder(run: Path, stage: str) -> Path:
    return run / f"{STAGES.index(stage) + 1}_{stage}"


def stage_seconds(run: Path) -> dict[str, float]:
    out = {}
    for stage in STAGES:
        marker = stage_folder(run, stage) / "stage.json"
        if marker.is_file():
            out[stage] = json.loads(marker.read_text())["seconds"]
    return out


def evaluation_table(run: Path) -> list[str]:
    """Successes per task and column from every evaluation summary (or, for a column still running, its
    episode log), beside the reference's language-conditioned figures."""
    columns: dict[str, dict[str, tuple[int, int]]] = {}
    evaluate = stage_folder(run, "evaluate")
    for log in sorted(evaluate.glob("*/episodes_*.jsonl")):
        plan, tracker = log.stem.removeprefix("episodes_").split("_", 1)
        counts: dict[str, tuple[int, int]] = {}
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done, won = counts.get(row["task"], (0, 0))
            counts[row["task"]] = (done + 1, won + int(row["success"]))
        columns[f"{plan} flow, {tracker}"] = counts
    expert = evaluate / "expert" / "summary.json"
    if expert.is_file():
        rows = json.loads(expert.read_text())["tasks"]
        columns["scripted expert"] = {
            t: (r["written"] + r["skipped"], r["successes"]) for t, r in rows.items()
        }
    if not columns:
        return ["Not evaluated yet."]

    def order(name: str) -> tuple:  # generated flow first, the real tracker before the oracle, expert last
        return (name == "scripted expert", not name.startswith("generated"), "oracle" in name, name)

    names = sorted(columns, key=order)
    lines = [
        "| task | " + " | ".join(names) + " | reference (language) |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for task in task_names():
        cells = []
        for name in names:
            done, won = columns[name].get(task, (0, 0))
            cells.append(f"{won} / {done}" if done else "—")
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {REFERENCE.get(task, '—')} % |")
    return lines


def card(kind: str, name: str, run: Path, facts: dict, config: dict) -> str:
    pipeline = yaml.safe_load((run / "pipeline_config.yaml").read_text())
    seconds = stage_seconds(run)
    front = {
        "name": name,
        "kind": config["kind"],
        "im2flow2act_version": config["im2flow2act_version"],
        **facts,
    }
    if kind == "policy":
        train = pipeline["policy"]
        what = (
            f"The flow-conditioned diffusion policy (U-Net {train['policy']['unet_dims']}, per-point plan "
            f"tokens: {train['policy']['point_attention']}), trained only on task-agnostic robot play: "
            f"{pipeline['play']} episodes per task scene of `sim play`'s default recipe in all "
            f"{len(task_names())} task scenes (the mug scene twice: for pick & place and for pour), no "
            f"goals, no task labels, layouts disjoint from every evaluation layout. {train['max_steps']} "
            f"steps, batch {train['batch_size']}, lr {train['lr']}; parameters stored as "
            f"{train['export_dtype']}."
        )
        timing = (
            f"play {seconds.get('play', 0) / 60:.1f} min, training {seconds.get('policy', 0) / 60:.1f} min"
        )
    else:
        train = pipeline["flow"]
        what = (
            "The flow generator (im2flow, the `small` preset: a pixel-space diffusion U-Net with a MiniLM "
            "text encoder): from an initial image, a task instruction and a query grid in the object's box "
            "it samples the object's future flow. Trained on the flow the preprocessing extracted (LK) from "
            f"the videos of {pipeline['demos'] - pipeline['eval_episodes']} sphere demonstrations per task "
            f"(the last {pipeline['eval_episodes']} held out), {train['max_steps']} steps, batch "
            f"{train['batch_size']}."
        )
        timing = f"training and its evaluation {seconds.get('im2flow', 0) / 60:.1f} min"
    flow_metrics = stage_folder(run, "im2flow") / "eval" / "metrics.md"
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {name}",
        "",
        what,
        "",
        "## How it was made",
        "",
        "```bash",
        "MUJOCO_GL=egl im2flow2act pipeline run --preset full --out runs/full",
        "python scripts/release_models.py --run runs/full",
        "```",
        "",
        f"On a 2-core x86_64 CPU, no GPU: {timing}.",
        "",
        "## Measured (the whole chain, 20 held-out layouts per task)",
        "",
        *evaluation_table(run),
        "",
        "Generated flow: im2flow samples 4 flows from the rendered first image and the instruction, the "
        "medoid is followed, every point on a rigid object moved with the motion fitted to its moving "
        "points (`complete_rigid`). Tracked flow: the flow LK extracts from the held-out demonstration's "
        "video. `rigid-lk` tracks the object online from the robot camera's RGB-D images; `oracle` reads the "
        "simulator (an upper bound). Reference: Im2Flow2Act (Xu et al., 2024), its own simulated tasks.",
        "",
    ]
    if kind == "generator" and flow_metrics.is_file():
        lines += ["## Flow on held-out clips", "", flow_metrics.read_text().strip(), ""]
    lines += [
        "## Limits",
        "",
        "- Trained and measured in this project's MuJoCo scenes only (fixed camera, 256×256 renders, the "
        "four tasks' objects); not trained on real robot or real human video.",
        "- Figures are successes out of 20: about ±3 between runs of the same evaluation.",
        "",
        "## Licence",
        "",
        "MIT, as the code: trained by this project on data its simulator generated.",
        "",
    ]
    return "\n".join(lines)


def release(run: Path, out: Path) -> list[Path]:
    written = []
    for kind, (name, source) in RELEASES.items():
        folder = run / source
        if not (folder / "model.safetensors").is_file():
            raise SystemExit(f"{folder}: no exported model (has the run finished its {kind} stage?)")
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        for file in ("config.json", "model.safetensors"):
            shutil.copyfile(folder / file, target / file)
        config = json.loads((target / "config.json").read_text())
        (target / "README.md").write_text(
            card(kind, name, run, weights_facts(target / "model.safetensors"), config)
        )
        written.append(target)
    total = sum((t / "model.safetensors").stat().st_size for t in written)
    if total > LIMIT_BYTES:
        raise SystemExit(
            f"released weights are {total / 2**20:.1f} MiB, over the {LIMIT_BYTES / 2**20:.0f} MiB limit"
        )
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a `pipeline run` folder")
    parser.add_argument("--out", type=Path, default=Path("models"))
    args = parser.parse_args()
    for folder in release(args.run, args.out):
        size = (folder / "model.safetensors").stat().st_size / 2**20
        print(f"{folder}: {size:.1f} MiB")


if __name__ == "__main__":
    main()
