"""A tiny flow generator config shared by the im2flow and CLI tests (real code path, seconds to train)."""

from im2flow.flow_image import FlowImageConfig
from im2flow.generator import GeneratorConfig
from im2flow.models.small import SmallConfig

G, T = 4, 6


def tiny_generator_config(**kwargs) -> GeneratorConfig:
    small = SmallConfig(
        image_size=32,
        image_channels=[8, 16],
        point_feature_dim=4,
        cross_dim=16,
        unet_channels=[16, 32],
        attention_head_dim=8,
    )
    flow = FlowImageConfig(grid_size=G, num_frames=T, encoding="displacement")
    return GeneratorConfig(flow=flow, small=small, inference_steps=4, **kwargs)
