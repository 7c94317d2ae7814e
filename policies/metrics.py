"""Per-episode measures of a rollout and the evaluation's summary (JSON and Markdown).

Success is the task's check; the other measures say how far an episode got when it failed: the task's
progress numbers (at the end and their peak), how far the object ended from the plan's last frame, how
much of the planned motion it made, where the gripper first closed and whether it held the object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from im2flow2act.policies.sim.env import SimEnv


@dataclass
class EpisodeResult:
    task: str
    demo: str
    success: bool
    steps: int
    seconds: float
    progress: dict[str, float] = field(default_factory=dict)
    """The task's progress measures at the end (e.g. mug height, distance to the plate)."""
    peak: dict[str, float] = field(default_factory=dict)
    """Their largest values during the episode (e.g. how high the mug was lifted)."""
    plan_error_px: float = float("nan")
    """How far the object's points end from where the plan's last frame puts them (mean, pixels of the
    frame, points visible in both): a task-free measure of following the flow, also for play plans."""
    motion_fraction: float = float("nan")
    """How much of the planned motion the object made: its points' displacement projected on the plan's,
    over the plan's squared (1 = all of it, below 1 = stopped short), points visible at both ends."""
    grasp_offset_cm: float = float("nan")
    """Where the gripper was first commanded closed: its distance to the nearest grasp point (the mug's
    centre, the drawer handle). NaN when it never closed."""
    held: bool = False
    """Whether the gripper held the object at some point: with ``grasp_offset_cm`` this separates a missed
    grasp from what goes wrong after it (a drop, a bad place)."""


def final_plan_error(
    plan: np.ndarray, plan_vis: np.ndarray, seen: np.ndarray, seen_vis: np.ndarray, size: tuple[int, int]
) -> float:
    """Mean pixel distance between the plan's last point positions and the tracked ones at the end."""
    both = plan_vis[-1] & seen_vis[-1]
    if not both.any():
        return float("nan")
    offset = (seen[-1][both] - plan[-1][both]) * np.asarray(size, np.float32)
    return float(np.linalg.norm(offset, axis=-1).mean())


def motion_fraction(
    plan: np.ndarray, plan_vis: np.ndarray, seen: np.ndarray, seen_vis: np.ndarray, size: tuple[int, int]
) -> float:
    """Σ (seen displacement · planned displacement) / Σ |planned displacement|² over the points visible at
    the start and the end of both (pixel units, so both image axes weigh the same)."""
    both = plan_vis[0] & plan_vis[-1] & seen_vis[0] & seen_vis[-1]
    scale = np.asarray(size, np.float32)
    planned = (plan[-1][both] - plan[0][both]) * scale
    done = (seen[-1][both] - seen[0][both]) * scale
    total = float((planned**2).sum())
    return float((done * planned).sum()) / total if total > 0 else float("nan")


def grasp_offset_cm(env: SimEnv) -> float:
    """Distance (cm) from the end effector to the nearest of the task's grasp points."""
    here, _ = env.ee_pose()
    points = env.task.grasp_points(env.model, env.data).values()
    return 100.0 * min((float(np.linalg.norm(p - here)) for p in points), default=float("nan"))


# ----- the summary ------------------------------------------------------------------------------------------
def _mean_of(measures) -> dict[str, float]:
    rows = list(measures)
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]} if rows else {}


def _median(values: list[float]) -> float | None:
    """Median of the finite values; None when there are none (JSON has no NaN)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _format(value: float | None, spec: str) -> str:
    """A median for the Markdown summary: "—" when no episode had one."""
    return "—" if value is None else spec.format(value)


def _describe(measures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in measures.items()) or "—"


def task_row(rs: list[EpisodeResult]) -> dict:
    """One task's figures over its episodes (``rs`` not empty)."""
    return {
        "episodes": len(rs),
        "successes": sum(r.success for r in rs),
        "success_rate": sum(r.success for r in rs) / len(rs),
        "mean_steps": float(np.mean([r.steps for r in rs])),
        "mean_progress": _mean_of(r.progress for r in rs),
        "mean_peak": _mean_of(r.peak for r in rs),
        "median_plan_error_px": _median([r.plan_error_px for r in rs]),
        "median_motion_fraction": _median([r.motion_fraction for r in rs]),
        "median_grasp_offset_cm": _median([r.grasp_offset_cm for r in rs]),
        "held": sum(r.held for r in rs),
        "per_episode": [
            {
                "demo": r.demo,
                "success": r.success,
                "progress": r.progress,
                "peak": r.peak,
                "plan_error_px": _finite(r.plan_error_px),
                "motion_fraction": _finite(r.motion_fraction),
                "grasp_offset_cm": _finite(r.grasp_offset_cm),
                "held": r.held,
            }
            for r in rs
        ],
    }


def summarise(results: list[EpisodeResult], tasks: list[str], plan_source: str, tracker: str) -> dict:
    """The evaluation's summary: per task (in ``tasks`` order, those with episodes), its figures."""
    by_task = {t: rs for t in tasks if (rs := [r for r in results if r.task == t])}
    return {
        "plan_source": plan_source,
        "tracker": tracker,
        "tasks": {t: task_row(rs) for t, rs in by_task.items()},
    }


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown table of success rates and a line per task of how far episodes got."""
    tracker, plan_source = summary["tracker"], summary["plan_source"]
    lines = [
        f"| task | episodes | success rate ({tracker} tracking, {plan_source} plan) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t} | {row['episodes']} | {row['success_rate']:.0%} |" for t, row in summary["tasks"].items()
    ]
    lines += ["", "How far the episodes got (means; peak = the largest value during an episode):", ""]
    lines += [
        f"- {t}: at the end {_describe(row['mean_progress'])}; peak {_describe(row['mean_peak'])}; "
        f"median distance to the plan's last frame {_format(row['median_plan_error_px'], '{:.1f} px')}; "
        f"planned motion made {_format(row['median_motion_fraction'], '{:.0%}')} (median); "
        f"object held in {row['held']} of {row['episodes']}, the gripper first closed "
        f"{_format(row['median_grasp_offset_cm'], '{:.1f} cm')} from the grasp point (median)"
        for t, row in summary["tasks"].items()
    ]
    return "\n".join(lines) + "\n"


def write_summary(summary: dict, out_dir: Path) -> Path:
    """``summary_<plan source>_<tracker>.json`` and ``.md`` in ``out_dir``; returns the JSON's path."""
    stem = f"summary_{summary['plan_source']}_{summary['tracker']}"
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(summary, indent=2))
    (out_dir / f"{stem}.md").write_text(summary_markdown(summary))
    return path
