#!/usr/bin/env bash
# Set up (if needed) and run the main job: (1) ingest the committed real clip into object flow, then
# (2) the released models (models/) act language-conditioned in simulation: for a few held-out layouts of
# each task, render the scene, generate flows from the task's instruction, execute them with rigid-lk, a
# real tracker on the robot camera's images, and write the report. Nothing is trained; a rerun resumes.
# Training from scratch: `im2flow2act pipeline run --preset quick` (minutes) or `--preset full` (hours).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
OUT="$ROOT/outputs/demo"
rm -rf "$OUT"
"$ROOT/.venv/bin/im2flow2act" ingest "$ROOT/data/clips/cups_clip.mp4" \
  --box 136,0,228,108 --task "put the red cup down over the ball" --prompt "red cup" \
  --config "$ROOT/configs/preprocessing/ingest.yaml" --out "$OUT"
echo "demo: real clip → dataset $OUT/dataset.zarr, overlay $OUT/overlays/cups_clip.mp4"
if [ -f "$ROOT/models/policy-full/model.safetensors" ] && [ -f "$ROOT/models/generator-full/model.safetensors" ]; then
  "$ROOT/.venv/bin/im2flow2act" pipeline run --preset demo --out "$ROOT/outputs/pipeline/demo"
else
  # The released weights are not kept in git (models/ holds their configs and cards).
  echo "demo: no released weights in models/ (scripts/release_models.py --run <full run> puts them there);" \
    "training the small quick preset instead"
  "$ROOT/.venv/bin/im2flow2act" pipeline run --preset quick --out "$ROOT/outputs/pipeline/quick"
fi
