#!/usr/bin/env bash
# One GPU check, under 8 minutes on one H100/H200, printing one table at the end:
#   1. the gpu-marked tests (python -m pytest -m gpu)
#   2. bench/unet_step.py at 768x512, 16 and 32 frames, fp16, batched and sequential guidance
#   3. the full-size pipeline (random weights) at 768x512, 16 and 32 frames, fp16, batched and
#      sequential guidance, offload on and off: seconds per step and peak memory
#   4. mamba_ssm's selective-scan kernel against the pure-PyTorch scan
#   5. one tiny end-to-end generation on CUDA
# Each stage has its own time limit; a stage that fails or runs out of time is a FAILED row in
# the table and the script goes on. Results (JSON) go to bench/results/gpu_check/.
#
# Usage: bash bench/gpu_check.sh            (on a CUDA machine)
#        bash bench/gpu_check.sh --device cpu   (a dry run of the plumbing with tiny sizes, in a
#                                                minute or two on a CPU; its numbers mean nothing)
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
if [ "${1:-}" = "--device" ] && [ -n "${2:-}" ]; then DEVICE=$2; fi
OUT=bench/results/gpu_check
rm -rf "$OUT" && mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, record a failure
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  echo "=== $name (limit ${limit}s) ==="
  if timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    echo "    done in $(( $(date +%s) - t0 ))s"
  else
    local rc=$?
    tail -n 3 "$OUT/$name.log"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      echo "timed out after ${limit}s" > "$OUT/$name.failed"
    else
      echo "exit $rc: $(tail -n 1 "$OUT/$name.log")" > "$OUT/$name.failed"
    fi
    echo "    FAILED ($(cat "$OUT/$name.failed"))"
  fi
}

if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # 1. gpu-marked tests (their summary line goes into the table)
  stage pytest_gpu 150 python -m pytest -q -m gpu -p no:cacheprovider
  tail -n 1 "$OUT/pytest_gpu.log" > "$OUT/pytest_gpu.txt"
  # 2. the UNet alone (each run a fresh process, as unet_step.py expects)
  for f in 16 32; do
    for g in --batch-guidance --no-batch-guidance; do
      stage "unet_step_f${f}${g}" 60 python bench/unet_step.py --device cuda --dtype fp16 \
        --width 768 --height 512 --frames "$f" "$g" --warmup 1 --repeat 3 \
        --json "$OUT/unet_step_f${f}${g}.json"
    done
  done
  # issue 12: the same step with the conditions re-encoded at every step (the cost encoding once saves)
  stage "unet_step_f16_every_step" 60 python bench/unet_step.py --device cuda --dtype fp16 \
    --width 768 --height 512 --frames 16 --no-encode-once --warmup 1 --repeat 3 \
    --json "$OUT/unet_step_f16_every_step.json"
  stage unet_profile 60 python bench/unet_step.py --device cuda --dtype fp16 --width 768 --height 512 \
    --frames 16 --warmup 1 --repeat 1 --profile
  SIZE=full
else
  SIZE=tiny
  stage unet_step_tiny 120 python bench/unet_step.py --device cpu --config tiny --width 64 \
    --height 64 --frames 2 --repeat 1 --json "$OUT/unet_step_tiny.json"
fi
# 3.-5. the pipeline, the Mamba scan, the tiny end-to-end generation
stage pipeline 240 python bench/gpu_check.py pipeline --device "$DEVICE" --size "$SIZE" --out "$OUT"
stage mamba 60 python bench/gpu_check.py mamba --device "$DEVICE" --out "$OUT"
stage tiny 60 python bench/gpu_check.py tiny --device "$DEVICE" --out "$OUT"

python bench/gpu_check.py table --out "$OUT"
echo
echo "total: $(( $(date +%s) - START ))s"
