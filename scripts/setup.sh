#!/usr/bin/env bash
# Create .venv (if missing) and install im2flow2act into it. Idempotent: a second run is a quick check.
# CPU-only machines: torch==2.13.0 goes in first and alone, so pip never pulls a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.im2flow2act-installed"
TORCH_SPEC="${IM2FLOW2ACT_TORCH:-torch==2.13.0}"

# Debian libraries for offscreen MuJoCo rendering (EGL / OSMesa) and chromium (the report is checked in a
# real headless browser), when we are root and they are missing.
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  ldconfig -p | grep -q "libEGL.so.1 " || missing+=(libegl1)
  ldconfig -p | grep -q "libGL.so.1 " || missing+=(libgl1)
  ldconfig -p | grep -q "libOSMesa.so" || missing+=(libosmesa6)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} (offscreen rendering, report check)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "setup: warning: could not install ${missing[*]}; rendering or the report check may fail" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# The hand-object grounder's palm detector ships inside the mediapipe 0.10.14 wheel; it is read with OpenCV,
# so only the files are installed (--no-deps: mediapipe's own jax/protobuf<5/opencv-contrib stay out).
if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('mediapipe') is None)" 2>/dev/null; then
  "${PIP[@]}" install -q --no-deps "mediapipe==0.10.14" || echo "setup: warning: no mediapipe wheel; the hand-object grounder is unavailable (ingest without a box grounds with motion)" >&2
fi

# Reinstall only when pyproject.toml changed since the last successful install.
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import torch, im2flow2act.preprocessing" 2>/dev/null; then
  exit 0
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing $TORCH_SPEC (alone, first)"
  "${PIP[@]}" install -q "$TORCH_SPEC"
fi
echo "setup: installing im2flow2act[dev]"
"${PIP[@]}" install -q -e ".[dev]"
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
