"""The ``hand-object`` grounder: no download — the object is what moves with a hand but is not the hand.

Human videos show a hand moving an object, and the ``motion`` grounder boxes whatever moves most — often
the hand and arm with the object, or the person. This grounder finds the hands first, with MediaPipe's
palm detector (``palm_detection_full.tflite``, Apache-2.0), which ships inside the ``mediapipe==0.10.14``
wheel on PyPI and is run here by OpenCV's own TFLite reader (``cv2.dnn``): mediapipe's Python code and its
dependencies (jax, protobuf < 5, opencv-contrib) are never imported. Install the files with
``pip install --no-deps mediapipe==0.10.14`` (35 MB, nothing else changes), or point ``models`` at a folder
holding ``palm_detection_full.tflite`` (e.g. unzipped from that wheel: ``mediapipe/modules/palm_detection``).

Then, on the first ``max_frames`` frames:

1. a coarse grid over the frame is tracked (LK) and the camera's own motion removed, as the ``motion``
   grounder does (homography, or epipolar geometry when the camera translates): each point gets its
   independent motion;
2. palms are detected every ``hand_every`` frames; the hand is the palm box grown ``hand_scale`` times,
   and the skin colour of this person in this light is read from the palm centres;
3. points on a hand (inside a hand region in the first frame, or in most frames they are seen) or on
   bare skin of the hands' colour (the arm) are removed; the remaining moving points are split into
   groups that move coherently;
4. each group is scored by how much it moves and how close it stays to a hand (the share of hand
   sightings where the hand touches the group's current box): the object is the group the hand carries,
   not the person swaying behind it;
5. the box is fitted to the chosen group's own region in the first frame: GrabCut, seeded with the
   group's grid cells as probable object and the still points, the hands and the skin-coloured pixels as
   background, sorts the pixels by colour; the box is that of the region's connected parts that hold
   most of the group's points. So a textureless object (a red plastic cup) gets its whole extent, not
   just the points LK could track, and the box loses what only moved along with it at its edges (the
   fingers, background dragged by them).

Without any hand in the clip it answers like ``motion`` (label ``moving (no hand)``). The prompt is not
used: without a text-grounding model (Grounding DINO, OWLv2) this grounder cannot choose between two
objects a hand moves — it takes the one the hand moves most.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from im2flow2act.preprocessing.grounding.base import GROUNDERS, Box, Grounder, NoObjectFound
from im2flow2act.preprocessing.grounding.motion import (
    MotionConfig,
    MotionGrounder,
    _border_fraction,
    _coherent_groups,
    _remove_camera_motion,
)
from im2flow2act.preprocessing.pretrained import ModelNotAvailable
from im2flow2act.preprocessing.trackers import TRACKERS
from im2flow2act.preprocessing.tracks import grid_in_box

PALM_MODEL = "palm_detection_full.tflite"
MEDIAPIPE = "mediapipe==0.10.14"
_NETS: dict[str, Any] = {}


class HandModelNotAvailable(ModelNotAvailable):
    alternative = "--grounder motion (no hands needed), or give the box with --box"


def find_palm_model(models: str = "") -> Path:
    """The palm detector's file: in ``models`` (a folder or the file itself), else in an installed
    ``mediapipe`` distribution (found by its file list, never imported)."""
    hint = (
        f"install the file with `pip install --no-deps {MEDIAPIPE}` (35 MB; pulls nothing else), or unzip "
        f"mediapipe/modules/palm_detection/{PALM_MODEL} from that wheel "
        f"(`pip download --no-deps {MEDIAPIPE}`) into a folder and set grounder_args.models=<folder>"
    )
    if models:
        path = Path(models).expanduser()
        candidates = [path] if path.is_file() else [*path.rglob(PALM_MODEL)] if path.is_dir() else []
        if not candidates:
            raise HandModelNotAvailable(f"hand-object grounder: no {PALM_MODEL} in {path}; {hint}")
        return candidates[0]
    if importlib.util.find_spec("mediapipe") is not None:
        try:
            files = importlib.metadata.files("mediapipe") or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        for f in files:
            if str(f).endswith(f"palm_detection/{PALM_MODEL}"):
                return Path(str(f.locate()))
    raise HandModelNotAvailable(f"hand-object grounder: the palm detector is not installed; {hint}")


@dataclass(frozen=True)
class Palm:
    """A detected palm: normalised xyxy box, score, and its centre (normalised x, y)."""

    xyxy: tuple[float, float, float, float]
    score: float

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.xyxy
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def grown(self, scale: float) -> tuple[float, float, float, float]:
        cx, cy = self.centre
        x0, y0, x1, y1 = self.xyxy
        hw, hh = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
        return (cx - hw, cy - hh, cx + hw, cy + hh)


class PalmDetector:
    """MediaPipe's full-range palm detector (192×192 SSD, 2016 anchors), run with ``cv2.dnn``."""

    SIDE = 192

    def __init__(self, model: Path, score_threshold: float = 0.5, nms_iou: float = 0.3) -> None:
        key = str(model)
        if key not in _NETS:
            try:
                _NETS[key] = cv2.dnn.readNetFromTFLite(key)
            except cv2.error as err:
                raise HandModelNotAvailable(f"cannot read the palm detector {model}: {err}") from err
        self.net = _NETS[key]
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.anchors = _palm_anchors(self.SIDE)

    def detect(self, image: np.ndarray) -> list[Palm]:
        """Palms in an RGB uint8 image (any size; letterboxed to a square as MediaPipe does)."""
        h, w = image.shape[:2]
        side = max(h, w)
        ox, oy = (side - w) // 2, (side - h) // 2
        square = np.zeros((side, side, 3), np.uint8)
        square[oy : oy + h, ox : ox + w] = image
        x = cv2.resize(square, (self.SIDE, self.SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        self.net.setInput(x.transpose(2, 0, 1)[None])
        regress = self.net.forward("Identity")[0]
        logits = self.net.forward("Identity_1")[0, :, 0]
        score = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        keep = np.flatnonzero(score >= self.score_threshold)
        if not len(keep):
            return []
        cx = regress[keep, 0] / self.SIDE + self.anchors[keep, 0]
        cy = regress[keep, 1] / self.SIDE + self.anchors[keep, 1]
        bw, bh = regress[keep, 2] / self.SIDE, regress[keep, 3] / self.SIDE
        # back from the letterboxed square to the image, normalised
        x0 = ((cx - bw / 2) * side - ox) / w
        x1 = ((cx + bw / 2) * side - ox) / w
        y0 = ((cy - bh / 2) * side - oy) / h
        y1 = ((cy + bh / 2) * side - oy) / h
        rects = [
            [float(a * w), float(b * h), float((c - a) * w), float((d - b) * h)]
            for a, b, c, d in zip(x0, y0, x1, y1, strict=True)
        ]
        chosen = np.array(
            cv2.dnn.NMSBoxes(rects, score[keep].tolist(), self.score_threshold, self.nms_iou)
        ).ravel()
        return [
            Palm((float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i])), float(score[keep][i]))
            for i in chosen
        ]


def _palm_anchors(side: int) -> np.ndarray:
    """(2016, 2) anchor centres of MediaPipe's palm SSD: strides 8 (2 per cell) and 16 (6 per cell)."""
    anchors = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = side // stride
        for y in range(cells):
            for x in range(cells):
                anchors += [((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell
    return np.asarray(anchors, np.float32)


@dataclass
class HandObjectConfig:
    models: str = ""
    """A folder (or the file) with palm_detection_full.tflite; empty = from the installed mediapipe wheel."""
    grid_size: int = 32
    max_frames: int = 48
    threshold_px: float = 6.0
    """Smallest independent motion of a moving point, in pixels of a 256-pixel frame."""
    parallax_threshold_px: float = 10.0
    """The same with the epipolar model (walking camera): the still scene's points scatter more about
    their epipolar lines than about a homography on a still camera."""
    coherence_px: float = 4.0
    parallax_coherence_px: float = 8.0
    parallax_ratio: float = 1.25
    min_points: int = 3
    hand_every: int = 4
    """Look for palms every this many frames of the clip."""
    hand_score: float = 0.5
    hand_scale: float = 1.6
    """The hand region: the palm box grown this many times about its centre (palm and finger roots; the
    fingers beyond are found by their skin colour)."""
    on_hand_share: float = 0.5
    """A point inside a hand region in at least this share of the sightings where it is seen is the hand."""
    skin_tolerance: float = 12.0
    """A point whose first-frame colour lies this close (Lab a, b) to the palms' is skin (the arm)."""
    reach: float = 4.0
    """A group is by a hand when its box comes within the palm box grown this many times."""
    merge_near: float = 0.5
    """Groups next to the chosen one join it when a hand touches them in this share of sightings."""
    max_area: float = 0.5
    """With a walking camera, the homography's answer is taken unless its box covers more of the frame."""
    grow: bool = True
    """Fit the box to the chosen group's own region in the first frame (GrabCut seeded with the group as
    probable object, the still points and the hands as background); off: the group's grid cells."""
    grow_iterations: int = 5
    grow_max: float = 4.0
    """GrabCut may spill into a background of the object's colour: a region whose box is more than this
    many times the group's cells' box is not taken."""
    tracker: str = "lk"
    tracker_args: dict[str, Any] = field(default_factory=dict)


@GROUNDERS.register("hand-object", HandObjectConfig)
class HandObjectGrounder(Grounder):
    def __init__(self, config: HandObjectConfig | None = None) -> None:
        self.config = config or HandObjectConfig()
        c = self.config
        self.palms = PalmDetector(find_palm_model(c.models), c.hand_score)
        self.tracker = TRACKERS.build(c.tracker, c.tracker_args)
        self._fallback = MotionGrounder(
            MotionConfig(
                grid_size=c.grid_size, max_frames=c.max_frames, tracker=c.tracker, tracker_args=c.tracker_args
            )
        )

    def hands(self, frames: np.ndarray) -> dict[int, list[Palm]]:
        """Palms per sampled frame index (frames without any are left out)."""
        found = {}
        for t in range(0, len(frames), max(1, self.config.hand_every)):
            palms = self.palms.detect(frames[t])
            if palms:
                found[t] = palms
        return found

    def ground(self, frames: np.ndarray, prompt: str, given_box: Box | None = None) -> list[Box]:
        cfg = self.config
        clip = frames[: cfg.max_frames]
        hands = self.hands(clip)
        if not hands:
            boxes = self._fallback.ground(frames, prompt, given_box)
            return [Box(b.xyxy, b.score, "moving (no hand)") for b in boxes]
        queries = grid_in_box((0.0, 0.0, 1.0, 1.0), cfg.grid_size)
        tracks, visibility = self.tracker.track(clip, queries)
        skin = self._skin_colour(clip, hands)
        hand_point = self._on_hands(tracks, visibility, hands) | self._skin(clip[0], queries, skin)
        px = tracks.astype(np.float64) * 256.0
        comp, error, parallax = _remove_camera_motion(px, visibility, cfg.parallax_ratio)
        found = None
        if parallax:
            # A walking camera: the epipolar model explains a still 3-D scene, but it also explains an
            # object carried along the camera's own direction (a pillow held by someone walking with
            # it). The homography does not have that blind spot; its answer stands unless it is the
            # scene's own parallax — a group covering most of the frame.
            flat = _remove_camera_motion(px, visibility, np.inf)
            found = self._groups_to_boxes(
                tracks, visibility, hands, hand_point, flat[0], flat[1], cfg.coherence_px, cfg.threshold_px
            )
            if found and found[0][0].area > cfg.max_area:
                found = None
        if found is None:
            coherence = cfg.parallax_coherence_px if parallax else cfg.coherence_px
            threshold = cfg.parallax_threshold_px if parallax else cfg.threshold_px
            found = self._groups_to_boxes(
                tracks, visibility, hands, hand_point, comp, error, coherence, threshold
            )
        if not found:
            raise NoObjectFound(
                f"nothing but the hands moved more than {cfg.threshold_px:g} px "
                f"in the first {len(clip)} frames"
            )
        boxes, group, still = found
        if cfg.grow:
            grown = self._grow(clip[0], group, still, hand_point, hands.get(0, []), skin)
            if grown is not None and Box(grown).area <= cfg.grow_max * boxes[0].area:
                boxes[0] = Box(grown, boxes[0].score, boxes[0].label)
        return boxes

    def _groups_to_boxes(
        self, tracks, visibility, hands, hand_point, comp, error, coherence, threshold
    ) -> tuple[list[Box], np.ndarray, np.ndarray] | None:
        """Moving points off the hands → coherent groups → (boxes of their grid cells, the one a hand
        carries first; that group's points; the still points), or None when nothing but hands moved."""
        cfg = self.config
        g = cfg.grid_size
        motion = np.where(visibility & visibility[:1], error, 0.0).max(axis=0)
        moving = (motion > threshold) & (visibility.sum(axis=0) > 1)
        candidates = moving & ~hand_point
        labels = _coherent_groups(comp - comp[:1], visibility, candidates.reshape(g, g), coherence)
        groups = [np.flatnonzero(labels.ravel() == k) for k in range(1, labels.max() + 1)]
        groups = [grp for grp in groups if len(grp) >= cfg.min_points]
        if not groups:
            return None
        scores, near_share = {}, {}
        for k, grp in enumerate(groups):
            near = near_share[k] = self._near_hands(tracks, visibility, grp, hands)
            border = _border_fraction(np.stack(np.unravel_index(grp, (g, g)), axis=1), g)
            scores[k] = (
                len(grp) * float(np.median(motion[grp])) * (0.1 + near) * (0.3 if border >= 0.5 else 1.0)
            )
        order = sorted(scores, key=scores.get, reverse=True)
        best = scores[order[0]]
        groups[order[0]] = self._merge(groups, order[0], near_share, g)
        boxes = [
            Box(self._cells_box(groups[k], g), score=scores[k] / best, label="moved by a hand") for k in order
        ]
        still = ~moving & ~hand_point & (visibility.mean(axis=0) > 0.5)
        return boxes, groups[order[0]], still

    # ----- pieces -------------------------------------------------------------------------------------
    def _on_hands(self, tracks, visibility, hands) -> np.ndarray:
        """(N,) points on a hand: inside a hand region in frame 0, or in most sightings they are seen at."""
        n = tracks.shape[1]
        inside_count = np.zeros(n)
        seen_count = np.zeros(n)
        first = np.zeros(n, bool)
        for t, palms in hands.items():
            inside = np.zeros(n, bool)
            for palm in palms:
                x0, y0, x1, y1 = palm.grown(self.config.hand_scale)
                p = tracks[t]
                inside |= (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
            if t == 0:
                first = inside
            inside_count += inside & visibility[t]
            seen_count += visibility[t]
        share = inside_count / np.maximum(seen_count, 1)
        return first | (share >= self.config.on_hand_share)

    def _skin_colour(self, clip: np.ndarray, hands) -> np.ndarray:
        """This person's skin in this light (Lab a, b): the median colour at the palm centres over every
        frame where palms were seen (a palm box on the object is outvoted)."""
        h, w = clip.shape[1:3]
        skin = []
        for t, palms in hands.items():
            colours = _lab_ab(clip[t])
            skin += [
                colours[min(int(p.centre[1] * h), h - 1), min(int(p.centre[0] * w), w - 1)] for p in palms
            ]
        return np.median(np.asarray(skin), axis=0)

    def _skin(self, first: np.ndarray, queries: np.ndarray, skin: np.ndarray) -> np.ndarray:
        """(N,) points whose first-frame colour matches the skin's: bare arms and fingers."""
        h, w = first.shape[:2]
        cols = np.clip((queries[:, 1] * w).astype(int), 0, w - 1)
        rows = np.clip((queries[:, 2] * h).astype(int), 0, h - 1)
        return np.linalg.norm(_lab_ab(first)[rows, cols] - skin, axis=-1) < self.config.skin_tolerance

    def _near_hands(self, tracks, visibility, group, hands) -> float:
        """Share of hand sightings where a hand region touches the group's box at that frame."""
        touches = total = 0
        for t, palms in hands.items():
            vis = visibility[t, group]
            if not vis.any():
                continue
            p = tracks[t, group][vis]
            gx0, gy0 = p.min(axis=0)
            gx1, gy1 = p.max(axis=0)
            total += 1
            for palm in palms:
                x0, y0, x1, y1 = palm.grown(self.config.reach)
                if x0 <= gx1 and gx0 <= x1 and y0 <= gy1 and gy0 <= y1:
                    touches += 1
                    break
        return touches / total if total else 0.0

    def _merge(self, groups: list[np.ndarray], best: int, near: dict[int, float], g: int) -> np.ndarray:
        """The best group joined by every group next to it (grid neighbours in the first frame) that also
        stays by a hand: a deforming or turning object splits into several coherent pieces."""
        merged = set(groups[best].tolist())
        added = True
        while added:
            added = False
            grown = np.zeros((g, g), bool)
            rows, cols = np.unravel_index(np.fromiter(merged, int), (g, g))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    grown[np.clip(rows + dr, 0, g - 1), np.clip(cols + dc, 0, g - 1)] = True
            for k, grp in enumerate(groups):
                if k == best or near[k] < self.config.merge_near or merged.issuperset(grp.tolist()):
                    continue
                if grown.ravel()[grp].any():
                    merged |= set(grp.tolist())
                    added = True
        return np.asarray(sorted(merged))

    def _grow(
        self,
        frame: np.ndarray,
        group: np.ndarray,
        still: np.ndarray,
        hand_point: np.ndarray,
        palms: list[Palm],
        skin: np.ndarray,
    ) -> tuple[float, float, float, float] | None:
        """The box of the group's own region in the first frame, or None when none is found.

        The group's cells say where the object moved, but at grid resolution, and they include what moved
        with it at its edges (background dragged by the fingers, the wrist); a plain object's inside may
        not be tracked at all. GrabCut sorts the pixels by colour: the group's cells are probably object;
        the still points, the hands and the pixels of the skin's colour surely not; everything else
        probably not. The box is that of the object region's connected parts holding most of the group's
        points.
        """
        g = self.config.grid_size
        h, w = frame.shape[:2]
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        rows, cols = np.unravel_index(group, (g, g))
        for r, c in zip(rows, cols, strict=True):
            mask[r * h // g : (r + 1) * h // g, c * w // g : (c + 1) * w // g] = cv2.GC_PR_FGD
        for palm in palms:
            x0, y0, x1, y1 = palm.grown(self.config.hand_scale)
            rows_in = slice(max(0, int(y0 * h)), max(0, int(y1 * h) + 1))
            mask[rows_in, max(0, int(x0 * w)) : max(0, int(x1 * w) + 1)] = cv2.GC_BGD
        for cells in (np.flatnonzero(still), np.flatnonzero(hand_point)):
            r, c = np.unravel_index(cells, (g, g))
            mask[((r + 0.5) * h / g).astype(int), ((c + 0.5) * w / g).astype(int)] = cv2.GC_BGD
        mask[np.linalg.norm(_lab_ab(frame) - skin, axis=-1) < self.config.skin_tolerance] = cv2.GC_BGD
        probable = mask == cv2.GC_PR_FGD
        if not probable.any() or probable.all():  # GrabCut needs samples of both
            return None
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        bgr = np.ascontiguousarray(frame[..., ::-1])
        cv2.grabCut(bgr, mask, None, bgd, fgd, self.config.grow_iterations, cv2.GC_INIT_WITH_MASK)
        fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
        count, labels = cv2.connectedComponents(fg, connectivity=4)
        centres = labels[((rows + 0.5) * h / g).astype(int), ((cols + 0.5) * w / g).astype(int)]
        held = np.bincount(centres[centres > 0], minlength=count)
        if held.sum() == 0:
            return None
        keep = np.flatnonzero(held >= 0.5 * held.max())
        ys, xs = np.nonzero(np.isin(labels, keep))
        return (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)

    @staticmethod
    def _cells_box(group: np.ndarray, g: int) -> tuple[float, float, float, float]:
        rows, cols = np.unravel_index(group, (g, g))
        return (cols.min() / g, rows.min() / g, (cols.max() + 1) / g, (rows.max() + 1) / g)


def _lab_ab(frame: np.ndarray) -> np.ndarray:
    """(H, W, 2) float Lab a, b of a slightly blurred RGB frame: colour without brightness."""
    return cv2.cvtColor(cv2.GaussianBlur(frame, (5, 5), 0), cv2.COLOR_RGB2LAB)[..., 1:].astype(np.float32)
