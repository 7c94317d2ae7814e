"""Multi-process training is right: 2 CPU processes (gloo, ``torch.distributed.run``) with batch B train the
same weights on both processes, and the same weights as one process with batch 2B, for both trainers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent / "distributed_train.py"
ATOL = 1e-5
"""Weights after 3 AdamW steps: the sums over the 2B samples are only grouped differently (float32)."""
ZERO_GRAD = 1e-7
"""A gradient this small is rounding noise around a true zero (in the tiny generator, a conv bias that a
one-channel-per-group GroupNorm cancels); AdamW scales noise up to ±lr per step, so such a weight is only
held to ``STEPS * 2 * lr``."""
STEPS, FLOW_LR = 3, 2e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str]) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def test_two_processes_train_what_one_process_with_the_global_batch_trains(play_root, demos_root, tmp_path):
    data = ["--play", str(play_root), "--demos", str(demos_root), "--steps", str(STEPS)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    _run([*launcher, str(SCRIPT), *data, "--out", str(tmp_path / "ddp"), "--batch", "4"])
    _run([sys.executable, str(SCRIPT), *data, "--out", str(tmp_path / "one"), "--batch", "8"])
    for model in ("policy", "flow"):
        ranks = [torch.load(tmp_path / "ddp" / f"{model}_rank{r}.pt", weights_only=True) for r in (0, 1)]
        single = torch.load(tmp_path / "one" / f"{model}_rank0.pt", weights_only=True)
        assert ranks[0]["weights"].keys() == single["weights"].keys()
        noise = [n for n, g in single["grads"].items() if g.abs().max() < ZERO_GRAD]
        assert all(n.endswith("bias") for n in noise), noise
        for name, value in single["weights"].items():
            a, b = ranks[0]["weights"][name], ranks[1]["weights"][name]
            assert torch.equal(a, b), f"{model} {name} differs between the ranks"
            atol = STEPS * 2 * FLOW_LR if name in noise else ATOL
            torch.testing.assert_close(
                a, value, atol=atol, rtol=0, msg=lambda m, n=f"{model} {name}": f"{n}: {m}"
            )
        for name, grad in single["grads"].items():  # the last step's gradient: averaged over the ranks
            torch.testing.assert_close(ranks[0]["grads"][name], grad, atol=ATOL, rtol=1e-3)
        # the main process alone wrote the run folder: one export, one metrics row per step
        run = tmp_path / "ddp" / f"{model}_run"
        assert (run / ("policy" if model == "policy" else "generator") / "model.safetensors").is_file()
        assert len((run / "metrics.csv").read_text().splitlines()) == 1 + STEPS


def test_dataloader_workers_change_no_batch(play_root, tmp_path):
    """The batches come from a DataLoader over ``StepBatches``: worker processes cut the same windows."""
    from tiny_configs import tiny_policy_config

    from im2flow2act.policies.data import WindowConfig
    from im2flow2act.policies.train import TrainConfig, Trainer

    losses = []
    for workers in (0, 2):
        config = TrainConfig(
            data=[str(play_root)],
            policy=tiny_policy_config(),
            windows=WindowConfig(num_points=16, plan_frames=8),
            batch_size=4,
            max_steps=3,
            warmup_steps=1,
            workers=workers,
        )
        trainer = Trainer(config, tmp_path / f"workers{workers}")
        losses.append([trainer.train_step()["loss"] for _ in range(3)])
    assert losses[0] == losses[1]
