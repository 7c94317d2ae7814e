"""OpenCV pyramidal Lucas–Kanade, the tracker that needs no weights.

Per frame pair it tracks forward, then back again, and trusts a point only when it returns to within
``fb_threshold_px`` of where it started (the forward–backward check). A point that fails, or leaves
the frame, is marked not visible and keeps its last trusted position (so tracks stay inside the frame).
On later frames it is searched for again from the last frame where it was trusted (its "anchor") and
accepted only if its patch still looks like the anchor's, so a point occluded for a while can be
picked up again instead of drifting with whatever covered it.

Queries after frame 0 are tracked forward from their own frame and backward to the start.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from im2flow2act.preprocessing.trackers.base import TRACKERS, OnlineTracker, check_inputs
from im2flow2act.preprocessing.tracks import to_normalized, to_pixels


@dataclass
class LKConfig:
    win_size: int = 21
    """Side of the search window at each pyramid level, in pixels."""
    max_level: int = 3
    """Pyramid levels above the full image (3 → displacements up to ~8× the window are reachable)."""
    fb_threshold_px: float = 1.0
    """Largest forward–backward round-trip error for a point to count as tracked."""
    max_iterations: int = 30
    epsilon: float = 0.01
    min_eigen_threshold: float = 1e-4
    """Reject windows with too little texture to track (OpenCV's minEigThreshold)."""
    reacquire_frames: int = 30
    """How many frames after its last trusted frame a lost point is still searched for."""
    reacquire_min_ncc: float = 0.8
    """A lost point counts as found again only if its patch matches the anchor patch this well
    (normalised cross-correlation); the forward–backward check alone accepts look-alikes."""


@TRACKERS.register("lk", LKConfig)
class LucasKanadeTracker(OnlineTracker):
    def __init__(self, config: LKConfig | None = None) -> None:
        self.config = config or LKConfig()
        c = self.config
        self._lk = pyramid_params(c.win_size, c.max_level, c.min_eigen_threshold, c.max_iterations, c.epsilon)
        self._state: _State | None = None

    # ----- offline -------------------------------------------------------------------------
    def track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_inputs(frames, queries)
        t_total, h, w = frames.shape[:3]
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        start = np.rint(queries[:, 0]).astype(int)
        start_px = to_pixels(queries[:, 1:], (w, h))
        tracks = np.zeros((t_total, len(queries), 2), np.float32)
        visible = np.zeros((t_total, len(queries)), bool)
        self._propagate(gray, start, start_px, tracks, visible)
        if start.max(initial=0) > 0:  # backward pass for frames before each query's own frame
            rev_tracks = np.zeros_like(tracks)
            rev_visible = np.zeros_like(visible)
            self._propagate(gray[::-1], t_total - 1 - start, start_px, rev_tracks, rev_visible)
            before = np.arange(t_total)[:, None] < start[None, :]
            tracks = np.where(before[..., None], rev_tracks[::-1], tracks)
            visible = np.where(before, rev_visible[::-1], visible)
        return to_normalized(tracks, (w, h)), visible

    def _propagate(self, gray, start, start_px, tracks, visible) -> None:
        """Track every point forward from its start frame, filling ``tracks`` (pixels) and ``visible``."""
        state = _State.empty(len(start))
        for t, frame in enumerate(gray):
            if t > 0:
                self._advance(state, frame, t)
            new = start == t
            if new.any():
                state.activate(new, start_px[new], frame, t)
            tracks[t] = state.pos
            visible[t] = state.visible & state.active
        self._state = None

    # ----- online --------------------------------------------------------------------------
    def reset(self, first_frame: np.ndarray, queries: np.ndarray) -> None:
        queries = np.asarray(queries, np.float32)
        xy = queries[:, -2:]
        h, w = first_frame.shape[:2]
        state = _State.empty(len(xy))
        state.activate(np.ones(len(xy), bool), to_pixels(xy, (w, h)), to_gray(first_frame), 0)
        self._state = state
        self._size = (w, h)

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._state is None:
            raise RuntimeError("call reset(first_frame, queries) before step(frame)")
        self._advance(self._state, to_gray(frame), self._state.t + 1)
        return to_normalized(self._state.pos, self._size), self._state.visible.copy()

    # ----- one frame -----------------------------------------------------------------------
    def _advance(self, state: _State, frame: np.ndarray, t: int) -> None:
        """Move all active points into ``frame`` (time ``t``), from their anchor frames."""
        state.t = t
        for anchor_t in np.unique(state.anchor_t[state.active]):
            group = state.active & (state.anchor_t == anchor_t)
            if t - anchor_t > self.config.reacquire_frames + 1:
                state.visible[group] = False
                continue
            prev_frame = state.frames[int(anchor_t)]
            p0 = state.anchor_pos[group]
            p1, good, fb_error = forward_backward(prev_frame, frame, p0, self._lk, guess=state.pos[group])
            good &= fb_error < self.config.fb_threshold_px
            if t - anchor_t > 1 and good.any():  # re-acquisition: also demand a matching appearance
                good[good] = (
                    _patch_ncc(prev_frame, frame, p0[good], p1[good], self.config.win_size)
                    >= self.config.reacquire_min_ncc
                )
            idx = np.flatnonzero(group)
            state.visible[idx] = good
            state.pos[idx[good]] = p1[good]  # the others keep their last trusted position
            state.anchor_pos[idx[good]] = p1[good]
            state.anchor_t[idx[good]] = t
        state.frames[t] = frame
        state.drop_unused_frames(oldest=t - self.config.reacquire_frames - 1)


@dataclass
class _State:
    """Per-point tracking state in pixels, and the frames that anchors still refer to."""

    pos: np.ndarray
    visible: np.ndarray
    active: np.ndarray
    anchor_pos: np.ndarray
    anchor_t: np.ndarray
    frames: dict[int, np.ndarray]
    t: int = 0

    @classmethod
    def empty(cls, n: int) -> _State:
        return cls(
            pos=np.zeros((n, 2), np.float32),
            visible=np.zeros(n, bool),
            active=np.zeros(n, bool),
            anchor_pos=np.zeros((n, 2), np.float32),
            anchor_t=np.zeros(n, int),
            frames={},
        )

    def activate(self, which: np.ndarray, px: np.ndarray, frame: np.ndarray, t: int) -> None:
        self.pos[which] = px
        self.anchor_pos[which] = px
        self.anchor_t[which] = t
        self.visible[which] = True
        self.active[which] = True
        self.frames[t] = frame
        self.t = t

    def drop_unused_frames(self, oldest: int) -> None:
        """Forget frames no point can be searched from any more (bounded memory online)."""
        anchors = self.anchor_t[self.active]
        keep = set(anchors[anchors >= oldest].tolist()) | {self.t}
        for key in [k for k in self.frames if k not in keep]:
            del self.frames[key]


def pyramid_params(
    win_size: int, max_level: int, min_eigen_threshold: float, max_iterations: int = 30, epsilon: float = 0.01
) -> dict:
    """Keyword arguments of ``cv2.calcOpticalFlowPyrLK`` for a square window."""
    return dict(
        winSize=(win_size, win_size),
        maxLevel=max_level,
        criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, max_iterations, epsilon),
        minEigThreshold=min_eigen_threshold,
    )


def forward_backward(
    prev: np.ndarray, frame: np.ndarray, p0: np.ndarray, params: dict, guess: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LK from ``prev`` to ``frame`` and back for points ``p0`` (N, 2) px (``guess``: where to start the
    search in ``frame``) → new positions (N, 2), which are valid (both directions converged to a finite
    point inside the frame), and the forward–backward error (N,) px, for the caller's threshold."""
    h, w = frame.shape
    start = p0.reshape(-1, 1, 2)
    if guess is None:
        p1, ok1, _ = cv2.calcOpticalFlowPyrLK(prev, frame, start, None, **params)
    else:
        initial = guess.reshape(-1, 1, 2).copy()
        p1, ok1, _ = cv2.calcOpticalFlowPyrLK(
            prev, frame, start, initial, flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **params
        )
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(frame, prev, p1, start.copy(), **params)
    p1, back = p1.reshape(-1, 2), back.reshape(-1, 2)
    inside = (p1[:, 0] >= -0.5) & (p1[:, 0] <= w - 0.5) & (p1[:, 1] >= -0.5) & (p1[:, 1] <= h - 0.5)
    valid = ok1.ravel().astype(bool) & ok2.ravel().astype(bool) & np.isfinite(p1).all(axis=1) & inside
    return p1, valid, np.linalg.norm(back - p0.reshape(-1, 2), axis=1)


def _patch_ncc(
    frame_a: np.ndarray, frame_b: np.ndarray, pa: np.ndarray, pb: np.ndarray, size: int
) -> np.ndarray:
    """Normalised cross-correlation of the size×size patches around pa in frame_a and pb in frame_b."""
    out = np.empty(len(pa), np.float32)
    for i, (a, b) in enumerate(zip(pa, pb, strict=True)):
        patch_a = cv2.getRectSubPix(frame_a, (size, size), (float(a[0]), float(a[1])), patchType=cv2.CV_32F)
        patch_b = cv2.getRectSubPix(frame_b, (size, size), (float(b[0]), float(b[1])), patchType=cv2.CV_32F)
        patch_a = patch_a - patch_a.mean()
        patch_b = patch_b - patch_b.mean()
        denom = np.sqrt((patch_a**2).sum() * (patch_b**2).sum())
        out[i] = (patch_a * patch_b).sum() / denom if denom > 1e-6 else 0.0
    return out


def to_gray(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) → grey, what LK reads; anything else is refused."""
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be RGB uint8 (H, W, 3), got {frame.shape} {frame.dtype}")
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
