"""Train the tiny policy and the tiny flow generator for a few steps and dump every process's weights.

Run by tests/test_distributed.py, once under ``torch.distributed.run`` (2 CPU processes, gloo) and once as a
plain process with twice the batch:

    python tests/distributed_train.py --play P --demos D --out DIR --batch B --steps N
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_configs import tiny_generator_config, tiny_policy_config  # noqa: E402

from im2flow2act.im2flow.train import FlowTrainConfig, FlowTrainer  # noqa: E402
from im2flow2act.policies.data import WindowConfig  # noqa: E402
from im2flow2act.policies.train import TrainConfig, Trainer  # noqa: E402


def _weights_and_grads(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """The weights after the last step and the (averaged) gradients that step used."""
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {"weights": model.state_dict(), "grads": grads}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--play", required=True)
    parser.add_argument("--demos", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    policy = TrainConfig(
        data=[args.play],
        policy=tiny_policy_config(),
        windows=WindowConfig(num_points=16, plan_frames=8),
        batch_size=args.batch,
        max_steps=args.steps,
        warmup_steps=1,
        log_every=1,
    )
    trainer = Trainer(policy, args.out / "policy_run")
    trainer.fit(progress=False)
    rank = trainer.accelerator.process_index
    torch.save(_weights_and_grads(trainer.policy), args.out / f"policy_rank{rank}.pt")

    flow = FlowTrainConfig(
        data=[args.demos],
        generator=tiny_generator_config(),
        batch_size=args.batch,
        lr=2e-3,
        warmup_steps=1,
        max_steps=args.steps,
        sample_every=0,
        log_every=1,
        held_out_per_task=1,
    )
    flow_trainer = FlowTrainer(flow, args.out / "flow_run", progress=False)
    flow_trainer.fit()
    torch.save(_weights_and_grads(flow_trainer.generator.denoiser), args.out / f"flow_rank{rank}.pt")


if __name__ == "__main__":
    main()
