#!/usr/bin/env bash
# make bench-predict: `train predict` throughput (seconds of recording per wall second) on
# CPU for R(2+1)D-18 and the transformer at 112x112, against the bound of the model's
# forward pass alone on the same windows (predict reports the share of its time spent
# there), and its peak RSS on sessions of two lengths, one 8x longer. Prints figures and
# ratios; writes bench-out/predict.md. A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
PREP=${PREP:-target/release/prep}
TRAIN=${TRAIN:-target/release/train}
OUT=bench-out/predict
mkdir -p "$OUT"
T=8

build() { # segments-per-session dir
  local n=$1 dir=$2
  if [ ! -f "$dir/data/manifest.csv" ]; then
    rm -rf "$dir"
    "$PREP" synth -q --out "$dir/data" --sessions 2 --seed 3 --segments-per-session "$n"
  fi
  "$PREP" build -q --manifest "$dir/data/manifest.csv" --segments "$dir/data/segments.csv" \
    --out "$dir/cache" data.img_size=112 prep.fps=8 data.max_video_frames=64 2>/dev/null
}
echo "bench-predict: building caches (2 synthetic sessions of 6 and of 48 segments, 112x112, 8 fps)"
build 6 "$OUT/short"
build 48 "$OUT/long"

{
  echo "# train predict on CPU (\`make bench-predict\`, $(date -u +%Y-%m-%d), $(nproc) cores)"
  echo
  echo "Two synthetic sessions per run, 112x112 at 8 fps, the front view, T=$T, batch 4;"
  echo "windows of the model's median training segment, every half window. 'forward' is"
  echo "the share of predict's wall time spent in the model's forward pass: the bound is"
  echo "1 / that share times the throughput. Untrained weights (1 epoch): speed and memory"
  echo "do not depend on them."
  echo
  echo "| model | session length | recording s | windows | x real time | forward share | bound x real time | peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$OUT/predict.md"

for model in r2plus1d_18 transformer; do
  echo "bench-predict: training $model for 1 epoch (a checkpoint to run)"
  "$TRAIN" fit -q --cache "$OUT/short/cache" model.backbone=$model data.img_size=112 \
    data.uniform_temporal_subsample_num=$T data.batch_size=4 train.max_epochs=1 \
    train.view=single train.view_name=front data.val_split=null data.aug.enabled=false \
    trainer.device=cpu trainer.log_dir="$OUT/logs" trainer.experiment=$model >/dev/null
  ckpt="$OUT/logs/$model/$(ls "$OUT/logs/$model" | sort -V | tail -1)/checkpoints/last.safetensors"
  rss_short=""
  for len in short long; do
    line=$("$TRAIN" predict -q --ckpt "$ckpt" --cache "$OUT/$len/cache" --out "$OUT/pred-$model-$len" \
      data.batch_size=4 trainer.device=cpu)
    line=$(echo "$line" | head -1)
    echo "  $model $len: $line"
    secs=$(python3 -c "import json; d=json.load(open('$OUT/pred-$model-$len/predict.json')); print(round(sum(s['frames']/s['fps'] for s in d['sessions']),1))")
    windows=$(echo "$line" | sed -E 's/.* sessions, ([0-9]+) windows.*/\1/')
    rt=$(echo "$line" | sed -E 's/.*\(([0-9.]+)x real time.*/\1/')
    fwd=$(echo "$line" | sed -E 's/.*model forward ([0-9]+)%.*/\1/')
    rss=$(echo "$line" | sed -E 's/.*peak RSS ([0-9]+) MiB.*/\1/')
    bound=$(python3 -c "print(round($rt * 100 / max($fwd, 1), 1))")
    echo "| $model | $len | $secs | $windows | $rt | $fwd% | $bound | $rss |" >> "$OUT/predict.md"
    if [ "$len" = short ]; then rss_short=$rss; else
      echo "  $model: peak RSS long / short = $(python3 -c "print(round($rss / $rss_short, 3))")"
      echo "- $model: peak RSS of the 8x longer sessions / the short ones: $(python3 -c "print(round($rss / $rss_short, 3))")" >> "$OUT/predict.md.ratios"
    fi
  done
done
echo >> "$OUT/predict.md"
cat "$OUT/predict.md.ratios" >> "$OUT/predict.md" && rm -f "$OUT/predict.md.ratios"
echo
cat "$OUT/predict.md"
