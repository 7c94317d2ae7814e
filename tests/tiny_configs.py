"""Tiny generator and policy configs shared by the tests (the real code paths, seconds to train)."""

from im2flow2act.im2flow.flow_image import FlowImageConfig
from im2flow2act.im2flow.generator import GeneratorConfig
from im2flow2act.im2flow.models.small import SmallConfig
from im2flow2act.policies.flow_policy import FlowPolicyConfig

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


def tiny_policy_config() -> FlowPolicyConfig:
    return FlowPolicyConfig(
        dim=32, heads=2, state_depth=1, align_depth=1, remaining_depth=1, unet_dims=[32, 64], plan_frames=8
    )
