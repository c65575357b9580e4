#!/usr/bin/env bash
# GPU table of issue 12: one guided denoising step of the full-size UNet, CUDA fp16, 768x512
# (W 512 x H 768, the released resolution), 16 and 32 frames: time per step and peak VRAM growth,
# conditions encoded once (as the pipeline) and, for comparison, encoded at every step.
# Usage: bash bench/gpu_check.sh [extra unet_step.py args, e.g. --channels-last]
# JSON results land in bench/results/; the printed tables are what goes into the closing note.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
for frames in 16 32; do
  for encode in --encode-once --no-encode-once; do
    python bench/unet_step.py --device cuda --dtype fp16 --width 512 --height 768 --frames "$frames" \
      --warmup 1 --repeat 3 "$encode" "$@"
  done
done
python bench/unet_step.py --device cuda --dtype fp16 --width 512 --height 768 --frames 16 --warmup 1 \
  --repeat 1 --profile "$@"
