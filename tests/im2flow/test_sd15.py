"""The sd15 preset (SD1.5 UNet + AnimateDiff motion modules + LoRA + CLIP) through the user's code path,
with tiny random weights saved to local folders in the diffusers / transformers layouts."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import save_clip_vision, save_sd15

from im2flow2act.im2flow.flow_image import FlowImageConfig
from im2flow2act.im2flow.generator import FlowGenerator, GeneratorConfig, load_generator
from im2flow2act.im2flow.train import EXPORT, FlowTrainConfig, FlowTrainer
from im2flow2act.preprocessing.pretrained import ModelNotAvailable
from im2flow2act.preprocessing.tracks import grid_in_box

G, T = 8, 4


@pytest.fixture(scope="module")
def sd_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15")
    return save_sd15(root / "sd"), save_clip_vision(root / "clip-vision")


def sd15_config(sd_folders, **sd15) -> GeneratorConfig:
    sd, vision = sd_folders
    options = dict(
        pretrained=str(sd), clip_vision=str(vision), lora_rank=4, point_embed_dim=16, motion_heads=2
    )
    return GeneratorConfig(
        preset="sd15",
        flow=FlowImageConfig(grid_size=G, num_frames=T, encoding="displacement"),
        sd15=options | sd15,
        text_encoder=str(sd),
        prediction_type="sample",
        inference_steps=3,
    )


def test_sd15_trains_lora_and_motion_modules_only(sd_folders):
    generator = FlowGenerator(sd15_config(sd_folders))
    names = [n for n, p in generator.denoiser.named_parameters() if p.requires_grad]
    assert any("motion_modules" in n for n in names) and any("lora_A" in n for n in names)
    assert not any(n.startswith(("vae.", "vision.")) for n in names)
    spatial = [n for n in names if "motion_modules" not in n and "lora" not in n]
    assert sorted(spatial) == [
        "image_projection.bias",
        "image_projection.weight",
        "point_projection.bias",
        "point_projection.weight",
    ]
    assert not any("motion_modules" in n and "lora" in n for n in names)  # no LoRA inside motion modules


def test_sd15_loss_goes_down_and_save_load_gives_identical_samples(sd_folders, demos_root, tmp_path):
    cfg = FlowTrainConfig(
        data=[str(demos_root)],
        generator=sd15_config(sd_folders, decoder_finetune_steps=3),
        batch_size=8,
        lr=3e-3,
        warmup_steps=1,
        max_steps=30,
        sample_every=0,
        log_every=1,
        held_out_per_task=1,
    )
    trainer = FlowTrainer(cfg, tmp_path / "run", progress=False)
    trainer.finetune_decoder()
    losses = [trainer.train_step()["loss"] for _ in range(30)]
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    path = trainer.ema_generator().save_pretrained(tmp_path / EXPORT)
    a, b = load_generator(path), load_generator(path)
    image = trainer.train.images[0]
    queries = grid_in_box((0.2, 0.2, 0.6, 0.6), G)
    first = a.sample(image, "open the drawer", queries, num_samples=2, seed=3)
    np.testing.assert_array_equal(first, b.sample(image, "open the drawer", queries, num_samples=2, seed=3))
    assert first.shape == (2, T, G * G, 3) and np.isfinite(first).all()


def test_sd15_missing_weights_say_where_to_put_them(sd_folders, tmp_path):
    cfg = sd15_config(sd_folders, pretrained=str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotAvailable, match="nowhere.*does not exist"):
        FlowGenerator(cfg)
