#!/usr/bin/env bash
# Create .venv and install fedpriv into it (idempotent; fast when already done).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus the test/lint tools
# PyTorch: a CPU machine gets torch==2.13.0 (the CPU build where pip finds one, as on
# the project's CI machines); a machine with an NVIDIA GPU gets PyPI's CUDA build.
# Override with FEDPRIV_TORCH='torch==X.Y.Z' or FEDPRIV_TORCH_INDEX=URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${FEDPRIV_VENV:-.venv}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
pip_q() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  spec="${FEDPRIV_TORCH:-torch==2.13.0}"
  if [ -n "${FEDPRIV_TORCH_INDEX:-}" ]; then
    echo "[setup] installing $spec from $FEDPRIV_TORCH_INDEX"
    pip_q "$spec" --index-url "$FEDPRIV_TORCH_INDEX"
  else
    if command -v nvidia-smi >/dev/null 2>&1; then
      echo "[setup] NVIDIA GPU found: installing $spec (CUDA build)"
    else
      echo "[setup] no GPU found: installing $spec"
    fi
    pip_q "$spec"
  fi
fi

stamp="$VENV/.fedpriv-installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing fedpriv$extras (editable)"
  pip_q -e ".$extras"
  touch "$stamp"
fi
