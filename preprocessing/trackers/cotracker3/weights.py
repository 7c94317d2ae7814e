"""Loading the official CoTracker3 checkpoints into our modules, strictly.

``checkpoint`` may be a ``.pth`` file, a folder holding the official file (what
``hf download facebook/cotracker3 --local-dir models/cotracker3`` makes), or the Hub repo id
``facebook/cotracker3`` (downloaded through ``huggingface_hub`` when the machine is online). The file may
hold the bare state dict (as published) or ``{"model": state_dict}``. Whatever goes wrong, the error names
the file, where to get it and the config key to set. Nothing is downloaded at import time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from im2flow2act.preprocessing.pretrained import TrackerWeightsNotAvailable, looks_local

Variant = Literal["offline", "online"]

HUB_REPO = "facebook/cotracker3"
CHECKPOINTS: dict[str, str] = {"offline": "scaled_offline.pth", "online": "scaled_online.pth"}
TRACKER_NAMES: dict[str, str] = {"offline": "cotracker3", "online": "cotracker3-online"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_url(variant: Variant) -> str:
    return f"https://huggingface.co/{HUB_REPO}/resolve/main/{CHECKPOINTS[variant]}"


def how_to_get(variant: Variant) -> str:
    """The fix, in one sentence: which file, where it lives, which key points at it."""
    name = CHECKPOINTS[variant]
    return (
        f"download {name} from https://huggingface.co/{HUB_REPO} ({hub_url(variant)}) and set "
        f"checkpoint=/path/to/{name} in the {TRACKER_NAMES[variant]!r} tracker config "
        f"(tracker_args.checkpoint=/path/to/{name} for ingest), or checkpoint={HUB_REPO} on a machine "
        "with internet"
    )


def is_hub_id(checkpoint: str) -> bool:
    """``owner/name`` that is not a path on this machine and not a file name."""
    return (
        bool(_HUB_ID.match(checkpoint))
        and not looks_local(checkpoint)
        and not checkpoint.endswith((".pth", ".pt"))
    )


def resolve_checkpoint(checkpoint: str, variant: Variant) -> Path:
    """The local file for ``checkpoint`` (downloading it from the Hub when given a repo id)."""
    name = CHECKPOINTS[variant]
    if is_hub_id(checkpoint):
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as err:
            raise TrackerWeightsNotAvailable(
                f"CoTracker3 {variant} weights: loading {name} from the Hub repo {checkpoint!r} needs the "
                f"huggingface_hub package; {how_to_get(variant)}"
            ) from err
        try:
            return Path(hf_hub_download(checkpoint, name))
        except Exception as err:  # offline, unknown repo, missing file: all mean "not available here"
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TrackerWeightsNotAvailable(
                f"CoTracker3 {variant} weights: cannot get {name} from the Hub repo {checkpoint!r} "
                f"(offline machine?): {first}; {how_to_get(variant)}"
            ) from err
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise TrackerWeightsNotAvailable(
            f"CoTracker3 {variant} weights: {path} does not exist; {how_to_get(variant)}"
        )
    return path


def read_state_dict(path: Path, variant: Variant) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (bare or under ``"model"``), on the CPU.

    Not cached: trackers are built once per process (per ingest worker, per evaluation)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise TrackerWeightsNotAvailable(
            f"CoTracker3 {variant} weights: cannot read {path} ({str(err).splitlines()[0]}); "
            f"{how_to_get(variant)}"
        ) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise TrackerWeightsNotAvailable(
            f"CoTracker3 {variant} weights: {path} holds no state dict of tensors; {how_to_get(variant)}"
        )
    return loaded


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, variant: Variant) -> None:
    """Raise a ValueError saying how ``state`` differs from ``model`` (names and shapes), if it does."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if wrong:
        problems.append("shape mismatch " + ", ".join(f"{k}: {got[k]} vs {expected[k]}" for k in wrong[:3]))
    hint = ""
    if wrong == ["time_emb"]:
        other = "online" if variant == "offline" else "offline"
        hint = f" — this looks like {CHECKPOINTS[other]}, the {other} model's file"
    raise ValueError(
        f"{source} is not a CoTracker3 {variant} checkpoint ({CHECKPOINTS[variant]}): "
        f"{'; '.join(problems)}{hint}"
    )


def load_weights(model: nn.Module, checkpoint: str, variant: Variant) -> nn.Module:
    """Load ``checkpoint`` (file, folder or Hub id) into ``model`` with ``strict=True``."""
    path = resolve_checkpoint(checkpoint, variant)
    state = read_state_dict(path, variant)
    check_state_dict(model, state, str(path), variant)
    model.load_state_dict(state, strict=True)
    return model
