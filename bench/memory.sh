#!/usr/bin/env bash
# make bench-memory: each memory technique on and off (gradient checkpointing, bf16-mixed,
# 16-mixed on CUDA, batch 1, batch 1 with accumulation 8) for every backbone, with real
# training steps on a small synthetic cache: peak memory, step time, gradient agreement.
# Writes bench/results/memory.md and prints the target checks (PASS/FAIL). A benchmark, not
# a test. Settings: BENCH_IMG (112), BENCH_FRAMES (8), BENCH_BATCH (4), BENCH_STEPS (2),
# BENCH_BACKBONES (default: all), BENCH_DEVICE (auto).
set -euo pipefail
cd "$(dirname "$0")/.."
PREP=${PREP:-target/release/prep}
TRAIN=${TRAIN:-target/release/train}
OUT=bench-out/memory
IMG=${BENCH_IMG:-112}
T=${BENCH_FRAMES:-8}
B=${BENCH_BATCH:-4}
STEPS=${BENCH_STEPS:-2}
DEVICE=${BENCH_DEVICE:-auto}
mkdir -p "$OUT" bench/results

if [ ! -f "$OUT/cache-$IMG/meta.json" ]; then
  echo "bench-memory: building a ${IMG}x${IMG} cache (synthetic dataset, 12 sessions)"
  rm -rf "$OUT/data" "$OUT/cache-$IMG"
  "$PREP" synth -q --out "$OUT/data" --sessions 12 --seed 0
  "$PREP" build -q --manifest "$OUT/data/manifest.csv" --segments "$OUT/data/segments.csv" \
    --out "$OUT/cache-$IMG" data.img_size="$IMG" prep.fps=8 data.max_video_frames=64 2>/dev/null
fi

BACKBONES=()
if [ -n "${BENCH_BACKBONES:-}" ]; then BACKBONES=(--backbones "$BENCH_BACKBONES"); fi
echo "bench-memory: ${IMG}x${IMG}, T=$T, batch $B, one view, $STEPS timed steps per row"
start=$(date +%s)
"$TRAIN" bench-memory --cache "$OUT/cache-$IMG" --out bench/results/memory.md --steps "$STEPS" \
  "${BACKBONES[@]}" data.img_size="$IMG" data.uniform_temporal_subsample_num="$T" \
  data.batch_size="$B" data.num_workers=0 train.view=single trainer.device="$DEVICE"
echo "bench-memory: $(( $(date +%s) - start )) s; table in bench/results/memory.md"
