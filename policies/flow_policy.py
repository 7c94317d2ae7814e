"""The flow-conditioned diffusion policy (Flow2Act), after the reference design with its weak points fixed.

- Point tokens: a 2-D sin-cos embedding of the point's image position, a projection of its initial 3-D
  position, and a learned visibility embedding (the reference ignored visibility).
- State encoder: a set transformer (no positional encoding, a CLS token) from N point tokens to one vector;
  it embeds the current state and every frame of the plan and of the remaining flow.
- Time alignment ψ: a transformer over [state, proprioception, plan frames] that predicts the embedding
  of the remaining flow; trained with an L2 alignment loss against the remaining-flow encoder ξ, on
  detached inputs (only ψ learns from it), as in the reference.
- Action head: a FiLM 1-D U-Net denoising chunks of T actions (xyz + 6-D rotation + gripper), with a
  ``diffusers`` DDIM scheduler (ε-prediction, squared-cosine betas, 50 training / 16 sampling steps).
- Optional point attention (``point_attention``): one token per point from its current position, initial
  3-D position and its whole plan trajectory relative to where it is now; the U-Net cross-attends to them.
  The pooled condition let the small policy ignore the flow (the noise, not the flow, picked grasp or push);
  per-point tokens keep where each point must go in reach of every denoising step.
- Optional ``plan_end_3d``: each per-point token also gets where its plan ends, lifted onto the initial
  depth image (the 3-D point that pixel shows), so where to put the object is given on the scene, not only
  in the image.
- The normaliser is part of the module, so it is saved and loaded with the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import nn

from im2flow2act.core import checkpoint
from im2flow2act.policies.normalizer import Normalizer
from im2flow2act.policies.unet1d import ConditionalUnet1D


@dataclass
class FlowPolicyConfig:
    dim: int = 64
    heads: int = 4
    state_depth: int = 2
    align_depth: int = 2
    remaining_depth: int = 2
    unet_dims: list[int] = field(default_factory=lambda: [64, 128])
    action_dim: int = 10
    proprio_dim: int = 10
    obs_horizon: int = 1
    pred_horizon: int = 16
    plan_frames: int = 16
    train_steps: int = 50
    inference_steps: int = 16
    plan_dropout: float = 0.1
    align_weight: float = 1.0
    frame_encoder: str = "pointnet"
    """How plan / remaining-flow frames are embedded: "transformer" (the state encoder, as the reference —
    64 frames × N points per sample, GPU-sized) or "pointnet" (shared MLP, max+mean pooling, ~10× cheaper)."""
    object_frame: bool = True
    """Express the end-effector positions of proprioception and of the denoised chunk relative to the
    object: the mean initial 3-D position of the sample's points (outputs stay absolute). Reaching the
    object then means reaching a nearly constant offset, instead of regressing the object's position from
    point tokens through a pooled condition — the absolute-position small policy reached the mug but
    missed the grasp by centimetres."""
    point_attention: bool = False
    """Let the action U-Net cross-attend to per-point plan tokens (see the module docstring)."""
    point_attention_depth: int = 1
    """Self-attention layers over the per-point plan tokens before the U-Net reads them."""
    plan_end_3d: bool = False
    """Give each per-point token ``end_3d``: the 3-D point that the pixel where the plan ends shows in the
    initial depth image (for a mug taken to a plate, a point on the plate), in the object frame. A 2-D flow
    says where the object ends only in the image; this lifts it onto the scene, so the policy need not learn
    the camera's projection to place precisely. Needs ``point_attention`` and ``object_frame``. Off by
    default: it has not helped so far (docs/results/policies.md)."""
    objective: str = "diffusion"
    """diffusion: denoise a noised action chunk (DDIM); regression: the same network, given no noise (a zero
    chunk at step 0), predicts the chunk directly with an MSE loss — one answer, the mean of what the
    play shows from that state: the baseline that shows what diffusion adds."""
    condition_dropout: float = 0.0
    """Probability, per training sample, of replacing the flow condition (the remaining-flow embedding) by
    a learned null embedding, so that sampling can use classifier-free guidance on the flow."""
    plan_visibility: bool = True
    """Read the plan's (and the remaining flow's) visibility. False: every plan point counts as visible, so
    the policy reads only where the points go; the online tracker's current visibility is still read. The
    play-trained policy otherwise finds the grasp from where the plan's points are hidden (by the hand that
    grasps there), which a generated plan draws faintly (docs/results/policies.md)."""
    guidance_scale: float = 1.0
    """Sampling: ε = ε_null + s·(ε_flow − ε_null). Above 1 it amplifies what the flow asks for over what
    the state alone suggests (the small policy let the noise, not the flow, pick grasp or push). Values
    other than 1 need a policy trained with ``condition_dropout`` > 0."""

    @classmethod
    def preset(cls, name: str) -> FlowPolicyConfig:
        """``small`` trains on a laptop CPU; ``reference`` has the reference's sizes (for GPUs)."""
        if name == "small":
            return cls()
        if name == "reference":
            return cls(
                dim=384,
                heads=8,
                state_depth=4,
                align_depth=8,
                remaining_depth=4,
                unet_dims=[256, 512, 1024],
                plan_frames=32,
                frame_encoder="transformer",
            )
        raise ValueError(f"unknown policy preset {name!r}; use small or reference")


def sincos_2d(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """(…, 2) positions in [0, 1] → (…, dim) fixed sin-cos features (dim/2 per axis), at a 224-pixel scale."""
    quarter = dim // 4
    freq = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=xy.device) / max(quarter, 1))
    angles = xy[..., :, None] * 224.0 * freq  # (…, 2, quarter)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def sincos_1d(length: int, dim: int, device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=device) / dim)
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out


def transformer_encoder(dim: int, depth: int, heads: int) -> nn.TransformerEncoder:
    """Pre-norm transformer encoder layers without dropout, the block every token mixer here uses."""
    layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class TokenTransformer(nn.Module):
    """Pre-norm transformer encoder with a CLS token; optional fixed sequence position encoding."""

    def __init__(self, dim: int, depth: int, heads: int, positional: bool) -> None:
        super().__init__()
        self.encoder = transformer_encoder(dim, depth, heads)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.positional = positional

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.positional:
            tokens = tokens + sincos_1d(tokens.shape[1], tokens.shape[2], tokens.device)
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.norm(self.encoder(x)[:, 0])


class PointNetPool(nn.Module):
    """Set embedding by a shared MLP, then max and mean pooling: cheap and permutation-invariant."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.out = nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.mlp(tokens)
        return self.out(torch.cat([h.max(dim=1).values, h.mean(dim=1)], dim=-1))


class PointPlanTokens(nn.Module):
    """Per-point tokens: the point's current token plus an MLP of its plan trajectory relative to where the
    point is now (F × (dx, dy, visibility)), then a few self-attention layers across points.

    The plan and the current positions exist alike in training and at deployment, so unlike the remaining
    flow this path needs no time alignment: where the point sits along its plan is read from the offsets.
    """

    offset_scale = 8.0
    """Image offsets are fractions of the image; ×8 brings a typical motion to order one."""

    def __init__(self, dim: int, plan_frames: int, heads: int, depth: int, end_3d: bool = False) -> None:
        super().__init__()
        self.track = nn.Sequential(
            nn.Linear(3 * plan_frames, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim)
        )
        self.end = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim)) if end_3d else None
        self.mix = transformer_encoder(dim, depth, heads) if depth else nn.Identity()

    def forward(
        self,
        tokens: torch.Tensor,
        current: torch.Tensor,
        plan: torch.Tensor,
        end_3d: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, N, dim) of the current points; current (B, N, 3); plan (B, F, N, 3); end_3d (B, N, 3)
        normalised, when the policy uses it → (B, N, dim)."""
        offsets = self.offset_scale * (plan[..., :2] - current[:, None, :, :2]).permute(0, 2, 1, 3)
        visible = plan[..., 2:].permute(0, 2, 1, 3)
        track = torch.cat([offsets, visible], dim=-1).flatten(2)
        tokens = tokens + self.track(track)
        if self.end is not None:
            tokens = tokens + self.end(end_3d)
        return self.mix(tokens)


class FlowPolicy(nn.Module):
    def __init__(self, config: FlowPolicyConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or FlowPolicyConfig()
        half = c.dim // 2
        self.point_proj = nn.Sequential(nn.Linear(3, half), nn.LayerNorm(half))
        self.visibility = nn.Embedding(2, c.dim)
        self.state_encoder = TokenTransformer(c.dim, c.state_depth, c.heads, positional=False)
        if c.objective not in ("diffusion", "regression"):
            raise ValueError(f"objective must be diffusion or regression, got {c.objective!r}")
        if c.objective == "regression" and c.condition_dropout > 0:
            raise ValueError("condition_dropout (flow guidance) needs objective diffusion")
        if c.frame_encoder not in ("transformer", "pointnet"):
            raise ValueError(f"frame_encoder must be transformer or pointnet, got {c.frame_encoder!r}")
        self.frame_encoder = self.state_encoder if c.frame_encoder == "transformer" else PointNetPool(c.dim)
        self.proprio_proj = nn.Sequential(
            nn.Linear(c.proprio_dim * c.obs_horizon, c.dim), nn.LayerNorm(c.dim)
        )
        self.align = TokenTransformer(c.dim, c.align_depth, c.heads, positional=True)
        self.remaining_encoder = TokenTransformer(c.dim, c.remaining_depth, c.heads, positional=True)
        self.null_plan = nn.Parameter(torch.zeros(1, c.dim)) if c.condition_dropout > 0 else None
        if c.plan_end_3d and not (c.point_attention and c.object_frame):
            raise ValueError("plan_end_3d needs point_attention and object_frame")
        self.point_tokens = (
            PointPlanTokens(c.dim, c.plan_frames, c.heads, c.point_attention_depth, c.plan_end_3d)
            if c.point_attention
            else None
        )
        self.head = ConditionalUnet1D(
            c.action_dim, 3 * c.dim, tuple(c.unet_dims), context_dim=c.dim if c.point_attention else None
        )
        dims = {"action": c.action_dim, "proprio": c.proprio_dim, "points_3d": 3}
        self.normalizer = Normalizer(dims | ({"object_position": 3} if c.object_frame else {}))
        self.scheduler = DDIMScheduler(
            num_train_timesteps=c.train_steps,
            beta_schedule="squaredcos_cap_v2",
            clip_sample=True,
            prediction_type="epsilon",
        )

    # ----- positions in the object frame -----------------------------------------------------------------
    @staticmethod
    def object_anchor(points_3d: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) initial 3-D points → (B, 1, 3): the origin of the object frame."""
        return points_3d.mean(dim=1, keepdim=True)

    def normalize_vectors(self, key: str, value: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """(B, T, D) action or proprioception vectors → normalised, position in the object frame."""
        out = self.normalizer.normalize(key, value)
        if not self.config.object_frame:
            return out
        position = self.normalizer.normalize("object_position", value[..., :3] - anchor)
        return torch.cat([position, out[..., 3:]], dim=-1)

    def unnormalize_actions(self, actions: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        out = self.normalizer.unnormalize("action", actions)
        if not self.config.object_frame:
            return out
        position = self.normalizer.unnormalize("object_position", actions[..., :3]) + anchor
        return torch.cat([position, out[..., 3:]], dim=-1)

    # ----- encoders ------------------------------------------------------------------------------
    def _point_tokens(self, flow: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
        """flow (…, N, 3) = (x, y, vis); descriptor (B, N, dim/2) → tokens (…, N, dim)."""
        xy, vis = flow[..., :2], flow[..., 2].round().long().clamp(0, 1)
        desc = descriptor.expand(*flow.shape[:-1], descriptor.shape[-1])
        return torch.cat(
            [sincos_2d(xy, self.config.dim // 2).to(desc.dtype), desc], dim=-1
        ) + self.visibility(vis)

    def _encode_frames(self, flow: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
        """flow (B, F, N, 3) → (B, F, dim): the frame encoder applied to every frame."""
        b, f, n, _ = flow.shape
        tokens = self._point_tokens(flow, descriptor[:, None]).reshape(b * f, n, -1)
        return self.frame_encoder(tokens).reshape(b, f, -1)

    def _flow_in(self, flow: torch.Tensor) -> torch.Tensor:
        """A plan or remaining flow (…, 3) as the policy reads it: all visible unless ``plan_visibility``."""
        if self.config.plan_visibility:
            return flow
        return torch.cat([flow[..., :2], torch.ones_like(flow[..., 2:])], dim=-1)

    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Condition pieces from a (normalised-on-the-fly) batch."""
        batch = {**batch, "plan": self._flow_in(batch["plan"])}
        points = self.normalizer.normalize("points_3d", batch["points_3d"])
        descriptor = self.point_proj(points)  # (B, N, dim/2)
        current_tokens = self._point_tokens(batch["current"], descriptor)
        state = self.state_encoder(current_tokens)
        anchor = self.object_anchor(batch["points_3d"])
        proprio = self.normalize_vectors("proprio", batch["proprio"], anchor).flatten(1)
        proprio = self.proprio_proj(proprio)
        plan = self._encode_frames(batch["plan"], descriptor)
        sequence = torch.cat([state[:, None], proprio[:, None], plan], dim=1)
        predicted = self.align(sequence.detach())
        end_3d = None
        if self.config.plan_end_3d:
            end_3d = self.normalizer.normalize("object_position", batch["end_3d"] - anchor)
        context = (
            self.point_tokens(current_tokens, batch["current"], batch["plan"], end_3d)
            if self.point_tokens is not None
            else None
        )
        return {
            "state": state,
            "proprio": proprio,
            "descriptor": descriptor,
            "predicted_plan": predicted,
            "context": context,
        }

    # ----- training ------------------------------------------------------------------------------
    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The random draws of ``n`` training samples (diffusion noise and step, plan-dropout mask,
        condition dropout), on the CPU; the trainer draws them per sample from seeded generators."""
        c = self.config
        keep = 1.0 - c.plan_dropout
        return {
            "noise": torch.randn(n, c.pred_horizon, c.action_dim, generator=generator),
            "timesteps": torch.randint(0, c.train_steps, (n,), generator=generator),
            "plan_keep": (torch.rand(n, c.dim, generator=generator) < keep).float() / max(keep, 1e-6),
            "drop_condition": torch.rand(n, 1, generator=generator) < c.condition_dropout,
        }

    def forward(
        self, batch: dict[str, torch.Tensor], noise: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch and its parts (denoise, align); what ``accelerate`` / DDP call.

        ``noise`` (``draw_noise``'s draws for these samples) defaults to fresh draws from torch's RNG."""
        parts = self.encode(batch)
        remaining = self._flow_in(batch["remaining"])
        remaining = self.remaining_encoder(self._encode_frames(remaining, parts["descriptor"]))
        device = remaining.device
        if noise is None:
            noise = self.draw_noise(len(remaining))
        noise = {k: v.to(device) for k, v in noise.items()}
        flow = remaining * noise["plan_keep"].to(remaining.dtype) if self.training else remaining
        if self.null_plan is not None:
            flow = torch.where(noise["drop_condition"], self.null_plan.expand_as(flow), flow)
        cond = torch.cat([parts["state"], flow, parts["proprio"]], dim=-1)
        actions = self.normalize_vectors("action", batch["action"], self.object_anchor(batch["points_3d"]))
        if self.config.objective == "regression":
            denoise = F.mse_loss(self._regress(cond, parts["context"]), actions)
        else:
            eps, steps = noise["noise"].to(actions.dtype), noise["timesteps"]
            noisy = self.scheduler.add_noise(actions, eps, steps)
            denoise = F.mse_loss(self.head(noisy, steps, cond, parts["context"]), eps)
        align = F.mse_loss(parts["predicted_plan"], remaining.detach())
        return denoise + self.config.align_weight * align, {"denoise": denoise, "align": align}

    def _regress(self, cond: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The regression objective's answer: the head given a zero chunk at step 0 (no noise)."""
        c = self.config
        zeros = torch.zeros(len(cond), c.pred_horizon, c.action_dim, device=cond.device, dtype=cond.dtype)
        return self.head(zeros, torch.zeros(len(cond), dtype=torch.long, device=cond.device), cond, context)

    def compute_loss(
        self, batch: dict[str, torch.Tensor], noise: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """``forward`` as one dict: loss, denoise, align."""
        loss, parts = self(batch, noise)
        return {"loss": loss, **parts}

    # ----- files ---------------------------------------------------------------------------------
    KIND = "flow_policy"

    def save_pretrained(self, folder: str | Path) -> Path:
        """``folder/config.json`` + ``folder/model.safetensors`` (weights and the fitted normaliser)."""
        return checkpoint.save_pretrained(folder, self, self.config, self.KIND)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str | torch.device = "cpu") -> FlowPolicy:
        """A policy from a model folder (or a Hugging Face Hub id), in eval mode on ``device``."""
        return checkpoint.from_pretrained(source, cls.KIND, FlowPolicyConfig, cls, device)

    # ----- acting --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_action(
        self,
        batch: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """(B, T, action_dim) unnormalised absolute actions, conditioned on the predicted remaining plan
        (with classifier-free guidance on it when ``guidance_scale``, default the config's, is not 1)."""
        c = self.config
        scale = c.guidance_scale if guidance_scale is None else guidance_scale
        guided = scale != 1.0
        if guided and self.null_plan is None:
            raise ValueError(
                f"guidance_scale={scale} needs a policy trained with condition_dropout > 0; use 1"
            )
        parts = self.encode(batch)
        cond = torch.cat([parts["state"], parts["predicted_plan"], parts["proprio"]], dim=-1)
        context = parts["context"]
        anchor = self.object_anchor(batch["points_3d"])
        if c.objective == "regression":  # one deterministic pass, kept to the normalised range
            return self.unnormalize_actions(self._regress(cond, context).clamp(-1.0, 1.0), anchor)
        b = len(cond)
        if guided:  # one pass over [with flow; null flow]
            null = torch.cat([parts["state"], self.null_plan.expand(b, -1), parts["proprio"]], dim=-1)
            cond = torch.cat([cond, null])
            context = None if context is None else torch.cat([context, context])
        actions = torch.randn(b, c.pred_horizon, c.action_dim, generator=generator, device=cond.device)
        self.scheduler.set_timesteps(c.inference_steps)
        for step in self.scheduler.timesteps:
            x = torch.cat([actions, actions]) if guided else actions
            noise = self.head(x, step.expand(len(cond)).to(cond.device), cond, context)
            if guided:
                flow, unconditioned = noise.chunk(2)
                noise = unconditioned + scale * (flow - unconditioned)
            actions = self.scheduler.step(noise, step, actions, generator=generator).prev_sample
        return self.unnormalize_actions(actions, anchor)
