"""Model folders and training state, saved so that loading never runs code from the file.

A model is a folder: ``config.json`` (every config value, the model kind, a format version and the
im2flow2act version that wrote it) and ``model.safetensors`` (the weights), as diffusers and LeRobot do.
Nothing is unpickled: safetensors holds only tensors, and training state (``checkpoint.pt``) loads with
``torch.load(weights_only=True)``, which refuses any object it does not know instead of building it.
Every write goes to a unique temporary name beside the target and is then renamed into place, so a killed
run or a second writer never leaves half a file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import im2flow2act
from im2flow2act.core.config import ConfigError, from_dict, to_dict

if TYPE_CHECKING:  # torch is imported where it is used: the CLI's --help should not wait for it
    import torch

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_KIND = "training_checkpoint"
TRAINING_KEYS = {"step", "model", "optimizer", "lr_schedule", "ema"}
KINDS = {"flow_policy": "a flow policy", "flow_generator": "a flow generator"}
"""The model kinds a folder can hold → how errors name them."""
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

C = TypeVar("C")


class CheckpointError(ValueError):
    """A model folder or training checkpoint that cannot be loaded; the message names the file and why."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """The model folder or checkpoint does not exist (locally, nor on the Hub when it looks like an id)."""


# ----- atomic writes ------------------------------------------------------------------------------------
def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a unique temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the file should read like any other
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_folder(path: Path, fill: Callable[[Path], Any]) -> Path:
    """``fill(tmp)`` in a unique temporary folder beside ``path``, then swap it in for ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp and safetensors make private files; these are shared
        for file in tmp.rglob("*"):
            if file.is_file():
                file.chmod(0o666 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ----- model folders ------------------------------------------------------------------------------------
def save_pretrained(folder: str | Path, model: torch.nn.Module, config: Any, kind: str) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors`` (shared tensors are stored once)."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; one of {', '.join(KINDS)}")
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "im2flow2act_version": im2flow2act.__version__,
        "config": to_dict(config),
    }

    from safetensors.torch import save_model

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        save_model(model, str(tmp / WEIGHTS_FILE))

    return replace_folder(Path(folder), fill)


def resolve_folder(source: str | Path, kind: str) -> Path:
    """A local model folder, or the Hub snapshot of ``source`` when it looks like an id and no such
    folder exists here; refuses files (old pickled ``.pt`` models are never opened)."""
    path = Path(source)
    what = KINDS[kind]
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            inside = [p for p in (path / "policy", path / "generator") if (p / CONFIG_FILE).is_file()]
            if inside or (path / "checkpoint.pt").is_file():
                hint = f"; its model folder is {inside[0]}" if inside else ""
                raise CheckpointError(f"{path} is a training run folder, not {what} model folder{hint}")
        return path
    if path.is_file():
        if path.name == "checkpoint.pt":
            raise CheckpointError(
                f"{path} is a training checkpoint (optimiser state for resuming), not {what}; "
                f"give the model folder the run exported instead"
            )
        raise CheckpointError(
            f"{path} is a file, not {what} model folder (config.json + model.safetensors); files such as "
            f"pickled .pt models are not loaded (they could run code): retrain or re-export the model"
        )
    text = str(source)
    if _looks_like_hub_id(text):
        return _download(text, what)
    raise CheckpointNotFound(f"{what} model folder {path} does not exist")


def _looks_like_hub_id(text: str) -> bool:
    """``owner/name`` whose first part is not a local folder (``outputs/policy`` is a path here)."""
    return bool(HUB_ID.match(text)) and not Path(text.split("/")[0]).exists() and not text.endswith(".pt")


def _download(repo_id: str, what: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, "*.md"]))
    except Exception as err:  # offline, no such repository, no access: all say the same to the user
        raise CheckpointNotFound(
            f"{what} model {repo_id!r} is neither a local folder nor downloadable from the Hugging Face Hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); on a machine with "
            f"internet run `hf download {repo_id} --local-dir models/{repo_id.split('/')[-1]}` "
            f"and pass that folder"
        ) from err


def read_model_config(folder: Path, kind: str, config_class: type[C]) -> C:
    """The config a model folder records, checked to be ``kind`` in this format version."""
    what = KINDS[kind]
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not {what} model folder: it has no {CONFIG_FILE}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    found = meta.get("kind")
    if found != kind:
        name = KINDS.get(found, f"of kind {found!r}") if isinstance(found, str) else "of no known kind"
        raise CheckpointError(f"{folder} holds {name} (config.json kind {found!r}), not {what}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {version!r}; this im2flow2act ({im2flow2act.__version__}) reads "
            f"format_version {FORMAT_VERSION} (written by im2flow2act {meta.get('im2flow2act_version')})"
        )
    unknown = sorted(set(meta) - {"format_version", "kind", "im2flow2act_version", "config"})
    if unknown:
        raise CheckpointError(f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}")
    try:
        return from_dict(config_class, meta.get("config", {}), where=str(path))
    except ConfigError as err:
        raise CheckpointError(str(err)) from err


def load_weights(folder: Path, model: torch.nn.Module, kind: str, device: str | torch.device = "cpu") -> None:
    """Fill ``model`` from ``folder/model.safetensors``; every weight must be there and fit."""
    path = folder / WEIGHTS_FILE
    what = KINDS[kind]
    if not path.is_file():
        raise CheckpointError(f"{folder} is not {what} model folder: it has no {WEIGHTS_FILE}")
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, str(path), strict=True, device=str(device))
    except SafetensorError as err:
        raise CheckpointError(f"{path} is empty, truncated or not a safetensors file ({err})") from err
    except (RuntimeError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0][:500]
        raise CheckpointError(
            f"{path}: the weights do not fit the model its config.json describes ({first})"
        ) from err


def from_pretrained(
    source: str | Path,
    kind: str,
    config_class: type[C],
    build: Callable[[C], torch.nn.Module],
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Build ``build(config)`` from a model folder (or Hub id) and load its weights, in eval mode."""
    folder = resolve_folder(source, kind)
    config = read_model_config(folder, kind, config_class)
    model = build(config)
    load_weights(folder, model, kind)
    return model.to(device).eval()


# ----- training state -----------------------------------------------------------------------------------
def save_training_state(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` of plain tensors and numbers (nothing that needs unpickling code), atomically."""
    import torch

    payload = {"kind": TRAINING_KIND, "format_version": FORMAT_VERSION, **state}
    return write_atomic(path, lambda tmp: torch.save(payload, tmp))


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state ``save_training_state`` wrote, read with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a training checkpoint file")
    if not path.is_file():
        raise CheckpointNotFound(f"training checkpoint {path} does not exist")
    import torch

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle refused (an unknown global), truncated zip, garbage bytes
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a training checkpoint this im2flow2act can read safely "
            f"(loaded with weights_only=True: {first}); delete it to start the run afresh"
        ) from err
    if isinstance(state, dict) and "kind" not in state and state.keys() >= TRAINING_KEYS:
        return state  # written before checkpoints were marked (plain tensors and numbers: safe to read)
    if not isinstance(state, dict) or state.get("kind") != TRAINING_KIND:
        raise CheckpointError(f"{path} is not a training checkpoint (no kind {TRAINING_KIND!r} in it)")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {state.get('format_version')!r}; this im2flow2act reads "
            f"{FORMAT_VERSION}: delete it to start the run afresh"
        )
    return state


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a (weights) file, read in blocks: what identifies a model's weights wherever they lie
    (evaluation logs, model cards)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
