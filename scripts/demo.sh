#!/usr/bin/env bash
# Set up (if needed) and run the main job: (1) ingest the committed real clip into object flow, then
# (2) the whole chain with the `quick` preset (sim demos and play → ingest → im2flow → policy → evaluation
# → report), a few minutes on a 2-core CPU; a rerun resumes where it stopped. Results land in outputs/.
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
"$ROOT/.venv/bin/im2flow2act" pipeline run --preset quick --out "$ROOT/outputs/pipeline/quick"
