"""A miniature pipeline through every stage: sim demos → videos → ingest → im2flow → play → policy →
evaluation (demo flow, generated flow; oracle and rigid-lk tracking; expert) → report; then a rerun
that resumes (skips everything)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from tiny_configs import tiny_generator_config, tiny_policy_config

from im2flow2act.im2flow.train import FlowTrainConfig
from im2flow2act.policies.data import WindowConfig
from im2flow2act.policies.evaluate import EvalConfig
from im2flow2act.policies.pipeline import STAGES, Pipeline, PipelineConfig
from im2flow2act.policies.train import TrainConfig
from im2flow2act.preprocessing.ingest import IngestConfig


def miniature() -> PipelineConfig:
    policy = tiny_policy_config()
    return PipelineConfig(
        name="mini",
        tasks=["pick_place", "open_drawer"],
        image_size=[64, 64],
        workers=1,
        demos=2,
        play=1,
        eval_episodes=1,
        expert_episodes=1,
        trackers=["oracle", "rigid-lk"],  # the upper bound and the real tracker that holds the object
        ingest=IngestConfig(overlay=False),
        flow=FlowTrainConfig(
            generator=tiny_generator_config(), max_steps=2, batch_size=2, sample_every=0, log_every=1
        ),
        policy=TrainConfig(
            policy=policy,
            windows=WindowConfig(num_points=16, plan_frames=8),
            max_steps=2,
            batch_size=4,
            log_every=1,
        ),
        evaluation=EvalConfig(max_chunks=1, action_horizon=4, num_points=16, num_flows=2),
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    pipeline = Pipeline(miniature(), root / "run", progress=False)
    return pipeline, pipeline.run()


def test_miniature_pipeline_runs_every_stage_and_resumes(finished):
    pipeline, records = finished
    assert list(records) == list(STAGES)
    for stage in STAGES:
        assert (pipeline.folder(stage) / "stage.json").is_file()
    assert records["ingest"]["written"] == 4 and records["ingest"]["failed"] == []
    assert len(list((pipeline.folder("videos")).glob("*.mp4"))) == 4
    rates = records["evaluate"]["success_rate"]
    assert set(rates) == {f"{p}/{t}" for p in ("tracked", "generated") for t in ("oracle", "rigid-lk")} | {
        "expert"
    }
    assert all(set(rates[k]) == {"pick_place", "open_drawer"} for k in rates)
    assert rates["expert"] == {"pick_place": 1.0, "open_drawer": 1.0}
    html = (pipeline.folder("report") / "report.html").read_text()
    assert html.count("<table>") >= 3 and "<video" in html and "data:image/png;base64," in html
    assert "scripted expert" in (pipeline.folder("report") / "report.md").read_text()
    again = Pipeline(miniature(), pipeline.out, progress=False).run()
    assert json.dumps(again) == json.dumps(records)  # nothing re-ran


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(
    _chromium() is None, reason="no chromium (scripts/setup.sh installs it on Debian as root)"
)
def test_report_renders_in_headless_chromium(finished, tmp_path):
    pipeline, _ = finished
    page = (pipeline.folder("report") / "report.html").resolve().as_uri()
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*args, "--window-size=1200,1600", f"--screenshot={shot}", page],
        timeout=120,
        check=True,
        capture_output=True,
    )
    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (1600, 1200) and image.std() > 20  # a rendered page, not a blank one
    dom = subprocess.run([*args, "--dump-dom", page], timeout=120, check=True, capture_output=True, text=True)
    rendered = dom.stdout
    assert rendered.count("<table>") >= 3 and "<img" in rendered and "<video" in rendered
    assert "Task success" in rendered and "scripted expert" in rendered


def test_evaluation_episodes_run_side_by_side_and_resume_from_their_episode_logs(finished, tmp_path):
    pipeline, records = finished
    run = shutil.copytree(pipeline.out, tmp_path / "run")
    for stage in ("evaluate", "report"):
        (run / pipeline.folder(stage).name / "stage.json").unlink()
    log = run / pipeline.folder("evaluate").name / "generated" / "episodes_generated_rigid-lk.jsonl"
    kept = log.read_text().splitlines()[:1]
    log.write_text(kept[0] + "\n")  # as if stopped after one episode of the headline column
    config = miniature()
    config.workers = 2  # two episodes at a time, each in its own process
    again = Pipeline(config, run, progress=False).run(until="evaluate")
    assert again["evaluate"]["success_rate"] == records["evaluate"]["success_rate"]
    assert log.read_text().splitlines()[0] == kept[0] and len(log.read_text().splitlines()) == 2


def test_pretrained_models_are_evaluated_without_training_anything(finished, tmp_path):
    """The demo's route: a trained generator and policy act on new layouts; play and training are skipped."""
    from dataclasses import replace

    from im2flow2act.policies.pipeline import PretrainedConfig

    trained, _ = finished
    models = PretrainedConfig(
        generator=str(trained.folder("im2flow") / "generator"),
        policy=str(trained.folder("policy") / "policy"),
    )
    config = replace(
        miniature(),
        demo_seed=7,
        eval_episodes=2,  # every demonstration held out
        plans=["generated"],
        trackers=["rigid-lk"],
        expert_episodes=0,
        pretrained=models,
    )
    pipeline = Pipeline(config, tmp_path / "demo", progress=False)
    records = pipeline.run()
    assert records["play"]["pretrained"] == records["policy"]["pretrained"] == models.policy
    assert records["im2flow"]["pretrained"] == models.generator
    assert not (pipeline.folder("play") / "dataset.zarr").exists()
    assert not (pipeline.folder("im2flow") / "checkpoint.pt").exists()
    assert set(records["im2flow"]["metrics"]) == {"im2flow", "zero motion"}  # nothing to retrieve from
    assert set(records["evaluate"]["success_rate"]) == {"generated/rigid-lk"}
    log = pipeline.folder("evaluate") / "generated" / "episodes_generated_rigid-lk.jsonl"
    names = [json.loads(line)["demo"] for line in log.read_text().splitlines()]
    assert sorted(names) == [f"{t}_00000{s}" for t in ("open_drawer", "pick_place") for s in (7, 8)]
    report = (pipeline.folder("report") / "report.md").read_text()
    assert "Pretrained models (not trained in this run)" in report and "scripted expert" not in report


def test_a_pretrained_folder_without_weights_is_refused_before_any_stage(tmp_path):
    from im2flow2act.core.config import ConfigError
    from im2flow2act.policies.pipeline import PretrainedConfig

    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "config.json").write_text("{}")
    config = PipelineConfig(pretrained=PretrainedConfig(policy=str(tmp_path / "policy")))
    with pytest.raises(
        ConfigError, match=r"pretrained.policy: .*policy is not a model folder \(no model.safetensors\)"
    ):
        Pipeline(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing written
    with pytest.raises(ConfigError, match="plan source"):
        PipelineConfig(plans=["dreamed"])


def test_release_script_copies_the_run_models_with_cards_that_state_their_files(finished, tmp_path):
    import hashlib
    import sys
    from pathlib import Path

    import yaml

    pipeline, _ = finished
    script = Path(__file__).resolve().parents[1] / "scripts" / "release_models.py"
    args = [sys.executable, str(script), "--run", str(pipeline.out), "--out", str(tmp_path / "models")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("policy-full", "generator-full"):
        folder = tmp_path / "models" / name
        card = (folder / "README.md").read_text()
        facts = yaml.safe_load(card.split("---\n")[1])
        weights = (folder / "model.safetensors").read_bytes()
        assert facts["sha256"] == hashlib.sha256(weights).hexdigest() and facts["bytes"] == len(weights)
        assert "| pick_place |" in card and "90 %" in card  # the measured table beside the reference
