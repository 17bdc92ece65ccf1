#!/usr/bin/env bash
# `make bench`: install the bench extras when missing (Tesseract from Debian, RapidOCR into the venv),
# then `htr bench` -> BENCHMARKS.md. Arguments (or BENCH_ARGS) go to `htr bench`, e.g.
#   BENCH_ARGS="--synthetic-pages 6 --memory-pages 200" make bench
# The headline times `htr run` end to end against the peers' commands (--e2e-pages N for the mixed
# set, --no-e2e to skip it; jobs/bench_e2e.py). The real-data table reads ../shared/data/train
# (--real DIR, --real-limit N pages per set, --no-real).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
missing=""
for p in tesseract-ocr tesseract-ocr-eng; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "bench: apt installing$missing"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# --no-deps: rapidocr-onnxruntime would pull opencv-python over our opencv-python-headless (see the file)
$PY -m pip install -q --no-deps -r requirements-bench.txt
# shellcheck disable=SC2086
exec $PY -m batch.cli bench ${BENCH_ARGS:-} "$@"
