#!/usr/bin/env bash
# Reproduces the shipped default models (models/default/) from scratch: synthetic data only,
# fixed seeds, CPU. Both trainings run side by side, one core each; logs in runs/default/.
# Sized for a 2-core machine in about 3 h; raise the steps on a bigger machine.
#   segmenter:  1800 steps, batch 8 of 256 px crops (64-channel FPN), then the shipped narrow variant
#               (db_mobilenet_v3_small_lite, 32-channel FPN) for 1800 steps from that one's backbone
#   recogniser: 5000 steps (batch 32), then 2500 more from that model at half the learning rate,
#               then 12000 more from that one at the same rate (a fresh cosine cycle), then 6000 more
#               from that one at 2.5e-4
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/default}
SEG_STEPS=${SEG_STEPS:-1800}
SEG2_STEPS=${SEG2_STEPS:-1800}
REC_STEPS=${REC_STEPS:-5000}
REC2_STEPS=${REC2_STEPS:-2500}
REC3_STEPS=${REC3_STEPS:-12000}
REC4_STEPS=${REC4_STEPS:-6000}
mkdir -p "$OUT"
{
  $PY -m batch.cli train segmenter --synthetic --arch db_mobilenet_v3_small --steps "$SEG_STEPS" \
      --batch-size 8 --crop-size 256 --lr 2e-3 --seed 1 --eval-every 200 --eval-size 12 \
      --threads 1 --workers 1 --model-dir "$OUT/segmenter" > "$OUT/segmenter.log" 2>&1
  $PY -m batch.cli train segmenter --synthetic --arch db_mobilenet_v3_small_lite --init "$OUT/segmenter" \
      --steps "$SEG2_STEPS" --batch-size 8 --crop-size 256 --lr 2e-3 --seed 1 --eval-every 200 \
      --eval-size 24 --threads 1 --workers 1 --model-dir "$OUT/segmenter2" > "$OUT/segmenter2.log" 2>&1
} &
SEG=$!
{
  $PY -m batch.cli train recogniser --synthetic --arch crnn_small --steps "$REC_STEPS" \
      --batch-size 32 --lr 1e-3 --seed 2 --eval-every 500 --eval-size 1000 \
      --threads 1 --workers 1 --model-dir "$OUT/recogniser" > "$OUT/recogniser.log" 2>&1
  $PY -m batch.cli train recogniser --synthetic --arch crnn_small --init "$OUT/recogniser" \
      --steps "$REC2_STEPS" --batch-size 32 --lr 5e-4 --seed 3 --eval-every 500 --eval-size 1000 \
      --threads 1 --workers 1 --model-dir "$OUT/recogniser2" > "$OUT/recogniser2.log" 2>&1
  $PY -m batch.cli train recogniser --synthetic --arch crnn_small --init "$OUT/recogniser2" \
      --steps "$REC3_STEPS" --batch-size 32 --lr 5e-4 --seed 4 --eval-every 1000 --eval-size 1000 \
      --threads 1 --workers 1 --model-dir "$OUT/recogniser3" > "$OUT/recogniser3.log" 2>&1
  $PY -m batch.cli train recogniser --synthetic --arch crnn_small --init "$OUT/recogniser3" \
      --steps "$REC4_STEPS" --batch-size 32 --lr 2.5e-4 --seed 5 --eval-every 1000 --eval-size 1000 \
      --threads 1 --workers 1 --model-dir "$OUT/recogniser4" > "$OUT/recogniser4.log" 2>&1
} &
REC=$!
wait $SEG $REC
mkdir -p models/default
cp "$OUT"/segmenter2/segmenter.{safetensors,json} "$OUT"/recogniser4/recogniser.{safetensors,json} models/default/
echo "train-default: models/default updated"; tail -n 2 "$OUT"/segmenter2.log "$OUT"/recogniser4.log
