#!/usr/bin/env bash
# Set up (if needed) and run the main job on the committed real clip; results land in outputs/demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
OUT="$ROOT/outputs/demo"
rm -rf "$OUT"
"$ROOT/.venv/bin/im2flow2act" ingest "$ROOT/data/clips/cups_clip.mp4" \
  --box 136,0,228,108 --task "put the red cup down over the ball" --prompt "red cup" \
  --config "$ROOT/configs/preprocessing/ingest.yaml" --out "$OUT"
"$ROOT/.venv/bin/im2flow2act" inspect "$OUT/dataset.zarr"
echo "demo: dataset $OUT/dataset.zarr, overlay $OUT/overlays/cups_clip.mp4"
