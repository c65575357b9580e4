#!/usr/bin/env bash
# One-shot demo training on one large GPU (written for an H200 with 16 CPU cores; NOT yet run).
#
#   OUT=/path/for/results bash bench/train_demo_gpu.sh
#
# Renders drawn people on the fly with 12 DataLoader workers, trains the "gpu" recipe (128x192,
# 8 frames: VAE 600 steps, then the UNet at batch 32 in bf16) and stops itself after
# TRAIN_MINUTES (default 6.5) so that the whole script fits in 8 minutes; the UNet checkpoint is saved
# on the way out. Then it evaluates on held-out data and copies the from_pretrained folder, the loss
# logs/curves, the metrics JSON and a contact sheet to $OUT. Rerunning with the same RUN resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder the results go to}
RUN=${RUN:-/tmp/unianimate-demo-gpu}
TRAIN_MINUTES=${TRAIN_MINUTES:-6.5}
mkdir -p "$OUT" "$RUN"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import peft" 2>/dev/null || echo "peft missing (only LoRA needs it)"

python -m unianimate.train demo --run-dir "$RUN" --recipe gpu --seed 0 --device cuda \
    --threads 4 --max-minutes "$TRAIN_MINUTES" 2>&1 | tee "$OUT/train.log"

python bench/demo_quality.py --model "$RUN/model" --clips 16 --steps 20 --quick --threads 8 --device cuda \
    --json "$OUT/demo_quality.json" --sheet "$OUT/contact_sheet.png" 2>&1 | grep -v "^INFO" | tee "$OUT/demo_quality.txt"

cp -r "$RUN/model" "$OUT/model"
cp "$RUN"/recipe.json "$RUN"/*_loss.csv "$RUN"/*_loss.png "$OUT"/
du -sh "$OUT/model"
