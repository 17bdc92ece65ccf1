#!/usr/bin/env bash
# `make bench-gpu`: our throughput on a CUDA machine at several batch sizes (python -m jobs.bench_gpu).
# Arguments (or BENCH_GPU_ARGS) go to it, e.g. BENCH_GPU_ARGS="--pages 128" make bench-gpu.
# Its JSON (bench-out/bench-gpu.json) feeds the GPU cost rows: htr bench --gpu-json bench-out/bench-gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# shellcheck disable=SC2086
exec $PY -m jobs.bench_gpu ${BENCH_GPU_ARGS:-} "$@"
