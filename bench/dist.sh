#!/usr/bin/env bash
# make bench-dist: data-parallel training on c10d gloo, 1 rank vs 2 ranks on this machine,
# and the gradient all-reduce against a memcpy of the same bytes.
# Writes bench/results/dist.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-out/dist
RES=bench/results/dist.md
PREP=target/release/prep
TRAIN=target/release/train
rm -rf "$OUT" && mkdir -p "$OUT"
$PREP synth --out "$OUT/data" --sessions 12 --seed 0 >/dev/null
$PREP build -q --manifest "$OUT/data/manifest.csv" --segments "$OUT/data/segments.csv" \
    --out "$OUT/cache" data.img_size=64 prep.fps=8 data.max_video_frames=64 >/dev/null
# The transformer of make bench-memory (2.68 M parameters), 64x64 x 8 frames, batch 4 per rank.
SET=(data.img_size=64 data.uniform_temporal_subsample_num=8 data.batch_size=4 train.max_epochs=3
     train.view=single train.view_name=front data.aug.enabled=false trainer.device=cpu
     model.backbone=transformer data.num_workers=1)
epoch_s() { # the median epoch time of a run's metrics.csv (epoch 1 warms up)
    tail -n +3 "$1/metrics.csv" | cut -d, -f9 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
steps() { tail -n 1 "$1/metrics.csv" | cut -d, -f2; }
cores=$(nproc)
echo "bench-dist: 1 rank (OMP_NUM_THREADS=$cores)"
OMP_NUM_THREADS=$cores $TRAIN -q fit --cache "$OUT/cache" "${SET[@]}" trainer.log_dir="$OUT/one" >"$OUT/one.txt"
echo "bench-dist: 2 ranks (fit --nproc 2, OMP_NUM_THREADS=$((cores / 2 > 0 ? cores / 2 : 1)) each)"
$TRAIN -q fit --nproc 2 --cache "$OUT/cache" "${SET[@]}" trainer.log_dir="$OUT/two" >"$OUT/two.txt"
one=$(ls -d "$OUT"/one/default/version_*); two=$(ls -d "$OUT"/two/default/version_*)
s1=$(epoch_s "$one"); s2=$(epoch_s "$two")
n1=$(( $(steps "$one") / 3 )); n2=$(( $(steps "$two") / 3 ))
comm=$(grep "gradient all-reduce" "$OUT/two.txt" | sed 's/^ *//')
{
  echo "# make bench-dist: data-parallel training on libtorch's c10d (gloo), this machine"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')."
  echo "Transformer backbone (2.68 M parameters), 64x64 x 8 frames, batch 4 per rank, fp32; an epoch is"
  echo "the same $((n1 * 4)) training segments either way; epoch time is the median of epochs 2-3 and includes"
  echo "validation."
  echo
  echo "| ranks | steps/epoch | epoch (s) | steps/s | clips/s | speed-up |"
  echo "| --- | --- | --- | --- | --- | --- |"
  awk -v n1="$n1" -v s1="$s1" -v n2="$n2" -v s2="$s2" 'BEGIN {
    printf "| 1 | %d | %.2f | %.2f | %.1f | 1.00x |\n", n1, s1, n1 / s1, n1 * 4 / s1;
    printf "| 2 | %d | %.2f | %.2f | %.1f | %.2fx |\n", n2, s2, n2 / s2, n2 * 8 / s2, s1 / s2 }'
  echo
  echo "2-rank run, as \`train fit\` reports it (time in the gradient all-reduce, waiting for the"
  echo "slower rank included): $comm"
  echo
  echo "All-reduce alone (\`cargo run --release -p mvdrive-dist --example allreduce\`), median of 7:"
  echo
  target/release/examples/allreduce 1 10.2 45 120
  echo
  echo "10.2 MiB is this transformer's gradients; 120 MiB is R(2+1)D-18's. Two ranks on one 2-core"
  echo "machine share its cores, so the speed-up here measures overhead, not scaling; multi-GPU"
  echo "(NCCL) scaling has not been measured."
} | tee "$RES"
