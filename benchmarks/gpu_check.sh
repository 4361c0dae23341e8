#!/usr/bin/env bash
# Every CUDA path of bluesky-ptychonn, once, on a machine with an NVIDIA GPU: one JSON.
#
#   benchmarks/gpu_check.sh [OUT.json]          (default benchmarks/results/gpu-check.json)
#
# 1. Fails fast (exit 3, one line, a JSON saying so) when no NVIDIA GPU is visible.
# 2. Installs what is missing into a venv (GPU_CHECK_VENV, default .venv-gpu): the package,
#    torch with CUDA (TORCH_SPEC from TORCH_INDEX), onnxruntime-gpu and TensorRT (the
#    [tensorrt] extra). What is already importable is not installed again; what cannot be
#    installed (no network) is recorded by the check as a failed step, not a crash.
# 3. Runs benchmarks/gpu_check.py: PyTorch fp16, ONNX Runtime CUDA, TensorRT fp16 with the
#    engine cache (build, then cached load), backend auto, ePIE and phase synchronisation on
#    CUDA, the pipeline benchmark with a GPU endpoint. Installing stops in time to leave the
#    check GPU_CHECK_BUDGET_S (default 360 s); the JSON is written within 570 s of the start.
# Exit: 0 every step ran, 1 some step failed (see the JSON), 3 no GPU, 4 install failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/benchmarks/results/gpu-check.json}"
VENV="${GPU_CHECK_VENV:-$ROOT/.venv-gpu}"
PYTHON="${PYTHON:-python3}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-360}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
ORT_SPEC="${ORT_SPEC:-onnxruntime-gpu==1.31.1}"
TRT_SPEC="${TRT_SPEC:-tensorrt-cu12==11.4.0.106}"
NVIDIA_SMI="${NVIDIA_SMI:-nvidia-smi}"
mkdir -p "$(dirname "$OUT")"

no_gpu() {
    printf '{"status": "no-gpu", "error": "%s"}\n' "$1" > "$OUT"
    echo "gpu_check: $1" >&2
    exit 3
}

# ---- 1. a GPU, or stop now ----------------------------------------------------------------
command -v "$NVIDIA_SMI" > /dev/null 2>&1 || no_gpu "no NVIDIA driver here ($NVIDIA_SMI not found): this check needs an NVIDIA GPU"
GPUS="$(timeout 20 "$NVIDIA_SMI" -L 2> /dev/null | grep -c '^GPU ' || true)"
[ "${GPUS:-0}" -ge 1 ] || no_gpu "$NVIDIA_SMI lists no GPU: this check needs an NVIDIA GPU"
echo "gpu_check: $("$NVIDIA_SMI" -L | head -1)"

# ---- 2. what it needs ---------------------------------------------------------------------
START=$(date +%s)
DEADLINE=$(( START + 570 ))  # the JSON is written within 10 minutes of the start
left() { echo $(( DEADLINE - $(date +%s) )); }
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || { echo "gpu_check: cannot create $VENV" >&2; exit 4; }
fi
PY="$VENV/bin/python"
has() { "$PY" -c "$1" > /dev/null 2>&1; }
install() {  # leaves at least BUDGET_S seconds for the check itself
    local limit=$(( $(left) - BUDGET_S ))
    if [ "$limit" -lt 30 ]; then echo "gpu_check: no time left to install $*" >&2; return; fi
    timeout "$limit" "$PY" -m pip install --quiet "$@" \
        || echo "gpu_check: could not install $* (the check records what is missing)" >&2
}
has "import torch; assert torch.cuda.is_available()" || install "$TORCH_SPEC" --index-url "$TORCH_INDEX"
has "import bluesky_ptychonn" || install -e "$ROOT" --constraint <(grep -v '^torch==' "$ROOT/constraints.txt")
has "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" || { "$PY" -m pip uninstall --quiet -y onnxruntime > /dev/null 2>&1; install "$ORT_SPEC"; }
has "import tensorrt" || install "$TRT_SPEC"
has "import torch, bluesky_ptychonn" || { echo "gpu_check: torch or the package did not install into $VENV" >&2; exit 4; }
echo "gpu_check: environment ready in $(( $(date +%s) - START )) s"

# ---- 3. the check -------------------------------------------------------------------------
LEFT=$(left)
[ "$LEFT" -gt 60 ] || LEFT=60
# steps start until 90 s before the deadline; the last one (the pipeline) is bounded inside
cd "$ROOT" && timeout "$LEFT" "$PY" benchmarks/gpu_check.py --json "$OUT" --budget-s $(( LEFT - 90 ))
