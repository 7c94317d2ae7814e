"""Loading pretrained models: from a local folder, or by Hub id when the machine is online.

Every model is loaded once per process and reused (the reference reloaded Grounding DINO per image).
When weights are missing, the error names the Hub id, the command that fetches it, and the config key to
point at the folder — nothing is downloaded at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

_CACHE: dict[tuple[str, str, str], Any] = {}


class ModelNotAvailable(RuntimeError):
    """Pretrained weights are neither in the given folder nor downloadable here."""

    alternative = "--grounder motion, or give the box with --box"
    """What works without these weights (commands print it after the error)."""


class TrackerWeightsNotAvailable(ModelNotAvailable):
    alternative = "tracker=lk"


def looks_local(model: str) -> bool:
    """A path (absolute, relative with a ./ or ../, or an existing folder), not a Hub id."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def load_once(
    kind: str, model: str, device: str, loader: Callable[[str], Any], config_key: str, hub_id: str
) -> Any:
    """``loader(model)`` the first time, the cached result afterwards; clear errors when it cannot load.

    ``hub_id`` is the default Hub id of this kind of model, named in the error when a local folder is missing.
    """
    key = (kind, model, device)
    if key in _CACHE:
        return _CACHE[key]
    hint = (
        "get it on a machine with internet "
        f"(`hf download {{hub_id}} --local-dir models/{kind}`), "
        f"copy the folder here and set {config_key}=models/{kind}"
    )
    if looks_local(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelNotAvailable(
                f"{kind} weights: folder {path} does not exist; " + hint.format(hub_id="<hub id>")
            )
        source = str(path)
    else:
        source = model
    try:
        loaded = loader(source)
    except (OSError, ValueError) as err:
        where = f"the folder {source}" if looks_local(model) else f"the Hub id {source!r} (offline machine?)"
        raise ModelNotAvailable(
            f"cannot load {kind} from {where}: {str(err).splitlines()[0]}; "
            + hint.format(hub_id=hub_id if looks_local(model) else model)
        ) from err
    _CACHE[key] = loaded
    return loaded
