"""``object-lk``: Lucas–Kanade points held together by the object's own motion (no weights, CPU).

Plain LK follows each point alone, so a point on a textureless surface or on the object's outline
(whose window holds background too) slides off onto the table or stays behind with the background.
The queries of an episode all lie on one object, so here they move together:

1. every point is tracked from the previous frame with pyramidal LK and a forward–backward check;
2. a similarity transform (rotation, scale, translation) is fitted with RANSAC to the points that
   passed — the object's motion between the two frames, which the well-textured points carry;
3. a point whose LK result agrees with that motion (within ``agree_px``, so bending and turning
   surfaces keep their own motion) takes it; every other point — failed, textureless, or sliding — is
   moved by the fitted motion instead;
4. where too few points pass to fit a motion (the object covered, a blur), points keep their last
   positions and are not visible until the motion is found again.

Points that the object's motion carries onto something else (a grid point on the background inside the
box) keep moving with the object; the drift check after tracking (``preprocessing/drift.py``) turns
them off where they no longer look like their query. Queries after frame 0 are tracked forward from
their own frame and backward to the start, as ``lk`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from im2flow2act.preprocessing.trackers.base import TRACKERS, OnlineTracker, check_inputs
from im2flow2act.preprocessing.trackers.lucas_kanade import forward_backward, pyramid_params, to_gray
from im2flow2act.preprocessing.tracks import to_normalized, to_pixels


@dataclass
class ObjectLKConfig:
    win_size: int = 21
    max_level: int = 3
    fb_threshold_px: float = 1.0
    min_eigen_threshold: float = 1e-4
    measure: str = "lk"
    """How each point's own motion is measured: lk (pyramidal LK per point) or dis (OpenCV's dense DIS
    optical flow read at the points; textureless regions get the flow of their surroundings)."""
    motion: str = "similarity"
    """The object's frame-to-frame motion model: similarity | affine | translation."""
    ransac_px: float = 2.0
    """RANSAC inlier distance, in pixels of a 256-pixel frame."""
    agree_px: float = 3.0
    """A point keeps its own LK result when it lies this close to where the object's motion puts it."""
    min_points: int = 6
    """Fewest points passing the forward–backward check for the object's motion to be fitted."""
    min_inlier_share: float = 0.3
    """The fit counts only when this share of those points agree with it (else: no motion this frame)."""
    object_colour: float = 20.0
    """Queries whose colour (Lab a, b) lies farther than this from the queries' median colour start as
    probably not the object (the background inside its box) and do not steer the object's motion."""
    member_decay: float = 0.8
    """A point whose own LK motion disagrees with the object's loses this factor of its membership per
    frame (and regains 0.1 when it agrees); points below 0.5 do not steer the fit."""

    def __post_init__(self) -> None:
        if self.measure not in ("lk", "dis"):
            raise ValueError(f"measure must be lk | dis, got {self.measure!r}")
        if self.motion not in ("similarity", "affine", "translation"):
            raise ValueError(f"motion must be similarity | affine | translation, got {self.motion!r}")


@TRACKERS.register("object-lk", ObjectLKConfig)
class ObjectLKTracker(OnlineTracker):
    def __init__(self, config: ObjectLKConfig | None = None) -> None:
        self.config = config or ObjectLKConfig()
        c = self.config
        self._lk = pyramid_params(c.win_size, c.max_level, c.min_eigen_threshold)
        self._online: dict | None = None
        self._dis = None
        if c.measure == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    # ----- offline -------------------------------------------------------------------------------------
    def track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_inputs(frames, queries)
        cv2.setRNGSeed(0)  # RANSAC's samples: the same tracks for a video whatever ran before in this process
        t_total, h, w = frames.shape[:3]
        gray = [to_gray(f) for f in frames]
        start = np.rint(queries[:, 0]).astype(int)
        start_px = to_pixels(queries[:, 1:], (w, h))
        prior = self._membership(frames, start, start_px)
        tracks, visible = self._propagate(gray, start, start_px, prior)
        if start.max(initial=0) > 0:  # frames before a query's own frame: track the reversed clip
            rev_tracks, rev_visible = self._propagate(gray[::-1], t_total - 1 - start, start_px, prior)
            before = np.arange(t_total)[:, None] < start[None, :]
            tracks = np.where(before[..., None], rev_tracks[::-1], tracks)
            visible = np.where(before, rev_visible[::-1], visible)
        return to_normalized(tracks, (w, h)), visible

    def _membership(self, frames: np.ndarray, start: np.ndarray, start_px: np.ndarray) -> np.ndarray:
        """(N,) first membership of each query in the object: 1 near the queries' median colour, else 0.2."""
        ab = np.zeros((len(start), 2), np.float32)
        h, w = frames.shape[1:3]
        for t in np.unique(start):
            lab = cv2.cvtColor(cv2.blur(frames[t], (5, 5)), cv2.COLOR_RGB2LAB)[..., 1:].astype(np.float32)
            cols = np.clip(np.rint(start_px[start == t, 0]).astype(int), 0, w - 1)
            rows = np.clip(np.rint(start_px[start == t, 1]).astype(int), 0, h - 1)
            ab[start == t] = lab[rows, cols]
        far = np.linalg.norm(ab - np.median(ab, axis=0), axis=1) > self.config.object_colour
        return np.where(far, 0.2, 1.0)

    def _propagate(self, gray, start, start_px, prior) -> tuple[np.ndarray, np.ndarray]:
        n = len(start)
        member = prior.astype(np.float64).copy()
        tracks = np.zeros((len(gray), n, 2), np.float32)
        visible = np.zeros((len(gray), n), bool)
        pos = np.zeros((n, 2), np.float32)
        vis = np.zeros(n, bool)
        active = np.zeros(n, bool)
        for t, frame in enumerate(gray):
            if t > 0 and active.any():
                pos[active], vis[active], member[active] = self._step(
                    gray[t - 1], frame, pos[active], member[active]
                )
            new = start == t
            pos[new], vis[new], active[new] = start_px[new], True, True
            tracks[t], visible[t] = pos, vis & active
        return tracks, visible

    # ----- online --------------------------------------------------------------------------------------
    def reset(self, first_frame: np.ndarray, queries: np.ndarray) -> None:
        xy = np.asarray(queries, np.float32)[:, -2:]
        h, w = first_frame.shape[:2]
        px = to_pixels(xy, (w, h))
        member = self._membership(first_frame[None], np.zeros(len(xy), int), px)
        cv2.setRNGSeed(0)
        self._online = {"frame": to_gray(first_frame), "pos": px, "size": (w, h), "member": member}

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._online is None:
            raise RuntimeError("call reset(first_frame, queries) before step(frame)")
        state = self._online
        gray = to_gray(frame)
        state["pos"], visible, state["member"] = self._step(
            state["frame"], gray, state["pos"], state["member"]
        )
        state["frame"] = gray
        return to_normalized(state["pos"], state["size"]), visible

    # ----- one frame -----------------------------------------------------------------------------------
    def _step(self, prev: np.ndarray, frame: np.ndarray, p0: np.ndarray, member: np.ndarray):
        """Points ``p0`` (N, 2) px in ``prev`` with their object membership → (positions in ``frame``,
        visible, updated membership)."""
        c = self.config
        h, w = frame.shape
        scale = max(h, w) / 256.0
        if self._dis is not None:
            p1, valid, fb_error = self._dense_forward_backward(prev, frame, p0)
        else:
            p1, valid, fb_error = forward_backward(prev, frame, p0, self._lk)
        good = valid & (fb_error < c.fb_threshold_px)
        steer = good & (member >= 0.5)
        if steer.sum() < c.min_points:
            steer = good
        motion = self._fit(p0[steer], p1[steer], c.ransac_px * scale) if steer.sum() >= c.min_points else None
        if motion is None:  # no object motion this frame: trust only what LK found
            out = np.where(good[:, None], p1, p0).astype(np.float32)
            return out, good, member
        predicted = cv2.transform(p0.reshape(-1, 1, 2).astype(np.float64), motion).reshape(-1, 2)
        agree = good & (np.linalg.norm(p1 - predicted, axis=1) < c.agree_px * scale)
        member = np.where(
            agree, np.minimum(1.0, member + 0.1), np.where(good, member * c.member_decay, member)
        )
        out = np.where(agree[:, None], p1, predicted).astype(np.float32)
        inside = (out[:, 0] >= -0.5) & (out[:, 0] <= w - 0.5) & (out[:, 1] >= -0.5) & (out[:, 1] <= h - 0.5)
        out[:, 0] = np.clip(out[:, 0], -0.5, w - 0.5)
        out[:, 1] = np.clip(out[:, 1], -0.5, h - 0.5)
        return out, inside, member

    def _dense_forward_backward(self, prev, frame, p0):
        """DIS flow both ways, read at the points (bilinear) → (positions, valid, round-trip error px)."""
        h, w = frame.shape
        forward = self._dis.calc(prev, frame, None)
        backward = self._dis.calc(frame, prev, None)
        p1 = p0 + _sample(forward, p0)
        back = p1 + _sample(backward, p1)
        inside = (p1[:, 0] >= -0.5) & (p1[:, 0] <= w - 0.5) & (p1[:, 1] >= -0.5) & (p1[:, 1] <= h - 0.5)
        return p1.astype(np.float32), inside, np.linalg.norm(back - p0, axis=1)

    def _fit(self, a: np.ndarray, b: np.ndarray, ransac_px: float) -> np.ndarray | None:
        """The 2×3 motion taking ``a`` to ``b`` (RANSAC), or None when too few points agree with any."""
        c = self.config
        if c.motion == "translation":
            shift = np.median(b - a, axis=0)
            inliers = np.linalg.norm(b - a - shift, axis=1) < ransac_px
            if inliers.mean() < c.min_inlier_share:
                return None
            shift = (b - a)[inliers].mean(axis=0)
            return np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
        estimate = cv2.estimateAffinePartial2D if c.motion == "similarity" else cv2.estimateAffine2D
        matrix, inliers = estimate(
            a.reshape(-1, 1, 2), b.reshape(-1, 1, 2), method=cv2.RANSAC, ransacReprojThreshold=ransac_px
        )
        if matrix is None or inliers is None or inliers.mean() < c.min_inlier_share:
            return None
        return matrix


def _sample(flow: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A dense (H, W, 2) field read at (N, 2) pixel points, bilinearly."""
    x = points[:, 0].reshape(1, -1).astype(np.float32)
    y = points[:, 1].reshape(1, -1).astype(np.float32)
    return cv2.remap(flow, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 2)
