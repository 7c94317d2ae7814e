#!/usr/bin/env bash
# The best policy measured on a CPU (docs/results/policies.md), end to end, about an hour and a half on 2
# cores: 1000 one-primitive play episodes (200 of them end holding the mug), train_medium for 6000 steps,
# held-out demos, and the benchmark (oracle and LK online tracking side by side).
# Every step resumes if interrupted.
#   bash scripts/policy_medium.sh [OUT]        (default: outputs/policy_medium)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/policy_medium}
export MUJOCO_GL=${MUJOCO_GL:-egl}
CLI=.venv/bin/im2flow2act
PLAY=("play_mix=[grasp_move,grasp_move,reach]" play_primitives=1 play_place_on=0.25)

$CLI sim play --task pick_place --task open_drawer --episodes 200 --seed 20000 --workers 2 \
    --out "$OUT/play" "${PLAY[@]}"
$CLI sim play --task pick_place --episodes 400 --seed 40000 --workers 2 --out "$OUT/play_pick" "${PLAY[@]}"
$CLI sim play --task pick_place --episodes 200 --seed 60000 --workers 2 --out "$OUT/play_hold" \
    "play_mix=[grasp_move]" play_primitives=1 play_hold=1.0
$CLI sim demos --task pick_place --task open_drawer --seed 50 --episodes 20 --workers 2 --out "$OUT/demos"
$CLI policy train --config configs/policy/train_medium.yaml --out "$OUT/run" \
    "data=[$OUT/play/dataset.zarr,$OUT/play_pick/dataset.zarr,$OUT/play_hold/dataset.zarr]" max_steps=6000
.venv/bin/python scripts/bench_policy.py --run "$OUT/run" --demos "$OUT/demos/dataset.zarr" \
    --tasks pick_place open_drawer --out "$OUT/bench_policy.jsonl"
