"""The pipeline's report: success tables, flow metrics, flow GIFs, rollout videos, training curves, timings
and configs — as Markdown and as one self-contained HTML page (media embedded as data URIs)."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import platform
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from im2flow2act.policies.evaluate import episode_log_path


def curve_png(csv_path: Path, key: str, out: Path, title: str) -> Path | None:
    """A small line plot of ``key`` against ``step`` from a metrics.csv (log scale when it spans decades)."""
    if not csv_path.is_file():
        return None
    rows = list(csv.DictReader(csv_path.open()))
    if len(rows) < 2:
        return None
    steps = np.array([float(r["step"]) for r in rows])
    values = np.array([float(r[key]) for r in rows])
    log = values.min() > 0 and values.max() / values.min() > 20
    y = np.log10(values) if log else values
    w, h, m = 480, 240, 40
    canvas = np.full((h, w, 3), 255, np.uint8)
    sx = (steps - steps.min()) / max(np.ptp(steps), 1e-9) * (w - 2 * m) + m
    sy = h - m - (y - y.min()) / max(np.ptp(y), 1e-9) * (h - 2 * m)
    cv2.rectangle(canvas, (m, m), (w - m, h - m), (200, 200, 200), 1)
    points = np.stack([sx, sy], 1).round().astype(np.int32)
    cv2.polylines(canvas, [points], False, (31, 119, 180), 2, cv2.LINE_AA)
    scale = " (log10)" if log else ""
    label = f"{title}: {key}{scale}  {values[0]:.3g} -> {values[-1]:.3g} in {int(steps[-1])} steps"
    cv2.putText(canvas, label, (m, m - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(out)
    return out


def success_table(tables: dict[str, dict], tasks: list[str]) -> list[str]:
    columns = [k for k in tables if k != "expert"] + (["expert"] if "expert" in tables else [])
    names = {
        k: (
            "scripted expert"
            if k == "expert"
            else k.replace("tracked/", "demo flow, ").replace("generated/", "generated flow, ") + " tracking"
        )
        for k in columns
    }
    lines = ["| task | " + " | ".join(names[k] for k in columns) + " |", "|---|" + "---|" * len(columns)]
    for task in tasks:
        cells = []
        for k in columns:
            rate = tables[k].get(task)
            cells.append("–" if rate is None else f"{rate:.0%}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def write_report(pipeline, folder: Path) -> list[Path]:
    c = pipeline.config
    records = {
        s: pipeline.done(s) for s in ("demos", "videos", "ingest", "im2flow", "play", "policy", "evaluate")
    }
    tables = records["evaluate"]["success_rate"]
    curves = [
        curve_png(pipeline.folder("im2flow") / "metrics.csv", "loss", folder / "im2flow_loss.png", "im2flow"),
        curve_png(pipeline.folder("policy") / "metrics.csv", "loss", folder / "policy_loss.png", "policy"),
    ]
    gifs = sorted((pipeline.folder("im2flow") / "eval" / "gifs").glob("*.gif"))
    shown: dict[str, object] = {}  # per plan, its first column (the real tracker's)
    for cfg in pipeline.evaluation_configs().values():
        shown.setdefault(cfg.plan_source, cfg)
    videos = [v for cfg in shown.values() for v in rollout_videos(pipeline, cfg, c.tasks)]
    flow_md = (pipeline.folder("im2flow") / "eval" / "metrics.md").read_text()
    timings = [(s, r["seconds"]) for s, r in records.items()]
    total = sum(t for _, t in timings)
    md = [
        f"# im2flow2act pipeline report: preset `{c.name}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; total wall time {total / 60:.1f} min.",
        "",
        "## Task success (policy trained on play only)",
        "",
        *success_table(tables, list(c.tasks)),
        "",
        f"{c.eval_episodes} held-out layouts per task. Demo flow: the flow our preprocessing extracts from "
        "the held-out sphere demonstration (upper bound). Generated flow: im2flow from the rendered scene "
        "and the instruction (language-conditioned).",
        "",
        *models_used(c),
        "## Generated flow vs baselines (held-out demonstrations)",
        "",
        flow_md,
        "## Timings",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {s} | {t} |" for s, t in timings],
        "",
    ]
    md_path = folder / "report.md"
    md_path.write_text("\n".join(md) + "\n" + _media_list(curves, gifs, videos, folder))
    html_path = folder / "report.html"
    html_path.write_text(_html(md, curves, gifs, videos, pipeline))
    return [md_path, html_path]


def models_used(c) -> list[str]:
    """A line naming the pretrained models, when the run trained none of its own."""
    models = {"generator": c.pretrained.generator, "policy": c.pretrained.policy}
    used = [f"{kind} `{folder}`" for kind, folder in models.items() if folder]
    return [f"Pretrained models (not trained in this run): {', '.join(used)}.", ""] if used else []


def rollout_videos(pipeline, cfg, tasks: list[str]) -> list[Path]:
    """Per task, one rollout video of the evaluation ``cfg``: its first success if any, else its first."""
    folder = pipeline.folder("evaluate") / cfg.plan_source
    log = episode_log_path(folder, cfg)
    lines = log.read_text().splitlines() if log.is_file() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    chosen = []
    for task in tasks:
        ranked = sorted((r for r in rows if r["task"] == task), key=lambda r: not r["success"])
        paths = [folder / "videos" / f"{task}_{r['demo']}_{cfg.tracker}.mp4" for r in ranked]
        chosen += [p for p in paths if p.is_file()][:1]
    return chosen


def _media_list(curves, gifs, videos, folder: Path) -> str:
    lines = ["## Pictures", ""]
    for p in [*curves, *gifs]:
        if p is not None:
            lines.append(f"![{p.stem}]({_rel(p, folder)})")
    lines += [f"- rollout: [{v.name}]({_rel(v, folder)})" for v in videos]
    return "\n".join(lines) + "\n"


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(Path("..") / path.relative_to(folder.parent))


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _markdown_table_html(lines: list[str]) -> str:
    rows = [[html.escape(c.strip()) for c in line.strip("|").split("|")] for line in lines]
    head, body = rows[0], rows[2:]
    out = ["<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out) + "</tbody></table>"


def _blocks_html(md: list[str]) -> str:
    """The report's Markdown (headings, paragraphs, pipe tables) as HTML."""
    out, table = [], []
    for line in "\n".join(md).splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            out.append(_markdown_table_html(table))
            table = []
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


def _html(md, curves, gifs, videos, pipeline) -> str:
    media = ["<h2>Training curves</h2>"]
    media += [f'<img class="curve" alt="{p.stem}" src="{_data_uri(p, "image/png")}">' for p in curves if p]
    media.append("<h2>Generated vs true flow (held-out)</h2>")
    media += [
        f'<figure><img alt="{g.stem}" src="{_data_uri(g, "image/gif")}">'
        f"<figcaption>{g.stem}</figcaption></figure>"
        for g in gifs
    ]
    media.append("<h2>Rollouts (plan | tracked points; a success where there is one)</h2>")
    media += [
        f'<figure><video controls loop muted autoplay src="{_data_uri(v, "video/mp4")}"></video>'
        f"<figcaption>{v.stem}</figcaption></figure>"
        for v in videos
    ]
    configs = html.escape((pipeline.out / "pipeline_config.yaml").read_text())
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px}"
        "th{background:#f3f3f3}img,video{max-width:100%}figure{display:inline-block;margin:6px}"
        "pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}"
    )
    head = f"<meta charset='utf-8'><title>im2flow2act report</title><style>{style}</style>"
    return (
        f"<!doctype html><html><head>{head}</head><body>{_blocks_html(md)}{''.join(media)}"
        f"<h2>Resolved config</h2><details open><summary>pipeline_config.yaml</summary><pre>{configs}</pre>"
        "</details></body></html>\n"
    )
