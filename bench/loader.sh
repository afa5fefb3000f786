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

# Compact caches at the size a real model reads: 3 views x 16 x 224x224 (no training step:
# one on the CPU at that size takes minutes; bench-memory measures steps).
echo "bench-loader: 3 views x 16 x 224x224 from raw, zstd:3 and jpeg:90 caches (2 prefetch threads)"
for c in none zstd:3 jpeg:90; do
  d="$OUT/s4-224-${c/:/}"
  build 4 224 "$d" "$c"
  "$TRAIN" bench-loader --no-step --cache "$d/cache" --epochs 3 data.batch_size=4 data.num_workers=2 \
    data.uniform_temporal_subsample_num=16 > "$OUT/l224-${c/:/}.json"
done

# The codec itself: libjpeg-turbo (what prep uses) against the pure-Rust pair, on the same
# frames, one thread, and cache sizes on a real-looking clip: 20 s of 1280x720 H.264 with
# natural-looking noise (testsrc2 + temporal noise + blur, CRF 23), one view, 224x224.
NOISY="$OUT/noisy/data"
if [ ! -f "$NOISY/manifest.csv" ]; then
  mkdir -p "$NOISY"
  ffmpeg -v error -f lavfi -i "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t,gblur=sigma=1.2" \
    -t 20 -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p -y "$NOISY/cam.mp4"
  printf 'session,subject,view,video\nnoisy,s0,front,cam.mp4\n' > "$NOISY/manifest.csv"
fi
for c in none zstd:3 jpeg:90 jpeg:75; do
  "$PREP" build -q --manifest "$NOISY/manifest.csv" --out "$OUT/noisy/cache-${c/:/}" \
    data.img_size=224 data.max_video_frames=64 prep.compress="$c" 2>/dev/null
done
build 12 112 "$OUT/s12-112-jpeg75" jpeg:75
JC=target/release/examples/jpeg_codecs
echo "bench-loader: JPEG codecs on 300 frames, libjpeg-turbo vs jpeg-encoder + zune-jpeg"
"$JC" "$OUT/noisy/cache-none" 300 90 > "$OUT/codec-noisy-90.json"
"$JC" "$OUT/noisy/cache-none" 300 75 > "$OUT/codec-noisy-75.json"
"$JC" "$OUT/s12-112/cache" 300 90 > "$OUT/codec-synth-90.json"
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

OUT="$OUT" "$PY" - "$L0" "$L2" "$P" "$R1" "$R8" "$B1" "$B8" "$LZ" "$LJ" "$SRC" $SIZES <<'PYEOF' | tee bench-out/loader.md
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
out = os.environ["OUT"]
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
def du(path):
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(path) for n in ns)
# Published GPU training rate to compare with (MMAction2 model zoo,
# configs/recognition/r2plus1d/README.md: R(2+1)D-34, 8x8x1, 224^2, 8 clips per GPU,
# 0.68 s per iteration): frames per second one GPU consumes.
gpu_fps = 8 * 8 / 0.68
big = {c: load(f"l224-{c}.json") for c in ("none", "zstd3", "jpeg90")}
fr = big["none"]["views"] * big["none"]["frames"]
print(f"#### Compact caches at 3 views x 16 x 224x224 (2 prefetch threads, batch 4, no training step)")
print()
print(f"A GPU training step needs about {gpu_fps:.0f} frames/s of 224x224 (MMAction2's R(2+1)D-34, 8 clips of 8 frames per GPU in 0.68 s per iteration, its model zoo's published time), so {gpu_fps/fr:.1f} clips/s of this shape per GPU. On this CPU, R(2+1)D-18 takes 3.4-3.9 s per step of 4 one-view clips of 8 x 112x112 (`make bench-memory`), about {4*8/3.65:.0f} frames/s.")
print()
print("| cache | clips/s | frames/s | ratio to raw | x one GPU's need |")
print("| --- | --- | --- | --- | --- |")
for name, c in (("raw (`none`)", "none"), ("`zstd:3`", "zstd3"), ("`jpeg:90`", "jpeg90")):
    l = big[c]
    print(f"| {name} | {l['loader_clips_per_s']:.1f} | {l['loader_clips_per_s']*fr:.0f} | {l['loader_clips_per_s']/big['none']['loader_clips_per_s']:.2f}x | {l['loader_clips_per_s']*fr/gpu_fps:.1f}x |")
print()
noisy_src = os.path.getsize(os.path.join(out, "noisy/data/cam.mp4"))
synth = [du(os.path.join(out, d, "cache/shards")) for d in ("s12-112", "s12-112-zstd", "s12-112-jpeg", "s12-112-jpeg75")]
noisy = [du(os.path.join(out, f"noisy/cache-{c}/shards")) for c in ("none", "zstd3", "jpeg90", "jpeg75")]
print("#### Cache size against the source videos (RGB shards)")
print()
print("| frames | raw | `zstd:3` | `jpeg:90` | `jpeg:75` |")
print("| --- | --- | --- | --- | --- |")
print("| synthetic, 12 sessions x 3 views, 112x112 at 8 fps | " + " | ".join(f"{b/src:.1f}x" for b in synth) + " |")
print("| noisy 1280x720 H.264 (testsrc2 + noise + blur, CRF 23), 224x224 at 30 fps | " + " | ".join(f"{b/noisy_src:.2f}x" for b in noisy) + " |")
print()
print("#### JPEG codec: libjpeg-turbo (used) against jpeg-encoder (SIMD) + zune-jpeg, one thread")
print()
print("| frames | Q | encode turbo / Rust, frames/s | Rust time ratio | decode turbo / Rust, frames/s | Rust time ratio | bytes turbo / Rust |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for label, name in (("noisy 224x224", "codec-noisy-90.json"), ("noisy 224x224", "codec-noisy-75.json"), ("synthetic 112x112", "codec-synth-90.json")):
    c = load(name)
    e, d, b, r = c["encode_fps"], c["decode_fps"], c["bytes_per_frame"], c["rust_over_turbo_time"]
    print(f"| {label} | {c['quality']} | {e['turbojpeg']:.0f} / {e['jpeg_encoder']:.0f} | {r['encode']:.2f}x | {d['turbojpeg']:.0f} / {d['zune_jpeg']:.0f} | {r['decode']:.2f}x | {b['turbojpeg']:.0f} / {b['jpeg_encoder']:.0f} |")
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
if a.get('step_s'):
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
