#!/usr/bin/env bash
# Reproduces the shipped default models (models/default/) from scratch, fixed seeds, CPU:
#   bash jobs/train_default.sh PATH/TO/shared/data/train      (make train-default DATA=...)
# The real line data (846 pages, 8 CC BY 4.0 sets, see the README's model card) is read from the path
# given; it is cut into a line-crop cache once (runs/default/lines). The word models are trained on
# synthetic data first and the line recogniser starts from the word recogniser's weights.
# Both trainings run side by side, one core each; logs in runs/default/.
# Sized for a 2-core machine in about 3 h; raise the steps on a bigger machine.
#   segmenter:  1800 steps, batch 8 of 256 px crops (64-channel FPN), then the narrow variant
#               (db_mobilenet_v3_small_lite, 32-channel FPN) for 1800 steps from that one's backbone,
#               then the shipped variant with a text-line head (db_mobilenet_v3_small_lines) from that
#               one: 1500 steps, batch 8 of 384 px crops, 60 % real pages (their line polygons;
#               jobs/page_data.py, timeus left out) and 40 % synthetic pages (words and lines), lr 1e-3
#   recogniser: 5000 steps (batch 32), then 2500 more from that model at half the learning rate,
#               then 12000 more from that one at the same rate (a fresh cosine cycle), then 6000 more
#               from that one at 2.5e-4
#   line recogniser (shipped): crnn_line from the word recogniser's CNN and LSTM (the classifier is new:
#               the charset grew), 7000 steps, batches of 16 lines, 25 % synthetic lines, 2 threads;
#               then 2000 more from that one (lr 4e-4, 15 % synthetic; its best, step 1500, is kept),
#               then 1500 more from that one (lr 2.5e-4, 20 % synthetic), then 1500 more (lr 2.5e-4,
#               30 % synthetic lines, half of them printed), then 3500 more (lr 5e-4, 30 % synthetic,
#               40 % of those printed, 1 thread), then 2000 more (lr 2e-4, the same mix): each a
#               fresh cosine cycle
set -euo pipefail
DATA=${1:-${DATA:-}}
if [ -z "$DATA" ] || [ ! -d "$DATA" ]; then
  echo "usage: bash jobs/train_default.sh PATH/TO/data/train   (the real line sets; see README)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/default}
SEG_STEPS=${SEG_STEPS:-1800}
SEG2_STEPS=${SEG2_STEPS:-1800}
SEG3_STEPS=${SEG3_STEPS:-1500}
REC_STEPS=${REC_STEPS:-5000}
REC2_STEPS=${REC2_STEPS:-2500}
REC3_STEPS=${REC3_STEPS:-12000}
REC4_STEPS=${REC4_STEPS:-6000}
LINE_STEPS=${LINE_STEPS:-7000}
LINE2_STEPS=${LINE2_STEPS:-2000}
LINE3_STEPS=${LINE3_STEPS:-1500}
LINE4_STEPS=${LINE4_STEPS:-1500}
LINE5_STEPS=${LINE5_STEPS:-3500}
LINE6_STEPS=${LINE6_STEPS:-2000}
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
$PY -m jobs.line_data "$DATA" --out "$OUT/lines"
$PY -m jobs.page_data "$DATA" --out "$OUT/pages"
$PY -m batch.cli train segmenter --arch db_mobilenet_v3_small_lines --init "$OUT/segmenter2" \
    --pages "$OUT/pages" --synthetic-share 0.4 --steps "$SEG3_STEPS" --batch-size 8 --crop-size 384 \
    --lr 1e-3 --seed 21 --eval-every 300 --eval-size 20 --threads 2 --workers 1 \
    --model-dir "$OUT/segmenter3" > "$OUT/segmenter3.log" 2>&1
$PY -m batch.cli train recogniser --arch crnn_line --init "$OUT/recogniser4" --lines "$OUT/lines" \
    --synthetic-share 0.25 --steps "$LINE_STEPS" --batch-size 16 --lr 1e-3 --seed 11 --eval-every 1000 \
    --eval-size 800 --threads 2 --workers 2 --model-dir "$OUT/line_recogniser" > "$OUT/line_recogniser.log" 2>&1
$PY -m batch.cli train recogniser --arch crnn_line --init "$OUT/line_recogniser" --lines "$OUT/lines" \
    --synthetic-share 0.15 --steps "$LINE2_STEPS" --batch-size 16 --lr 4e-4 --seed 12 --eval-every 500 \
    --eval-size 800 --threads 2 --workers 1 --model-dir "$OUT/line_recogniser2" > "$OUT/line_recogniser2.log" 2>&1
$PY -m batch.cli train recogniser --arch crnn_line --init "$OUT/line_recogniser2" --lines "$OUT/lines" \
    --synthetic-share 0.2 --steps "$LINE3_STEPS" --batch-size 16 --lr 2.5e-4 --seed 13 --eval-every 500 \
    --eval-size 800 --threads 2 --workers 1 --model-dir "$OUT/line_recogniser3" > "$OUT/line_recogniser3.log" 2>&1
$PY -m batch.cli train recogniser --arch crnn_line --init "$OUT/line_recogniser3" --lines "$OUT/lines" \
    --synthetic-share 0.3 --synthetic-print-share 0.5 --steps "$LINE4_STEPS" --batch-size 16 --lr 2.5e-4 \
    --seed 14 --eval-every 500 --eval-size 800 --threads 2 --workers 1 \
    --model-dir "$OUT/line_recogniser4" > "$OUT/line_recogniser4.log" 2>&1
$PY -m batch.cli train recogniser --arch crnn_line --init "$OUT/line_recogniser4" --lines "$OUT/lines" \
    --synthetic-share 0.3 --synthetic-print-share 0.4 --steps "$LINE5_STEPS" --batch-size 16 --lr 5e-4 \
    --seed 15 --eval-every 700 --eval-size 800 --threads 1 --workers 1 \
    --model-dir "$OUT/line_recogniser5" > "$OUT/line_recogniser5.log" 2>&1
$PY -m batch.cli train recogniser --arch crnn_line --init "$OUT/line_recogniser5" --lines "$OUT/lines" \
    --synthetic-share 0.3 --synthetic-print-share 0.4 --steps "$LINE6_STEPS" --batch-size 16 --lr 2e-4 \
    --seed 16 --eval-every 500 --eval-size 800 --threads 1 --workers 1 \
    --model-dir "$OUT/line_recogniser6" > "$OUT/line_recogniser6.log" 2>&1
mkdir -p models/default
cp "$OUT"/segmenter3/segmenter.{safetensors,json} models/default/
cp "$OUT"/line_recogniser6/recogniser.{safetensors,json} models/default/
echo "train-default: models/default updated"; tail -n 2 "$OUT"/segmenter3.log "$OUT"/line_recogniser6.log
