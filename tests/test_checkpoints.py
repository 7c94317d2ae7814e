"""Models are folders (config.json + model.safetensors), training state loads with weights_only=True, and
everything that is not what it should be is refused with a message naming the file — without running it."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_configs import tiny_generator_config, tiny_policy_config

import im2flow2act
from im2flow2act.core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointNotFound,
    load_training_state,
    save_training_state,
    write_atomic,
)
from im2flow2act.core.run_log import RunFolderError, RunLock
from im2flow2act.im2flow.generator import FlowGenerator, load_generator
from im2flow2act.policies.data import PlayWindows, WindowConfig
from im2flow2act.policies.flow_policy import FlowPolicy
from im2flow2act.policies.train import TrainConfig, Trainer, load_policy


class _Marker:
    """A pickle that creates a file when it is unpickled: loading it must never get that far."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"step": 3, "model": _Marker(marker)}, path)
    return path


@pytest.fixture(scope="module")
def windows(play_root):
    return PlayWindows(play_root, WindowConfig(num_points=16, plan_frames=8))


@pytest.fixture
def policy_folder(tmp_path) -> Path:
    torch.manual_seed(0)
    return FlowPolicy(tiny_policy_config()).save_pretrained(tmp_path / "policy")


@pytest.fixture
def generator_folder(tmp_path) -> Path:
    torch.manual_seed(0)
    return FlowGenerator(tiny_generator_config()).save_pretrained(tmp_path / "generator")


def _train_config(windows, **kwargs) -> TrainConfig:
    defaults = dict(
        policy=tiny_policy_config(),
        batch_size=4,
        max_steps=4,
        warmup_steps=1,
        checkpoint_every=2,
        log_every=1,
    )
    return TrainConfig(windows=windows.config, **(defaults | kwargs))


# ----- the folder format ------------------------------------------------------------------------------------
def test_model_folder_records_every_config_value_kind_and_versions(policy_folder, generator_folder):
    meta = json.loads((policy_folder / "config.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["kind"] == "flow_policy"
    assert meta["im2flow2act_version"] == im2flow2act.__version__
    assert set(meta["config"]) == set(tiny_policy_config().__dataclass_fields__)
    assert json.loads((generator_folder / "config.json").read_text())["config"]["small"]["token_coordinates"]
    assert sorted(p.name for p in policy_folder.parent.iterdir()) == ["generator", "policy"]  # no temp left
    again = FlowPolicy(tiny_policy_config()).save_pretrained(policy_folder)  # an export replaces the last one
    assert sorted(p.name for p in again.parent.iterdir()) == ["generator", "policy"]


def test_a_hub_id_is_downloaded_and_loaded(policy_folder, monkeypatch):
    import huggingface_hub

    asked = []
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo, **kw: asked.append(repo) or policy_folder
    )
    policy = FlowPolicy.from_pretrained("someone/tiny-flow-policy")
    assert asked == ["someone/tiny-flow-policy"] and policy.config == tiny_policy_config()


def test_an_unreachable_hub_id_says_what_to_download_and_where(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        CheckpointNotFound, match=r"someone/no-such-policy.*hf download someone/no-such-policy"
    ):
        load_policy("someone/no-such-policy")


# ----- refusals, each with its message ----------------------------------------------------------------------
def test_a_generator_is_not_a_policy_and_a_policy_not_a_generator(policy_folder, generator_folder):
    with pytest.raises(
        CheckpointError, match=rf"{generator_folder} holds a flow generator.*not a flow policy"
    ):
        load_policy(generator_folder)
    with pytest.raises(CheckpointError, match=rf"{policy_folder} holds a flow policy.*not a flow generator"):
        load_generator(policy_folder)


def test_a_training_checkpoint_or_run_folder_is_not_a_model(tmp_path):
    run = tmp_path / "run"
    save_training_state({"step": 1}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint.pt is a training checkpoint.*not a flow policy"):
        load_policy(run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=rf"{run} is a training run folder"):
        load_generator(run)
    FlowPolicy(tiny_policy_config()).save_pretrained(run / "policy")
    with pytest.raises(CheckpointError, match=rf"its model folder is {run / 'policy'}"):
        load_policy(run)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(
        CheckpointNotFound, match=rf"flow policy model folder {tmp_path / 'nowhere'} does not"
    ):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="outputs/no_such_run/generator does not exist"):
        load_generator("outputs/no_such_run/generator")  # a local path, not a Hub id: nothing is downloaded


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_damaged_weights_file_is_refused(policy_folder, damage):
    weights = policy_folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        {"empty": b"", "truncated": data[: len(data) // 2], "garbage": os.urandom(4096)}[damage]
    )
    with pytest.raises(CheckpointError, match=rf"{weights} is empty, truncated or not a safetensors file"):
        load_policy(policy_folder)


def test_weights_of_another_config_are_refused(policy_folder):
    meta = json.loads((policy_folder / "config.json").read_text())
    meta["config"]["dim"] = 64
    (policy_folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="the weights do not fit the model its config.json describes"):
        load_policy(policy_folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m: m.update(format_version=99),
            r"has format_version 99; this im2flow2act .* reads format_version 1",
        ),
        (
            lambda m: m["config"].update(dimm=3),
            r"unknown config key 'dimm' for FlowPolicyConfig \(did you mean 'dim'",
        ),
        (lambda m: m["config"].update(dim="big"), r"FlowPolicyConfig.dim: expected an integer, got 'big'"),
        (lambda m: m.update(extra=1), r"unknown top-level key\(s\) 'extra'"),
        (lambda m: m.pop("kind"), r"holds of no known kind \(config.json kind None\), not a flow policy"),
    ],
)
def test_a_config_json_of_another_format_or_with_bad_keys_is_refused(policy_folder, edit, message):
    path = policy_folder / "config.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message) as err:
        load_policy(policy_folder)
    assert str(policy_folder) in str(err.value)


def test_garbage_files_are_refused(tmp_path):
    (tmp_path / "policy.bin").write_bytes(os.urandom(100))
    with pytest.raises(CheckpointError, match=r"policy.bin is a file, not a flow policy model folder"):
        load_policy(tmp_path / "policy.bin")
    (tmp_path / "checkpoint.pt").write_bytes(os.urandom(100))
    with pytest.raises(
        CheckpointError, match=r"checkpoint.pt is not a training checkpoint .* weights_only=True"
    ):
        load_training_state(tmp_path / "checkpoint.pt")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"broken/config.json is not valid JSON"):
        load_generator(tmp_path / "broken")


def test_a_crafted_pickle_is_refused_without_running_it(windows, tmp_path):
    marker = tmp_path / "pwned"
    evil = _crafted(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match=rf"{evil} is a file, not a flow policy model folder"):
        load_policy(evil)  # policy=
    with pytest.raises(CheckpointError, match=rf"{evil} is a file, not a flow generator model folder"):
        load_generator(evil)  # generator=
    with pytest.raises(CheckpointError, match=rf"{evil} is not a training checkpoint .* weights_only=True"):
        load_training_state(evil)
    run = tmp_path / "run"
    run.mkdir()
    _crafted(run / "checkpoint.pt", marker)  # a run folder whose checkpoint was replaced
    with pytest.raises(CheckpointError, match=rf"{run / 'checkpoint.pt'} is not a training checkpoint"):
        Trainer(_train_config(windows), run, windows).fit(progress=False)
    (tmp_path / "folder").mkdir()
    _crafted(tmp_path / "folder" / "model.safetensors", marker)
    FlowPolicy(tiny_policy_config()).save_pretrained(tmp_path / "ok")
    (tmp_path / "folder" / "config.json").write_bytes((tmp_path / "ok" / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_policy(tmp_path / "folder")
    assert not marker.exists()


def test_training_state_loads_with_weights_only_and_writes_atomically(tmp_path):
    path = save_training_state({"step": 7, "model": {"w": torch.ones(2)}}, tmp_path / "checkpoint.pt")
    assert load_training_state(path)["step"] == 7
    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(
            path, lambda tmp: (tmp.write_bytes(b"half"), (_ for _ in ()).throw(RuntimeError("disk full")))
        )
    assert load_training_state(path)["step"] == 7 and [p.name for p in tmp_path.iterdir()] == [
        "checkpoint.pt"
    ]


def test_written_files_and_folders_follow_the_umask_like_any_other(policy_folder, tmp_path):
    old = os.umask(0o022)
    try:
        path = save_training_state({"step": 1}, tmp_path / "state" / "checkpoint.pt")
        folder = FlowPolicy(tiny_policy_config()).save_pretrained(tmp_path / "shared_policy")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    assert folder.stat().st_mode & 0o777 == 0o755
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in folder.iterdir())


# ----- resume safety ----------------------------------------------------------------------------------------
def test_resuming_with_another_config_names_the_keys_and_keeps_the_record(windows, tmp_path):
    run = tmp_path / "run"
    Trainer(_train_config(windows), run, windows)
    recorded = (run / "train_config.yaml").read_bytes()
    Trainer(_train_config(windows, log_every=5, checkpoint_every=3), run, windows)  # bookkeeping may change
    changed = _train_config(windows, lr=1e-3, policy=replace(tiny_policy_config(), dim=64))
    with pytest.raises(
        RunFolderError, match=r"differing keys: lr: 0.0003 → 0.001; policy.dim: 32 → 64"
    ) as err:
        Trainer(changed, run, windows)
    assert "log_every" in str(err.value)  # what may differ is listed
    assert (run / "train_config.yaml").read_bytes() != recorded  # (the allowed change was recorded)
    after = (run / "train_config.yaml").read_bytes()
    with pytest.raises(RunFolderError):
        Trainer(changed, run, windows)
    assert (run / "train_config.yaml").read_bytes() == after


def test_a_second_run_into_the_same_folder_is_refused(windows, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(_train_config(windows), run, windows)
    with RunLock(run), pytest.raises(RunFolderError, match=rf"another training run is using {run}"):
        trainer.fit(progress=False)
    with RunLock(run), pytest.raises(RunFolderError, match=rf"another training run is using {run}"):
        Trainer(_train_config(windows), run, windows)
    assert not (run / "checkpoint.pt").exists()


def test_a_resumed_run_logs_every_step_once(windows, tmp_path):
    run = tmp_path / "run"
    killed = Trainer(_train_config(windows), run, windows)
    killed.train_step()
    killed.train_step()
    killed.save()  # the checkpoint of step 2; then steps 3 was logged before the run was killed
    (run / "metrics.csv").write_text(
        "step,loss,denoise,align,lr,seconds\n1,1,1,1,1,1\n2,1,1,1,1,1\n3,9,9,9,9,9\n"
    )
    Trainer(_train_config(windows), run, windows).fit(progress=False)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4"]
    assert not rows[3].startswith("3,9")
    assert load_policy(run / "policy").config == tiny_policy_config()


def test_checkpoints_written_before_the_marker_still_resume_and_nothing_unpickles_freely(tmp_path):
    old = {"step": 2, "model": {"w": torch.ones(1)}, "optimizer": {}, "lr_schedule": {}, "ema": {}}
    torch.save(old, tmp_path / "checkpoint.pt")  # plain tensors and numbers: safe under weights_only=True
    assert load_training_state(tmp_path / "checkpoint.pt")["step"] == 2
    repo = Path(__file__).resolve().parents[1]
    unsafe = "weights_only=" + "False"
    offenders = [
        str(p.relative_to(repo))
        for p in repo.rglob("*.py")
        if not {".venv", "build", "outputs"} & set(p.relative_to(repo).parts) and unsafe in p.read_text()
    ]
    assert offenders == []
