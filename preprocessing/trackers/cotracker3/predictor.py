"""CoTracker3 behind the ``Tracker`` interface: ``cotracker3`` (offline) and ``cotracker3-online``.

Like CoTracker's own predictor, the backend hides resizing, coordinate conversion and windowing:

* frames are resized to ``model_resolution`` (bilinear, corners aligned) and points scaled with them,
  so pixel centres map onto pixel centres (our normalised convention, ``im2flow2act.preprocessing.tracks``);
* a 6x6 grid of extra "support" queries on frame 0 is tracked with the user's points (they give the
  transformer context; upstream does the same) and dropped from the output;
* with ``backward_tracking``, points queried after frame 0 are also tracked on the reversed video, which
  fills the frames before their query frame;
* each track is set to its query position, visible, on its query frame;
* visibility: offline ``vis > 0.9``, online ``vis * confidence > 0.6`` (the thresholds upstream uses).

Tracks are not clipped: a point that leaves the image keeps moving outside [0, 1] (and is usually marked
not visible). Random weights are never used by accident: without ``checkpoint`` building the tracker fails
with a message saying where to get the weights, unless ``random_weights=True`` (tests, timing).

Both trackers run under ``torch.inference_mode`` on the CPU or CUDA, in float32, or bfloat16 autocast on
CUDA. Models are imported lazily so that importing the tracker registry stays light.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from im2flow2act.preprocessing.pretrained import TrackerWeightsNotAvailable
from im2flow2act.preprocessing.trackers.base import TRACKERS, OnlineTracker, Tracker, check_inputs
from im2flow2act.preprocessing.tracks import to_normalized, to_pixels

if TYPE_CHECKING:
    import torch

    from im2flow2act.preprocessing.trackers.cotracker3.model import CoTracker3


@dataclass
class _CommonConfig:
    checkpoint: str | None = None
    random_weights: bool = False
    """Use untrained weights when no checkpoint is given (tests and timing only; tracks are meaningless)."""
    iters: int = 6
    """Refinement iterations per window (upstream's predictors use 6)."""
    model_resolution: tuple[int, int] = (384, 512)
    """(height, width) frames are resized to; the checkpoints were trained at 384x512. Multiples of 4."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"
    """bfloat16 runs the network under CUDA autocast; it is refused on the CPU."""
    support_grid: bool = True
    """Track a 6x6 grid of extra points on frame 0 alongside the queries (context, as upstream)."""
    backward_tracking: bool = False
    """Also track points queried after frame 0 backwards in time, to fill the frames before their query."""
    visibility_threshold: float = 0.9
    """A point is visible where the visibility score (times confidence, if used) exceeds this."""
    visibility_uses_confidence: bool = False


@dataclass
class CoTracker3Config(_CommonConfig):
    checkpoint: str | None = None
    """``scaled_offline.pth`` (a file, or a folder holding it), or the Hub repo id ``facebook/cotracker3``."""
    max_frames_per_window: int = 60
    """The offline model refines all frames of a clip jointly, so its memory grows with frames x points.
    Longer clips are cut into windows of this many frames moving by half of it, each started from the
    previous one's predictions (the online model's scheme). 60 is the length of the model's time
    embedding; 0 processes every clip jointly, however long (as upstream does)."""


@dataclass
class CoTracker3OnlineConfig(_CommonConfig):
    """Windows are fixed by the online checkpoint: 16 frames, moving by 8."""

    checkpoint: str | None = None
    """``scaled_online.pth`` (a file, or a folder holding it), or the Hub repo id ``facebook/cotracker3``."""
    visibility_threshold: float = 0.6
    visibility_uses_confidence: bool = True


class _CoTracker3Backend(Tracker):
    """What both trackers share: building the model, resizing, queries, thresholds, backward pass."""

    variant: Literal["offline", "online"] = "offline"

    def __init__(self, config: _CommonConfig) -> None:
        import torch

        self.config = c = config
        self._check_config(c)
        if c.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(c.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "device=cuda was asked for but torch sees no CUDA device; use device=cpu or auto"
            )
        if c.dtype == "bfloat16" and self.device.type != "cuda":
            raise ValueError("dtype=bfloat16 needs a CUDA device; use dtype=float32 on the CPU")
        self.model = self._build_model().to(self.device).eval()

    def _check_config(self, c: _CommonConfig) -> None:
        h, w = c.model_resolution
        if h % 4 or w % 4 or min(h, w) < 32:
            raise ValueError(
                f"model_resolution must be multiples of 4, at least 32, got {c.model_resolution}"
            )
        if c.iters < 1:
            raise ValueError(f"iters must be at least 1, got {c.iters}")

    def _build_model(self) -> CoTracker3:
        import torch

        from im2flow2act.preprocessing.trackers.cotracker3 import model as models
        from im2flow2act.preprocessing.trackers.cotracker3 import weights

        c = self.config
        if c.checkpoint is None and not c.random_weights:
            raise TrackerWeightsNotAvailable(
                f"CoTracker3 {self.variant} weights: no checkpoint given; {weights.how_to_get(self.variant)} "
                "(random_weights=true builds an untrained model, for tests and timing only)"
            )
        path = None
        if c.checkpoint is not None:  # find the file first: a missing one fails before building anything
            path = weights.resolve_checkpoint(c.checkpoint, self.variant)
        cls = models.CoTracker3Offline if self.variant == "offline" else models.CoTracker3Online
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights are the same in every process
            model = cls(c.model_resolution)
        if path is not None:
            weights.load_weights(model, str(path), self.variant)
        return model

    # ----- conversions ---------------------------------------------------------------------
    def _scale(self, size: tuple[int, int]) -> np.ndarray:
        """Factor from input pixels to model pixels, per axis (corner pixel centres stay put)."""
        w, h = size
        if min(w, h) < 2:
            raise ValueError(f"frames must be at least 2x2 pixels, got {w}x{h}")
        mh, mw = self.config.model_resolution
        return np.array([(mw - 1) / (w - 1), (mh - 1) / (h - 1)], np.float32)

    def _model_queries(self, queries: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """(N, 3) normalised (t, x, y) → (1, N + support, 3) model-pixel queries on the device."""
        import torch

        t = np.rint(queries[:, :1]).astype(np.float32)
        xy = to_pixels(queries[:, 1:3], size) * self._scale(size)
        model_queries = np.concatenate([t, xy], axis=1)
        if self.config.support_grid:
            model_queries = np.concatenate([model_queries, self._support_grid()])
        return torch.from_numpy(model_queries).to(self.device)[None]

    def _support_grid(self) -> np.ndarray:
        """6x6 points on frame 0, row-major, inset by width / 64 from the borders (model pixels)."""
        mh, mw = self.config.model_resolution
        margin = mw / 64
        y, x = np.meshgrid(
            np.linspace(margin, mh - margin, 6), np.linspace(margin, mw - margin, 6), indexing="ij"
        )
        return np.stack([np.zeros(x.size), x.ravel(), y.ravel()], axis=1).astype(np.float32)

    def _frames(self, frames: np.ndarray):
        """``get(a, b)``: frames [a, b) as a (1, L, 3, H, W) float tensor at model resolution, on device."""
        import torch
        import torch.nn.functional as F

        size = tuple(self.config.model_resolution)

        def get(start: int, end: int) -> torch.Tensor:
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start:end])).to(self.device)
            chunk = chunk.permute(0, 3, 1, 2).float()
            if chunk.shape[-2:] != size:
                chunk = F.interpolate(chunk, size=size, mode="bilinear", align_corners=True)
            return chunk[None]

        return get

    def _autocast(self):
        import torch

        if self.config.dtype == "bfloat16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _visible(self, vis: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        score = vis.sigmoid() * conf.sigmoid() if self.config.visibility_uses_confidence else vis.sigmoid()
        return score > self.config.visibility_threshold

    # ----- offline interface ---------------------------------------------------------------
    @abstractmethod
    def _run(self, frames, num_frames: int, queries: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Model pass over a whole video → coords (T, N, 2) model pixels, vis and conf logits (T, N)."""

    def track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        check_inputs(frames, queries)
        queries = np.asarray(queries, np.float32)
        t_total, h, w = frames.shape[:3]
        n = len(queries)
        if n == 0:
            return np.zeros((t_total, 0, 2), np.float32), np.zeros((t_total, 0), bool)
        model_queries = self._model_queries(queries, (w, h))
        with torch.inference_mode(), self._autocast():
            coords, vis, conf = self._run(self._frames(frames), t_total, model_queries)
            visible = self._visible(vis, conf)
            start = model_queries[0, :, 0].long()
            if self.config.backward_tracking and int(start.max()) > 0:
                reverse = model_queries.clone()
                reverse[..., 0] = t_total - 1 - reverse[..., 0]
                back_coords, back_vis, back_conf = self._run(self._frames(frames[::-1]), t_total, reverse)
                before = torch.arange(t_total, device=self.device)[:, None] < start[None]
                coords = torch.where(before[..., None], back_coords.flip(0), coords)
                visible = torch.where(before, self._visible(back_vis, back_conf).flip(0), visible)
        tracks_px = coords[:, :n].float().cpu().numpy() / self._scale((w, h))
        tracks = to_normalized(tracks_px, (w, h))
        visible = visible[:, :n].cpu().numpy()
        own = np.rint(queries[:, 0]).astype(int)
        tracks[own, np.arange(n)] = queries[:, 1:3]
        visible[own, np.arange(n)] = True
        return tracks.astype(np.float32), visible.astype(bool)


@TRACKERS.register("cotracker3", CoTracker3Config)
class CoTracker3Tracker(_CoTracker3Backend):
    """CoTracker3 offline (``scaled_offline.pth``): every frame of a clip informs every other.

    Clips up to ``max_frames_per_window`` frames are processed jointly, exactly as upstream; longer ones
    in overlapping windows (see the config). Memory: the CNN features take ~8 MB per frame at 384x512 and
    the correlation step is chunked, so a window of 60 frames with 1024 points fits in a few GB.
    """

    variant = "offline"

    def __init__(self, config: CoTracker3Config | None = None) -> None:
        config = config or CoTracker3Config()
        if config.max_frames_per_window != 0 and config.max_frames_per_window < 2:
            raise ValueError(f"max_frames_per_window must be 0 or >= 2, got {config.max_frames_per_window}")
        super().__init__(config)

    def _run(self, frames, num_frames: int, queries: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from im2flow2act.preprocessing.trackers.cotracker3.model import track_in_windows

        window = self.config.max_frames_per_window
        if window and num_frames > window:
            out = track_in_windows(self.model, frames, num_frames, queries, window, self.config.iters)
        else:
            out = self.model(frames(0, num_frames), queries, self.config.iters)
        return tuple(x[0] for x in out)


@TRACKERS.register("cotracker3-online", CoTracker3OnlineConfig)
class CoTracker3OnlineTracker(_CoTracker3Backend, OnlineTracker):
    """CoTracker3 online (``scaled_online.pth``): windows of 16 frames moving by 8.

    ``track`` runs the windows over a whole video (upstream's non-online evaluation mode). For closed-loop
    use, ``reset(first_frame, queries)`` then ``step(frame)`` answers every frame at once, with no latency:
    each step runs the current window on the frames it has so far (the last one repeated to fill 16), and
    once a window holds 16 real frames it is committed and the next starts 8 frames later. So ``step``
    at frame t returns exactly what ``track`` returns for the last frame of ``frames[: t + 1]``. The price
    is one window of model work per step (plus the CNN on the new frame only); set a smaller
    ``model_resolution`` if steps must be fast on a CPU.
    """

    variant = "online"

    def __init__(self, config: CoTracker3OnlineConfig | None = None) -> None:
        super().__init__(config or CoTracker3OnlineConfig())
        self._windows = None

    def _run(self, frames, num_frames: int, queries: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from im2flow2act.preprocessing.trackers.cotracker3.model import track_in_windows

        out = track_in_windows(
            self.model, frames, num_frames, queries, self.model.window_len, self.config.iters
        )
        return tuple(x[0] for x in out)

    # ----- online interface ----------------------------------------------------------------
    def reset(self, first_frame: np.ndarray, queries: np.ndarray) -> None:
        import torch

        from im2flow2act.preprocessing.trackers.cotracker3.model import SlidingWindows

        queries = np.asarray(queries, np.float32)
        if queries.ndim == 2 and queries.shape[1] == 2:
            queries = np.concatenate([np.zeros((len(queries), 1), np.float32), queries], axis=1)
        if queries.ndim == 2 and queries.shape[1] == 3 and np.any(queries[:, 0] != 0):
            raise ValueError(
                "online queries start on the first frame: pass (N, 2) points or (N, 3) with t = 0"
            )
        check_inputs(first_frame[None], queries)
        h, w = first_frame.shape[:2]
        self._size = (w, h)
        self._n = len(queries)
        model_queries = self._model_queries(queries, self._size)
        with torch.inference_mode(), self._autocast():
            self._windows = SlidingWindows(
                self.model, model_queries, self.model.window_len, self.config.iters
            )
            self._fmaps = self.model.encode(self._frames(first_frame[None])(0, 1))

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self._windows is None:
            raise RuntimeError("call reset(first_frame, queries) before step(frame)")
        if frame.shape != (self._size[1], self._size[0], 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 {(self._size[1], self._size[0], 3)}, got {frame.shape} {frame.dtype}"
            )
        if self._n == 0:
            return np.zeros((0, 2), np.float32), np.zeros(0, bool)
        windows = self._windows
        with torch.inference_mode(), self._autocast():
            new = self.model.encode(self._frames(frame[None])(0, 1))
            self._fmaps = torch.cat([self._fmaps, new], dim=1)
            full = self._fmaps.shape[1] == windows.window_len
            coords, vis, conf = windows.run(self._fmaps, commit=full)
            if full:
                self._fmaps = self._fmaps[:, windows.step :]
            visible = self._visible(vis[0, -1], conf[0, -1])[: self._n].cpu().numpy()
            xy = coords[0, -1, : self._n].float().cpu().numpy() / self._scale(self._size)
        return to_normalized(xy, self._size).astype(np.float32), visible.astype(bool)
