from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml

from im2flow2act.core.config import ConfigError, load_config, save_config, to_dict
from im2flow2act.core.registry import Registry, UnknownComponentError
from im2flow2act.im2flow.evaluate import FlowEvalConfig
from im2flow2act.im2flow.train import FlowTrainConfig
from im2flow2act.policies.evaluate import EvalConfig
from im2flow2act.policies.pipeline import PipelineConfig
from im2flow2act.policies.sim.generate import GenerateConfig
from im2flow2act.policies.train import TrainConfig
from im2flow2act.preprocessing.ingest import IngestConfig
from im2flow2act.preprocessing.trackers import TRACKERS

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILES = {
    "configs/preprocessing/ingest.yaml": IngestConfig,
    "configs/sim/generate.yaml": GenerateConfig,
    "configs/policy/train_small.yaml": TrainConfig,
    "configs/policy/eval.yaml": EvalConfig,
    "configs/im2flow/train_small.yaml": FlowTrainConfig,
    "configs/im2flow/eval.yaml": FlowEvalConfig,
    "configs/pipeline/quick.yaml": PipelineConfig,
}


@dataclass
class Inner:
    rate: float = 0.5
    name: str = "a"


@dataclass
class Outer:
    size: tuple[int, int] = (4, 4)
    steps: int = 3
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)
    options: dict = field(default_factory=dict)


def test_yaml_then_overrides_then_save_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\ninner:\n  name: b\n")
    cfg = load_config(Outer, path, ["inner.rate=1e-3", "size=[8, 2]", "limit=5", "options.k=2"])
    assert cfg == Outer(size=(8, 2), steps=7, limit=5, inner=Inner(rate=0.001, name="b"), options={"k": 2})
    saved = save_config(cfg, tmp_path / "out" / "resolved.yaml")
    assert load_config(Outer, saved) == cfg
    assert yaml.safe_load(saved.read_text())["size"] == [8, 2]


def test_a_partial_nested_section_changes_only_its_keys_of_the_fields_own_default(tmp_path):
    # the generator's default flow is 16×16 sqrt_displacement, not FlowImageConfig's class defaults (32×32
    # absolute): one nested override must leave the rest of it as it was
    cfg = load_config(FlowTrainConfig, None, ["generator.flow.displacement_scale=6"])
    flow = cfg.generator.flow
    assert (flow.grid_size, flow.num_frames, flow.encoding, flow.displacement_scale) == (
        16,
        16,
        "sqrt_displacement",
        6.0,
    )
    # a pipeline section keeps the pipeline's own defaults for what a preset or override leaves out
    pipeline = load_config(PipelineConfig, None, ["flow.batch_size=8", "ingest.overlay=true"])
    assert (pipeline.flow.max_steps, pipeline.flow.batch_size) == (PipelineConfig().flow.max_steps, 8)
    assert (pipeline.ingest.grid_size, pipeline.ingest.tracker, pipeline.ingest.overlay) == (16, "lk", True)
    # a typo inside a nested section is still named
    with pytest.raises(ConfigError, match="displacement_scale"):
        load_config(FlowTrainConfig, None, ["generator.flow.displacment_scale=6"])


def test_typo_in_a_key_fails_with_the_closest_valid_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stpes: 7\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'stpes'.*did you mean 'steps'") as err:
        load_config(Outer, path)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="unknown config key 'rat'"):
        load_config(Outer, None, ["inner.rat=2"])


def test_wrong_types_and_bad_overrides_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(Outer, None, ["steps=many"])
    with pytest.raises(ConfigError, match="expected 2 values"):
        load_config(Outer, None, ["size=[1,2,3]"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


@pytest.mark.parametrize("relpath", sorted(CONFIG_FILES))
def test_every_committed_config_loads_into_its_dataclass(relpath):
    cls = CONFIG_FILES[relpath]
    cfg = load_config(cls, REPO / relpath)
    assert to_dict(cfg) == to_dict(cls()), f"{relpath} should state the defaults of {cls.__name__}"


PRESETS = {
    "configs/pipeline/full.yaml": PipelineConfig,
    "configs/pipeline/demo.yaml": PipelineConfig,  # its models/ paths are checked: run from the repo root
    "configs/policy/train_reference.yaml": TrainConfig,
    "configs/policy/train_medium.yaml": TrainConfig,
}
"""Configs that differ from the defaults on purpose: they must load, not equal the defaults."""


@pytest.mark.parametrize("relpath", sorted(PRESETS))
def test_every_preset_loads(relpath):
    cfg = load_config(PRESETS[relpath], REPO / relpath)
    assert to_dict(cfg) != to_dict(PRESETS[relpath]())


def test_the_reference_policy_config_has_the_reference_preset():
    from im2flow2act.policies.flow_policy import FlowPolicyConfig

    cfg = load_config(TrainConfig, REPO / "configs/policy/train_reference.yaml")
    assert cfg.policy == FlowPolicyConfig.preset("reference")


def test_the_medium_policy_config_is_the_small_one_with_a_larger_unet_and_point_tokens():
    small = load_config(TrainConfig, REPO / "configs/policy/train_small.yaml")
    medium = load_config(TrainConfig, REPO / "configs/policy/train_medium.yaml")
    assert medium.policy.unet_dims == [128, 256, 512] and medium.policy.point_attention
    assert medium.max_steps == 4000
    grown = replace(small.policy, unet_dims=[128, 256, 512], point_attention=True)
    assert medium.policy == grown and medium.windows == small.windows


def test_every_config_file_in_configs_is_covered():
    found = {str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")}
    assert found <= set(CONFIG_FILES) | set(PRESETS), (
        f"add these to CONFIG_FILES so they are tested: {found - set(CONFIG_FILES)}"
    )


def test_registry_builds_by_name_and_checks_options():
    reg: Registry[Inner] = Registry("widget")

    @reg.register("plain", Inner)
    def make(cfg: Inner) -> Inner:
        return cfg

    assert reg.build("plain", {"rate": 2}) == Inner(rate=2.0)
    assert reg.build("plain", Inner(name="z")).name == "z"
    with pytest.raises(UnknownComponentError, match="unknown widget 'plane'.*did you mean 'plain'"):
        reg.build("plane")
    with pytest.raises(ConfigError, match="widget 'plain'.*unknown config key 'speed'"):
        reg.build("plain", {"speed": 1})
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("plain", Inner)(make)
    assert "lk" in TRACKERS.names()


def test_presets_resolve_by_name_or_path(tmp_path):
    from im2flow2act.core.presets import preset_names, resolve_preset

    for relpath in sorted(CONFIG_FILES) + sorted(PRESETS):
        _, stage, file = relpath.split("/")
        shipped = resolve_preset(stage, Path(file).stem)
        assert shipped.read_text() == (REPO / relpath).read_text()
    assert preset_names("pipeline") == ["demo", "full", "quick"]
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\n")
    assert resolve_preset("pipeline", own) == own
    with pytest.raises(ConfigError, match="unknown pipeline preset 'quik'; shipped: demo, full, quick"):
        resolve_preset("pipeline", "quik")
    with pytest.raises(ConfigError, match="config file not found: .*absent.yaml"):
        resolve_preset("policy", tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="no presets for stage 'polcy'"):
        resolve_preset("polcy", "eval")
