"""CoTracker3, offline and online variants, with the module tree of the official checkpoints.

Both variants share one architecture (``time_emb`` buffer, ``fnet``, ``updateformer``, ``corr_mlp``); they
differ in the length of the time embedding (60 offline, 16 online) and in how a video is cut in time:

* offline: all frames are refined jointly (time attention spans the whole clip; the time embedding is
  linearly resampled to the clip length);
* online: windows of 16 frames moving by 8; a window starts from the previous window's predictions for
  the 8 frames they share (:class:`SlidingWindows`), so tracks can be produced while frames arrive.

Units inside the model: frames are at the model resolution (H, W multiples of 4, values 0..255), queries
are (t, x, y) in model pixels with 0 at the centre of the first pixel; tracks are refined in feature cells
(pixels / 4) and returned in model pixels, with visibility and confidence as logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from im2flow2act.preprocessing.trackers.cotracker3.blocks import BasicEncoder, Mlp
from im2flow2act.preprocessing.trackers.cotracker3.sampling import (
    feature_pyramid,
    local_correlation,
    motion_encoding,
    sincos_time_embedding,
    support_features,
)
from im2flow2act.preprocessing.trackers.cotracker3.updateformer import EfficientUpdateFormer

STRIDE = 4
"""Feature maps are at 1/4 of the model resolution."""
CORR_RADIUS = 3
"""Correlation neighbourhoods are 7x7 cells at every pyramid level."""
CORR_LEVELS = 4
LATENT_DIM = 128
INPUT_DIM = 1110
"""Token size: visibility + confidence logits (2), correlations (4 levels x 256), motion encoding (84)."""
OFFLINE_WINDOW = 60
ONLINE_WINDOW = 16
FNET_CHUNK = 8
"""Frames pushed through the CNN at once (bounds its activation memory; results do not depend on it)."""
CORR_CHUNK = 8192
"""Point-frames whose 7x7 neighbourhoods are sampled at once (bounds the correlation's memory)."""

Tracks = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(coords (B, T, N, 2), visibility (B, T, N), confidence (B, T, N))."""


class CoTracker3(nn.Module):
    """The shared architecture and one refinement pass over a block of frames."""

    def __init__(self, window_len: int, model_resolution: tuple[int, int] = (384, 512)) -> None:
        super().__init__()
        self.window_len = window_len
        self.model_resolution = tuple(model_resolution)
        self.register_buffer("time_emb", sincos_time_embedding(window_len, INPUT_DIM))
        self.fnet = BasicEncoder(3, LATENT_DIM, STRIDE)
        self.updateformer = EfficientUpdateFormer(input_dim=INPUT_DIM, num_virtual_tracks=64)
        self.corr_mlp = Mlp((2 * CORR_RADIUS + 1) ** 4, 384, 256, approximate="none")

    # ----- features ------------------------------------------------------------------------
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) in 0..255 → unit-length features (B, T, 128, H/4, W/4), float32, in chunks."""
        b, t = video.shape[:2]
        out = []
        for chunk in video.flatten(0, 1).split(FNET_CHUNK):
            f = self.fnet(2.0 * (chunk / 255.0) - 1.0).float()
            norm = torch.sqrt(torch.clamp(torch.sum(f * f, dim=1, keepdim=True), min=1e-12))
            out.append(f / norm)
        return torch.cat(out).unflatten(0, (b, t))

    def query_support(self, pyramid: list[torch.Tensor], frames: torch.Tensor, xy: torch.Tensor) -> list:
        """Per level, the 7x7 features around each query on its frame: (B, N, 49, 128) each.

        ``frames`` (B, N) index the pyramid's time axis; ``xy`` (B, N, 2) is in level-0 cells.
        """
        return [support_features(f, frames, xy / 2**i, CORR_RADIUS) for i, f in enumerate(pyramid)]

    def correlation_embedding(
        self, pyramid: list[torch.Tensor], coords: torch.Tensor, support: list[torch.Tensor]
    ) -> torch.Tensor:
        """(B, T, N, 2) coords in level-0 cells → (B, T, N, 4 * 256), a few frames at a time."""
        b, t, n, _ = coords.shape
        frames_per_chunk = max(1, CORR_CHUNK // max(b * n, 1))
        chunks = []
        for t0 in range(0, t, frames_per_chunk):
            t1 = t0 + frames_per_chunk
            levels = [
                self.corr_mlp(local_correlation(f[:, t0:t1], coords[:, t0:t1] / 2**i, s, CORR_RADIUS))
                for i, (f, s) in enumerate(zip(pyramid, support, strict=True))
            ]
            chunks.append(torch.cat(levels, dim=-1))
        return torch.cat(chunks, dim=1)

    def time_embedding(self, length: int) -> torch.Tensor:
        """(1, length, 1110): the stored embedding, linearly resampled when the block has another length."""
        if length == self.time_emb.shape[1]:
            return self.time_emb
        resampled = nn.functional.interpolate(
            self.time_emb.transpose(1, 2), size=length, mode="linear", align_corners=False
        )
        return resampled.transpose(1, 2)

    # ----- refinement ----------------------------------------------------------------------
    def refine(
        self,
        pyramid: list[torch.Tensor],
        support: list[torch.Tensor],
        coords: torch.Tensor,
        vis: torch.Tensor,
        conf: torch.Tensor,
        iters: int,
    ) -> Tracks:
        """``iters`` updates of coords (B, T, N, 2) in cells and logits (B, T, N), all T frames jointly."""
        t = coords.shape[1]
        h, w = self.model_resolution
        scale = torch.tensor([w / STRIDE, h / STRIDE], dtype=coords.dtype, device=coords.device)
        time_emb = self.time_embedding(t)[:, None]  # (1, 1, T, D)
        for _ in range(iters):
            corr = self.correlation_embedding(pyramid, coords, support)
            tokens = torch.cat(
                [vis[..., None], conf[..., None], corr, motion_encoding(coords, scale)], dim=-1
            )
            delta = self.updateformer(tokens.transpose(1, 2) + time_emb).transpose(1, 2)
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
        return coords, vis, conf

    def check_input(self, video: torch.Tensor, queries: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, T, 3, H, W), got {tuple(video.shape)}")
        if video.shape[-2] % STRIDE or video.shape[-1] % STRIDE:
            raise ValueError(f"frame size must be a multiple of {STRIDE}, got {tuple(video.shape[-2:])}")
        if queries.dim() != 3 or queries.shape[-1] != 3 or queries.shape[0] != video.shape[0]:
            raise ValueError(f"queries must be (B, N, 3) as (t, x, y), got {tuple(queries.shape)}")


class CoTracker3Offline(CoTracker3):
    """All frames refined jointly; memory grows with frames x points (see :func:`track_in_windows`)."""

    def __init__(self, model_resolution: tuple[int, int] = (384, 512)) -> None:
        super().__init__(OFFLINE_WINDOW, model_resolution)

    def forward(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 6) -> Tracks:
        """video (B, T, 3, H, W) 0..255, queries (B, N, 3) → coords in model pixels and logits."""
        self.check_input(video, queries)
        b, t = video.shape[:2]
        pyramid = feature_pyramid(self.encode(video), CORR_LEVELS)
        xy = queries[..., 1:] / STRIDE
        support = self.query_support(pyramid, queries[..., 0].round().long(), xy)
        coords = xy[:, None].expand(b, t, -1, -1)
        zeros = torch.zeros(coords.shape[:3], dtype=coords.dtype, device=coords.device)
        coords, vis, conf = self.refine(pyramid, support, coords, zeros, zeros, iters)
        return coords * STRIDE, vis, conf


class CoTracker3Online(CoTracker3):
    """Windows of 16 frames moving by 8; ``forward`` tracks a whole video window by window."""

    def __init__(self, model_resolution: tuple[int, int] = (384, 512)) -> None:
        super().__init__(ONLINE_WINDOW, model_resolution)

    def forward(self, video: torch.Tensor, queries: torch.Tensor, iters: int = 6) -> Tracks:
        """video (B, T, 3, H, W) 0..255, queries (B, N, 3) → coords in model pixels and logits."""
        self.check_input(video, queries)
        return track_in_windows(
            self, lambda start, end: video[:, start:end], video.shape[1], queries, self.window_len, iters
        )


class SlidingWindows:
    """State of tracking through overlapping windows of S frames that move by S // 2.

    A window starts from query positions and zero logits, except that points whose query frame lies
    before the frames the window adds take the previous window's final predictions for the frames both
    share (and the last of those for the rest). Each point's query-support features come from its own
    query frame, the first time a window contains it; points whose frame no window has reached yet have
    zero support (so zero correlation). A window with fewer than S real frames is padded by repeating the
    last one. ``run(..., commit=False)`` evaluates a window without changing the state (used to answer
    every online step before the window is full).
    """

    def __init__(self, model: CoTracker3, queries: torch.Tensor, window_len: int, iters: int) -> None:
        if window_len < 2:
            raise ValueError(f"a window needs at least 2 frames, got {window_len}")
        self.model = model
        self.window_len = window_len
        self.step = window_len // 2
        self.iters = iters
        self.frames = queries[..., 0].round().long()  # (B, N)
        self.xy = queries[..., 1:] / STRIDE  # (B, N, 2) in cells
        self.start = 0  # absolute index of the window's first frame
        self.support: list[torch.Tensor] | None = None
        self.has_support = torch.zeros_like(self.frames, dtype=torch.bool)
        self.carry: Tracks | None = None  # predictions for the frames the next window shares

    def run(self, fmaps: torch.Tensor, commit: bool = True) -> Tracks:
        """fmaps (B, L, 128, h, w) of frames [start, start + L), L <= S → tracks of those L frames.

        Coords come back in model pixels, visibility and confidence as logits. With ``commit`` the window
        is final: its state is kept for the next window, which starts ``S // 2`` frames later.
        """
        s, real = self.window_len, fmaps.shape[1]
        if not 1 <= real <= s:
            raise ValueError(f"a window holds 1..{s} frames, got {real}")
        if real < s:
            fmaps = torch.cat([fmaps, fmaps[:, -1:].expand(-1, s - real, -1, -1, -1)], dim=1)
        pyramid = feature_pyramid(fmaps, CORR_LEVELS)
        support, has_support = self._support(pyramid, real)
        coords, vis, conf = self._init(s)
        coords, vis, conf = self.model.refine(pyramid, support, coords, vis, conf, self.iters)
        if commit:
            self.support, self.has_support = support, has_support
            self.carry = (
                (coords[:, self.step :], vis[:, self.step :], conf[:, self.step :]) if real == s else None
            )
            self.start += self.step
        return coords[:, :real] * STRIDE, vis[:, :real], conf[:, :real]

    def _support(self, pyramid: list[torch.Tensor], real: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        local = self.frames - self.start
        new = ~self.has_support & (local >= 0) & (local < real)
        sampled = self.model.query_support(pyramid, local.clamp(0, real - 1), self.xy)
        mask = new[:, :, None, None].to(sampled[0].dtype)
        if self.support is None:
            support = [f * mask for f in sampled]
        else:
            support = [old + f * mask for old, f in zip(self.support, sampled, strict=True)]
        return support, self.has_support | new

    def _init(self, s: int) -> Tracks:
        b, n = self.frames.shape
        coords = self.xy[:, None].expand(b, s, n, 2)
        vis = torch.zeros((b, s, n), dtype=self.xy.dtype, device=self.xy.device)
        conf = torch.zeros_like(vis)
        if self.carry is None:
            return coords, vis, conf
        overlap = s - self.step
        copy = (self.frames < self.start + overlap)[:, None]  # (B, 1, N)

        def carried(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x[:, -1:].expand(-1, s - overlap, *x.shape[2:])], dim=1)

        prev_coords, prev_vis, prev_conf = (carried(x) for x in self.carry)
        coords = torch.where(copy[..., None], prev_coords, coords)
        return coords, torch.where(copy, prev_vis, vis), torch.where(copy, prev_conf, conf)


def track_in_windows(
    model: CoTracker3,
    frames: Callable[[int, int], torch.Tensor],
    num_frames: int,
    queries: torch.Tensor,
    window_len: int,
    iters: int,
) -> Tracks:
    """Track a video through :class:`SlidingWindows`; ``frames(a, b)`` gives frames [a, b) (B, L, 3, H, W).

    Each frame goes through the CNN once (the features shared by consecutive windows are kept), so memory
    is bounded by one window whatever the video's length. Returns coords in model pixels and logits.
    """
    windows = SlidingWindows(model, queries, window_len, iters)
    step = windows.step
    count = 1 if num_frames <= window_len else -(-(num_frames - window_len) // step) + 1
    outputs: list[Tracks] = []
    cached, cached_start = None, 0
    for start in range(0, count * step, step):
        end = min(start + window_len, num_frames)
        keep = 0 if cached is None else max(0, cached_start + cached.shape[1] - start)
        new = model.encode(frames(start + keep, end))
        fmaps = new if keep == 0 else torch.cat([cached[:, start - cached_start :], new], dim=1)
        cached, cached_start = fmaps, start
        coords, vis, conf = windows.run(fmaps, commit=True)
        last = start + step if end < num_frames else end  # later windows overwrite the rest
        outputs.append((coords[:, : last - start], vis[:, : last - start], conf[:, : last - start]))
    return tuple(torch.cat(parts, dim=1) for parts in zip(*outputs, strict=True))  # type: ignore[return-value]
