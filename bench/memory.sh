#!/usr/bin/env bash
# make bench-memory: each memory technique on and off (gradient checkpointing, bf16-mixed,
# 16-mixed on CUDA, batch 1, batch 1 with accumulation 8) for every backbone, with real
# training steps on a small synthetic cache: peak memory, step time, gradient agreement.
# Writes bench/results/memory.md and prints the target checks (PASS/FAIL). A benchmark, not
# a test. Settings: BENCH_IMG (112), BENCH_FRAMES (8), BENCH_BATCH (4), BENCH_STEPS (2),
# BENCH_BACKBONES (default: all), BENCH_DEVICE (auto), BENCH_LARGE (1: also 16 x 224^2),
# BENCH_VS_TORCH (1: also mvdrive against PyTorch eager, bench/memory_vs_torch.sh).
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

cache() { # cache SIZE: a SIZExSIZE cache of the synthetic dataset (built once)
  if [ ! -f "$OUT/cache-$1/meta.json" ]; then
    echo "bench-memory: building a $1x$1 cache (synthetic dataset, 12 sessions)"
    [ -f "$OUT/data/manifest.csv" ] || "$PREP" synth -q --out "$OUT/data" --sessions 12 --seed 0
    rm -rf "$OUT/cache-$1"
    "$PREP" build -q --manifest "$OUT/data/manifest.csv" --segments "$OUT/data/segments.csv" \
      --out "$OUT/cache-$1" data.img_size="$1" prep.fps=8 data.max_video_frames=64 2>/dev/null
  fi
}

BACKBONES=()
if [ -n "${BENCH_BACKBONES:-}" ]; then BACKBONES=(--backbones "$BENCH_BACKBONES"); fi
start=$(date +%s)

# 1. Every technique, every backbone, at the small size.
cache "$IMG"
echo "bench-memory: ${IMG}x${IMG}, T=$T, batch $B, one view, $STEPS timed steps per row"
"$TRAIN" bench-memory --cache "$OUT/cache-$IMG" --out bench/results/memory.md --steps "$STEPS" \
  "${BACKBONES[@]}" data.img_size="$IMG" data.uniform_temporal_subsample_num="$T" \
  data.batch_size="$B" data.num_workers=0 train.view=single trainer.device="$DEVICE"

# 2. The large size (16 x 224^2, batch 2): each backbone's cost there, and checkpointing
#    where activations dominate (the transformer target is checked here).
if [ "${BENCH_LARGE:-1}" = 1 ]; then
  cache 224
  echo "bench-memory: 224x224, T=16, batch 2, one view, baseline and checkpointing"
  "$TRAIN" bench-memory --cache "$OUT/cache-224" --out bench/results/memory-224.md --steps "$STEPS" \
    --techniques checkpointing "${BACKBONES[@]}" data.img_size=224 \
    data.uniform_temporal_subsample_num=16 data.batch_size=2 data.num_workers=0 \
    train.view=single trainer.device="$DEVICE"
fi

# 3. Side by side with PyTorch eager on the same models (bench/memory_vs_torch.sh).
if [ "${BENCH_VS_TORCH:-1}" = 1 ]; then
  bash bench/memory_vs_torch.sh
fi
echo "bench-memory: $(( $(date +%s) - start )) s; tables in bench/results/memory.md, memory-224.md and memory-vs-torch.md"
