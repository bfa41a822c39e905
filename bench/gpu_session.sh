#!/usr/bin/env bash
# A GPU session's checks, one stage per device call (each call may run 10 minutes at most):
#
#   FUSEDRNN_COMMIT=<short hash> bash bench/gpu_session.sh tests   # CUDA tests      (≤ 9 min)
#   FUSEDRNN_COMMIT=<short hash> bash bench/gpu_session.sh bench [--cells lstm|gru]  (≤ 9 min)
#   FUSEDRNN_COMMIT=<short hash> bash bench/gpu_session.sh demo    # demo, fused backends (≤ 4 min)
#
# Logs, the benchmark JSON and its plot go to $OUT (the device tool's output folder) or
# bench/results. The device's copy of the tree has no .git: FUSEDRNN_COMMIT names the commit
# in the JSON and in README's Performance section. Afterwards, here: copy the JSON and PNG
# into bench/results/ and run
#   python -m fusedrnn bench --from-json bench/results/<file>.json --update-readme
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
stage="${1:?usage: gpu_session.sh tests|bench|demo}"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
[ -n "${FUSEDRNN_COMMIT:-}" ] || echo "warning: FUSEDRNN_COMMIT is unset; results will say 'nocommit'"

if ! python3 -m pip install -q --no-deps --no-build-isolation -e . > "$out/install.log" 2>&1; then
    cat "$out/install.log"
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

case "$stage" in
tests)
    # every fused backend (Triton step/persistent, CuPy step/persistent) against the float64
    # reference at realistic sizes,
    # the TF32 flag, int64 offsets, determinism, torch.compile on CUDA.
    timeout 540 python3 -m pytest -m cuda -q -p no:cacheprovider -rfE 2>&1 | tee "$out/cuda_tests.log"
    ;;
bench)
    # pytest-benchmark writes its JSON only at the end: the limit leaves room for the grid.
    # Extra arguments go to the bench command (e.g. `bench --cells lstm`, then `--cells gru`,
    # when the whole grid with every provider does not fit one call).
    timeout 540 python3 -m fusedrnn bench --out "$out" "${@:2}" 2>&1 | tail -150 | tee "$out/bench.log"
    ;;
demo)
    for backend in triton-step auto; do
        timeout 100 python3 -m fusedrnn demo --quiet --backend "$backend" 2>&1 | tee -a "$out/demo.log"
    done
    timeout 40 python3 -m fusedrnn demo --quiet --backend triton-persistent --hidden 64 \
        2>&1 | tee -a "$out/demo.log"
    ;;
*)
    echo "unknown stage $stage (tests|bench|demo)" >&2
    exit 2
    ;;
esac
