"""The released models under models/: each card agrees with its config and, where the weights are here
(they are not kept in git: ``scripts/release_models.py --run <run>`` puts them there), with its weights
(size, SHA-256, tensor elements, dtypes), and the model loads and runs one forward pass on a real input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

MODELS = Path(__file__).resolve().parents[1] / "models"
RELEASED = sorted(p for p in MODELS.glob("*") if (p / "config.json").is_file()) if MODELS.is_dir() else []


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n"), f"{card} has no front matter"
    return yaml.safe_load(text.split("---\n")[1])


def with_weights(folder: Path) -> Path:
    weights = folder / "model.safetensors"
    if not weights.is_file():
        pytest.skip(f"{folder.name}'s weights are not in this checkout (not kept in git)")
    return weights


def test_the_repository_releases_one_policy_and_one_generator_under_100_mb():
    if not MODELS.is_dir():
        pytest.skip("no models/ folder in this checkout")
    kinds = sorted(json.loads((p / "config.json").read_text())["kind"] for p in RELEASED)
    assert kinds == ["flow_generator", "flow_policy"]
    stated = sum(front_matter(p / "README.md")["bytes"] for p in RELEASED)
    assert stated < 100 * 2**20


@pytest.mark.parametrize("folder", RELEASED, ids=[p.name for p in RELEASED])
def test_a_model_card_agrees_with_its_config(folder):
    facts = front_matter(folder / "README.md")
    config = json.loads((folder / "config.json").read_text())
    assert facts["kind"] == config["kind"] and facts["name"] == folder.name
    assert facts["im2flow2act_version"] == config["im2flow2act_version"]
    card = (folder / "README.md").read_text()
    for section in ("## How it was made", "## Measured", "## Limits", "## Licence"):
        assert section in card
    assert len(facts["sha256"]) == 64 and facts["bytes"] > 0


@pytest.mark.parametrize("folder", RELEASED, ids=[p.name for p in RELEASED])
def test_a_model_card_agrees_with_its_weights(folder):
    facts = front_matter(folder / "README.md")
    weights = with_weights(folder)
    assert facts["bytes"] == weights.stat().st_size
    assert facts["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    with safe_open(str(weights), "pt") as f:
        slices = [f.get_slice(name) for name in f.keys()]  # noqa: SIM118 (not a dict)
    assert facts["tensor_elements"] == sum(int(np.prod(s.get_shape())) for s in slices)
    assert facts["dtypes"] == sorted({s.get_dtype() for s in slices})


@pytest.mark.parametrize("folder", RELEASED, ids=[p.name for p in RELEASED])
def test_a_released_model_loads_and_runs_one_forward_pass(folder, play_root):
    with_weights(folder)
    kind = json.loads((folder / "config.json").read_text())["kind"]
    if kind == "flow_policy":
        from im2flow2act.policies.data import PlayWindows, WindowConfig
        from im2flow2act.policies.train import load_policy

        policy = load_policy(folder)
        c = policy.config
        assert c.unet_dims == [128, 256, 512] and c.point_attention
        windows = PlayWindows(play_root, WindowConfig(num_points=64, plan_frames=c.plan_frames))
        batch = {k: v[None] for k, v in windows[0].items()}
        actions = policy.predict_action(batch, generator=torch.Generator().manual_seed(0))
        assert actions.shape == (1, c.pred_horizon, c.action_dim) and torch.isfinite(actions).all()
        # a commanded position on the table, not anywhere: the weights are trained, not random
        assert (actions[0, :, 2] > -0.05).all() and (actions[0, :, 2] < 0.6).all()
    else:
        from im2flow2act.im2flow.generator import load_generator
        from im2flow2act.policies.sim.generate import render_initial_scene
        from im2flow2act.preprocessing.tracks import grid_in_box

        generator = load_generator(folder)
        g = generator.config.flow.grid_size
        image = render_initial_scene("open_drawer", 3, size=(256, 256))
        queries = grid_in_box([0.3, 0.3, 0.7, 0.7], g)
        flows = generator.sample(image, "open the drawer", queries, num_samples=1, steps=2)
        assert flows.shape == (1, generator.config.flow.num_frames, g * g, 3) and np.isfinite(flows).all()
