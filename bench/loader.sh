#!/usr/bin/env bash
# make bench-loader: the training loader against (1) the memcpy bound of the same bytes and
# (2) decoding the source videos at train time with PyAV (what the original Python project's
# DataLoader did), on the same clips; then peak RSS of `train fit` on a cache and on one 8x
# larger. Prints figures and ratios; writes bench-out/loader.md. A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
PREP=${PREP:-target/release/prep}
TRAIN=${TRAIN:-target/release/train}
PY=${PY:-.venv/bin/python}
OUT=bench-out/loader
T=${BENCH_FRAMES:-8}
mkdir -p "$OUT"

build() { # sessions size dir [prep.compress]
  local n=$1 size=$2 dir=$3 codec=${4:-none}
  if [ ! -f "$dir/data/manifest.csv" ]; then
    rm -rf "$dir"
    "$PREP" synth -q --out "$dir/data" --sessions "$n" --seed 0
  fi
  # Incremental: reuses what an earlier run built with this prep, rebuilds the rest.
  "$PREP" build -q --manifest "$dir/data/manifest.csv" --segments "$dir/data/segments.csv" \
    --out "$dir/cache" data.img_size="$size" prep.fps=8 data.max_video_frames=64 \
    prep.compress="$codec" 2>/dev/null
}

echo "bench-loader: building caches (synthetic dataset, 3 views)"
build 12 112 "$OUT/s12-112"
build 12 112 "$OUT/s12-112-zstd" zstd:3
build 12 112 "$OUT/s12-112-jpeg" jpeg:90
build 12 32 "$OUT/s12-32"
build 96 32 "$OUT/s96-32"

field() { "$PY" -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }

echo "bench-loader: loader vs memcpy (112x112, T=$T, 3 views, train split)"
L0=$("$TRAIN" bench-loader --cache "$OUT/s12-112/cache" --epochs 40 data.batch_size=4 data.num_workers=0 data.uniform_temporal_subsample_num=$T)
L2=$("$TRAIN" bench-loader --cache "$OUT/s12-112/cache" --epochs 40 data.batch_size=4 data.num_workers=2 data.uniform_temporal_subsample_num=$T)
echo "bench-loader: the same clips from zstd:3 and jpeg:90 caches (2 prefetch threads)"
LZ=$("$TRAIN" bench-loader --cache "$OUT/s12-112-zstd/cache" --epochs 10 data.batch_size=4 data.num_workers=2 data.uniform_temporal_subsample_num=$T)
LJ=$("$TRAIN" bench-loader --cache "$OUT/s12-112-jpeg/cache" --epochs 10 data.batch_size=4 data.num_workers=2 data.uniform_temporal_subsample_num=$T)
SRC=$(du -cb "$OUT/s12-112/data/videos" | tail -1 | cut -f1)
SIZES=""
for c in s12-112 s12-112-zstd s12-112-jpeg; do SIZES="$SIZES $(du -sb "$OUT/$c/cache/shards" | cut -f1)"; done
echo "bench-loader: PyAV decoding the source videos (same clips, one process)"
P=$("$PY" bench/pyav_loader.py "$OUT/s12-112/cache" "$OUT/s12-112/data" --frames $T --epochs 1)

echo "bench-loader: peak RSS of train fit, 1 epoch, on 12 and 96 sessions (32x32 cache)"
rss() {
  "$TRAIN" fit -q --cache "$1" data.img_size=32 data.uniform_temporal_subsample_num=4 data.batch_size=4 \
    data.num_workers=2 train.max_epochs=1 train.view=single data.val_split=null \
    trainer.log_dir="$OUT/logs" trainer.device=cpu | sed -n 's/.*peak RSS: \([0-9.]*\) MiB/\1/p'
}
R1=$(rss "$OUT/s12-32/cache")
R8=$(rss "$OUT/s96-32/cache")
B1=$(du -sb "$OUT/s12-32/cache" | cut -f1)
B8=$(du -sb "$OUT/s96-32/cache" | cut -f1)

"$PY" - "$L0" "$L2" "$P" "$R1" "$R8" "$B1" "$B8" "$LZ" "$LJ" "$SRC" $SIZES <<'PYEOF' | tee bench-out/loader.md
import json, os, sys
l0, l2, p = (json.loads(x) for x in sys.argv[1:4])
r1, r8, b1, b8 = (float(x) for x in sys.argv[4:8])
lz, lj = (json.loads(x) for x in sys.argv[8:10])
src, *sizes = (float(x) for x in sys.argv[10:14])
print(f"#### Loader (measured {os.popen('date -u +%F').read().strip()}, {os.cpu_count()} CPUs)")
print()
print(f"Clips of {l0['views']} views x {l0['frames']} frames of 112x112 RGB ({l0['bytes_per_clip']/1024:.0f} KiB), {l0['clips']} training segments, warm page cache.")
print()
print("| pipeline | clips/s | ratio |")
print("| --- | --- | --- |")
print(f"| memcpy of the same bytes (bound) | {l0['memcpy_clips_per_s']:.0f} | 1 |")
print(f"| mvdrive loader, in the training thread | {l0['loader_clips_per_s']:.0f} | {l0['loader_clips_per_s']/l0['memcpy_clips_per_s']:.2f}x of memcpy |")
print(f"| mvdrive loader, 2 prefetch threads | {l2['loader_clips_per_s']:.0f} | {l2['loader_clips_per_s']/l2['memcpy_clips_per_s']:.2f}x of memcpy |")
print(f"| PyAV decoding the source videos, one process | {p['clips_per_s']:.1f} | mvdrive (1 thread) is {l0['loader_clips_per_s']/p['clips_per_s']:.0f}x faster |")
print()
print("#### Codecs (the same clips, 2 prefetch threads; sizes against the source videos)")
print()
print("| cache | shards | x source videos | clips/s | ratio to raw |")
print("| --- | --- | --- | --- | --- |")
for name, l, size in (("raw (`none`)", l2, sizes[0]), ("`zstd:3`", lz, sizes[1]), ("`jpeg:90`", lj, sizes[2])):
    print(f"| {name} | {size/2**20:.0f} MiB | {size/src:.1f}x | {l['loader_clips_per_s']:.0f} | {l['loader_clips_per_s']/l2['loader_clips_per_s']:.2f}x |")
print()
print("#### What the frame checksums cost (same run, the three loaders' epochs interleaved)")
print()
print(f"Frame checksums in the cache: {'yes' if l0['frame_checksums'] else 'NO (an older cache: rebuild it)'}.")
print("Cost: the median over epochs of 1 - (epoch time without checks / epoch time with them).")
print()
print("| loader | threads | clips/s | cost against no checks |")
print("| --- | --- | --- | --- |")
for l in (l0, l2):
    u = l['unchecked_clips_per_s']
    print(f"| no checks | {l['workers']} | {u:.0f} | - |")
    print(f"| as in training: each frame checked on its first read | {l['workers']} | {l['loader_clips_per_s']:.0f} | {100*l['once_cost']:.1f}% |")
    print(f"| every read checked (the first epoch's cost) | {l['workers']} | {l['every_read_clips_per_s']:.0f} | {100*l['every_read_cost']:.1f}% |")
print()
a = l0['augment']
print("#### Training-time augmentation on the CPU (same run, the batches above: 4 clips x 3 views x 8 frames of 112x112)")
print()
print("| input of one batch | ms | ratio |")
print("| --- | --- | --- |")
print(f"| plain (to float, normalised) | {a['plain_ms']:.1f} | 1 |")
print(f"| augmented (crop + resize, flip, colour jitter, then the same) | {a['augmented_ms']:.1f} | {a['augmented_ms']/a['plain_ms']:.2f}x |")
print(f"| one training step of {a['backbone']} (fp32) on that batch | {a['step_s']*1e3:.0f} | augmentation is {100*(a['augmented_ms']-a['plain_ms'])/(a['step_s']*1e3):.1f}% of it |")
print()
print("#### Peak RSS of `train fit` (1 epoch, 32x32, T=4, one view)")
print()
print("| cache | size on disk | peak RSS |")
print("| --- | --- | --- |")
print(f"| 12 sessions | {b1/2**20:.0f} MiB | {r1:.0f} MiB |")
print(f"| 96 sessions (8x) | {b8/2**20:.0f} MiB | {r8:.0f} MiB |")
print()
print(f"RSS ratio 8x / 1x: {r8/r1:.3f} (target: within 5%: {'met' if abs(r8/r1-1) <= 0.05 else 'NOT met'})")
PYEOF
