"""Training clips for the flow generator: (first frame, instruction, G×G query grid, flow video).

Built once from flow datasets (ingested human videos or sim sphere demonstrations — both are action-less
videos with an object box) and cached as one ``.npz``. When an episode's stored tracks are already the
G×G grid in its box they are used as they are; otherwise (sim demos store points on the object mask, or an
ingest ran with another grid size) the grid is tracked on the episode's frames with the chosen tracker —
the same preprocessing a human video goes through. The last ``held_out_per_task`` episodes of each
instruction form the held-out split, as in policy evaluation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from im2flow2act.core.checkpoint import write_atomic
from im2flow2act.im2flow.flow_image import FlowImageConfig, encode
from im2flow2act.preprocessing.dataset import DatasetError, FlowDataset
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import grid_in_box

FRAME_SIZE = 256
"""First frames are stored at 256 × 256 (flow coordinates are normalised, so any video size works)."""


@dataclass
class ClipConfig:
    flow: FlowImageConfig = field(default_factory=FlowImageConfig)
    tracker: str = "lk"
    """Tracks the G×G box grid when the dataset's own tracks are not that grid."""
    tracker_args: dict[str, Any] = field(default_factory=dict)
    """The tracker's config, e.g. {checkpoint: models/cotracker3} for cotracker3."""
    held_out_per_task: int = 10


@dataclass
class FlowClips:
    images: np.ndarray  # (E, 256, 256, 3) uint8 first frames
    flows: np.ndarray  # (E, T, 3, G, G) float32 flow videos
    queries: np.ndarray  # (E, G², 3) the query grids (t, x, y)
    tasks: list[str]
    names: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index: np.ndarray | list[int]) -> FlowClips:
        idx = np.asarray(index, dtype=int)
        return FlowClips(
            self.images[idx],
            self.flows[idx],
            self.queries[idx],
            [self.tasks[i] for i in idx],
            [self.names[i] for i in idx],
            [self.sources[i] for i in idx],
        )

    def split(self, held_out_per_task: int) -> tuple[FlowClips, FlowClips]:
        """(train, held_out): the last ``held_out_per_task`` clips of every instruction are held out."""
        held: list[int] = []
        for task in dict.fromkeys(self.tasks):
            of_task = sorted((i for i, t in enumerate(self.tasks) if t == task), key=lambda i: self.names[i])
            held += of_task[len(of_task) - held_out_per_task :] if held_out_per_task > 0 else []
        train = [i for i in range(len(self)) if i not in set(held)]
        return self.subset(train), self.subset(sorted(held))

    def save(self, path: str | Path, config: ClipConfig) -> None:
        """``np.savez_compressed`` to a unique temporary name beside ``path``, then renamed onto it."""
        meta = {
            "tasks": self.tasks,
            "names": self.names,
            "sources": self.sources,
            "config": _fingerprint(config),
        }

        def write(tmp: Path) -> None:
            with tmp.open("wb") as file:
                arrays = {"images": self.images, "flows": self.flows, "queries": self.queries}
                np.savez_compressed(file, **arrays, meta=json.dumps(meta))

        write_atomic(path, write)

    @staticmethod
    def load(path: str | Path, config: ClipConfig | None = None) -> FlowClips:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            if config is not None and meta["config"] != _fingerprint(config):
                raise ValueError(
                    f"{path} was built with {meta['config']}, not {_fingerprint(config)}; "
                    "delete it to rebuild"
                )
            return FlowClips(
                data["images"], data["flows"], data["queries"], meta["tasks"], meta["names"], meta["sources"]
            )


def _fingerprint(config: ClipConfig) -> dict:
    extra = {"tracker_args": config.tracker_args} if config.tracker_args else {}  # older caches lack it
    return {"flow": asdict(config.flow), "tracker": config.tracker, **extra}


def build_clips(
    datasets: list[str | Path], config: ClipConfig, cache: str | Path | None = None, progress: bool = True
) -> tuple[FlowClips, list[str]]:
    """Clips from every episode with a box, and the problems: a bad episode is skipped, not fatal."""
    if cache is not None and Path(cache).is_file():
        return FlowClips.load(cache, config), []
    g = config.flow.grid_size
    tracker = TRACKERS.build(config.tracker, config.tracker_args)
    rows: list[tuple] = []
    problems: list[str] = []
    views = [(root, view) for root in datasets for view in FlowDataset(root)]
    for root, view in tqdm(views, desc="flow clips", disable=not progress):
        try:
            rows.append(_clip(view, config, tracker, g))
        except (DatasetError, ValueError, KeyError) as err:
            problems.append(f"{root}/{view.name}: {err}")
    if not rows:
        raise ValueError(f"no usable episode (with frames and a bbox) in {', '.join(map(str, datasets))}")
    images, flows, queries, tasks, names, sources = (list(x) for x in zip(*rows, strict=True))
    clips = FlowClips(np.stack(images), np.stack(flows), np.stack(queries), tasks, names, sources)
    if cache is not None:
        clips.save(cache, config)
    return clips, problems


def _clip(view, config: ClipConfig, tracker, g: int) -> tuple:
    bbox = view.attrs.get("bbox")
    if bbox is None:
        raise KeyError("episode has no 'bbox' attr (the object box the query grid is built in)")
    queries = grid_in_box(bbox, g).astype(np.float32)
    stored = view.queries
    if stored.shape == queries.shape and np.allclose(stored, queries, atol=1e-4):
        tracks, visibility = view.tracks, view.visibility
    else:
        tracks, visibility = tracker.track(np.asarray(view.frames[...]), queries)
    first = view.frame(0)
    if first.shape[:2] != (FRAME_SIZE, FRAME_SIZE):
        first = cv2.resize(first, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_AREA)
    flow = encode(tracks, visibility, queries, config.flow)
    return first, flow, queries, view.task, view.name, str(view.attrs.get("source", view.name))
