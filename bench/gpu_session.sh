#!/usr/bin/env bash
# Everything a GPU session needs, as few device calls as possible (10 minutes each at most):
#
#   bash bench/gpu_session.sh all      # install, CUDA tests, benchmark grid, demo  (~9 min)
#   bash bench/gpu_session.sh tests    # or one stage at a time: tests | bench | demo
#
# Logs, the benchmark JSON and its plot go to $OUT (the device tool's output folder) or
# bench/results. The working-tree copy on the device has no .git, so pass the commit in:
# FUSEDRNN_COMMIT=<short hash> (the JSON's name and README's Performance section use it).
# Afterwards, here: copy the JSON and PNG into bench/results/ and run
#   python -m fusedrnn bench --from-json bench/results/<file>.json --update-readme
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
stage="${1:-all}"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1

python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

if [[ "$stage" == all || "$stage" == tests ]]; then
    # Every CUDA test: triton-step and triton-persistent against the float64 reference at
    # realistic sizes, TF32 flag, int64 offsets, determinism (about 4 minutes budgeted).
    timeout 300 python3 -m pytest -m cuda -q -p no:cacheprovider -rfE 2>&1 | tee "$out/cuda_tests.log"
fi
if [[ "$stage" == all || "$stage" == bench ]]; then
    timeout 240 python3 -m fusedrnn bench --out "$out" 2>&1 | tail -120 | tee "$out/bench.log"
fi
if [[ "$stage" == all || "$stage" == demo ]]; then
    timeout 90 python3 -m fusedrnn demo --quiet 2>&1 | tee "$out/demo.log"
fi
