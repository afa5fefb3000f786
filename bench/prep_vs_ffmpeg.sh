#!/usr/bin/env bash
# prep vs the ffmpeg CLI: decode throughput on 720p and 1080p H.264 clips.
#
# What is measured
#   Source frames decoded per second (wall clock, best of 3 runs) by doing the job prep does:
#   decode a 30 fps H.264 clip, keep 10 frames/s, resize to 224x224 (bilinear), and emit RGB.
#     - ffmpeg CLI: `-vf fps=10,scale=224:224:flags=bilinear -pix_fmt rgb24 -f rawvideo`,
#       written to /dev/null, with every thread knob at 1.
#     - prep:       `prep build` of a one-session manifest into a fresh cache folder.
#   Settings:
#     1 core            one clip, both tools pinned to CPU 0 with `taskset -c 0`.
#     2 cores/2 views   two clips: prep with data.num_io_threads=2 (one session per clip),
#                       the CLI as two parallel one-thread processes. No pinning.
#
# Why
#   prep promises CLI-class decode speed per core (target prep/CLI >= 0.9x) and near-linear
#   scaling across views/files (target prep 2 cores / prep 1 core >= 1.8x). Note that prep
#   does strictly more work than the CLI here: it aligns frames onto the session timeline,
#   writes page-aligned records, checksums them and writes a Parquet index on disk, while
#   the CLI throws its output into /dev/null.
#
# This is a benchmark: it prints figures and never fails on them.
#
# Environment
#   BENCH_SECONDS  clip length in seconds (default 60; use e.g. 4 for a quick smoke run)
#   BENCH_REPEATS  runs per measurement, best is kept (default 3)
#   BENCH_NOISE    temporal noise strength added to testsrc2 (default 8: ~5 Mbit/s at 720p and
#                  ~13 Mbit/s at 1080p, like in-car cameras; 10 gives ~14/36, 20 gives ~46 Mbit/s)
#   PREP           prep binary (default target/release/prep)
#
# Output: a table on stdout and the same table as markdown in bench-out/prep_vs_ffmpeg.md.
# Clips are cached in bench-out/clips/ (generated once); the prep caches are removed at the end.
set -euo pipefail
shopt -s inherit_errexit # a failing run inside $(...) stops the script too
export LC_ALL=C

SECONDS_LEN=${BENCH_SECONDS:-60}
REPEATS=${BENCH_REPEATS:-3}
NOISE=${BENCH_NOISE:-8}
PREP=${PREP:-target/release/prep}
FPS_SRC=30
OUT=bench-out
CLIPS=$OUT/clips
WORK=$OUT/prep-bench-work # manifests + caches, removed at the end
MD=$OUT/prep_vs_ffmpeg.md

for tool in ffmpeg ffprobe taskset; do
  command -v "$tool" >/dev/null || { echo "bench: '$tool' not found; run 'make setup'" >&2; exit 1; }
done
[ -x "$PREP" ] || { echo "bench: $PREP not found; run 'make build'" >&2; exit 1; }

mkdir -p "$CLIPS"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
# Clips: per resolution one encoded clip (view a) and a byte copy of it under another name
# (view b). Decoding a copy costs exactly as much as decoding a different clip, and the copy
# halves the one-time generation. Generated once, then reused.
# ---------------------------------------------------------------------------------------------
clip_path() { # WxH VIEW -> path
  echo "$CLIPS/testsrc2_${1}_${SECONDS_LEN}s_${FPS_SRC}fps_noise${NOISE}_$2.mp4"
}

make_clips() { # WxH
  local a b
  a=$(clip_path "$1" a)
  b=$(clip_path "$1" b)
  if [ ! -s "$a" ]; then
    echo "bench: generating $a"
    # Write to a temp name and rename, so an interrupted run never leaves a truncated clip.
    ffmpeg -nostdin -v error -y -f lavfi \
      -i "testsrc2=size=$1:rate=$FPS_SRC,noise=alls=$NOISE:allf=t" \
      -t "$SECONDS_LEN" -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 60 \
      -f mp4 "$a.tmp"
    mv "$a.tmp" "$a"
  fi
  if [ ! -s "$b" ]; then
    cp "$a" "$b.tmp"
    mv "$b.tmp" "$b"
  fi
}

mbit_s() { # CLIP -> average bit rate in Mbit/s
  awk -v b="$(stat -c %s "$1")" -v s="$SECONDS_LEN" 'BEGIN { printf "%.0f", b * 8 / s / 1e6 }'
}

count_frames() { # CLIP -> number of video packets (= source frames)
  ffprobe -v error -select_streams v:0 -count_packets \
    -show_entries stream=nb_read_packets -of csv=p=0 "$1"
}

# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------
now() { date +%s.%N; }

elapsed() { # RUN_FN -> wall seconds
  local t0 t1
  t0=$(now)
  "$1"
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }'
}

min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }

# best_pair CLI_FN PREP_SETUP_FN PREP_FN: runs the CLI and prep alternately REPEATS times
# (alternating spreads any background load evenly over both tools), running PREP_SETUP_FN
# untimed before each prep run. Prints "BEST_CLI_SECONDS BEST_PREP_SECONDS".
best_pair() {
  local cli=$1 setup=$2 prep=$3 best_cli="" best_prep="" i t
  for ((i = 0; i < REPEATS; i++)); do
    t=$(elapsed "$cli")
    best_cli=$(min "$t" "$best_cli")
    "$setup"
    t=$(elapsed "$prep")
    best_prep=$(min "$t" "$best_prep")
  done
  echo "$best_cli $best_prep"
}

div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
rate() { awk -v f="$1" -v s="$2" 'BEGIN { printf "%.0f", f / s }'; }
mark() { # VALUE TARGET -> "met" / "below"
  awk -v v="$1" -v t="$2" 'BEGIN { print (v >= t ? "met" : "below") }'
}

# The CLI does the same decode -> 10 fps -> 224x224 bilinear -> RGB chain as prep.
# ffmpeg_one CLIP [WRAPPER...]: WRAPPER (e.g. `taskset -c 0`) is put in front of the command.
ffmpeg_one() {
  local clip=$1
  shift
  "$@" ffmpeg -nostdin -v error -threads 1 -filter_threads 1 -filter_complex_threads 1 \
    -i "$clip" -threads 1 -vf fps=10,scale=224:224:flags=bilinear \
    -pix_fmt rgb24 -f rawvideo -y /dev/null
}

# manifest DIR CLIP...: one session (one view "front") per clip, one segment covering the clip.
# Video paths are relative to the data root $CLIPS (prep refuses paths outside its data root).
write_manifest() {
  local dir=$1 i=0 clip
  shift
  mkdir -p "$dir"
  echo "session,subject,view,video" >"$dir/manifest.csv"
  echo "session,start_s,end_s,label" >"$dir/segments.csv"
  for clip in "$@"; do
    i=$((i + 1))
    echo "s$i,subj$i,front,$(basename "$clip")" >>"$dir/manifest.csv"
    echo "s$i,0,$((SECONDS_LEN - 1)),drive" >>"$dir/segments.csv"
  done
}

# The same chain ending in one JPEG per frame (the work of prep.compress=jpeg:90):
# ffmpeg_jpeg CLIP [WRAPPER...].
ffmpeg_jpeg() {
  local clip=$1
  shift
  "$@" ffmpeg -nostdin -v error -threads 1 -filter_threads 1 -filter_complex_threads 1 \
    -i "$clip" -threads 1 -vf fps=10,scale=224:224:flags=bilinear \
    -c:v mjpeg -q:v 3 -f image2pipe -y /dev/null
}

# prep_build DIR THREADS [WRAPPER...]; $CODEC (default none) is prep.compress.
prep_build() {
  local dir=$1 threads=$2
  shift 2
  "$@" "$PREP" build --manifest "$dir/manifest.csv" --segments "$dir/segments.csv" --out "$dir/cache" \
    --data-root "$CLIPS" -q prep.compress="${CODEC:-none}" \
    data.num_io_threads="$threads" prep.fps=10 data.img_size=224 data.max_video_frames=500 >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
CPU_MODEL=${CPU_MODEL:-unknown}
FFMPEG_VERSION=$(ffmpeg -version | head -n 1)
NPROC=$(nproc)

echo "nproc:   $NPROC"
echo "cpu:     $CPU_MODEL"
echo "ffmpeg:  $FFMPEG_VERSION"
echo "prep:    $("$PREP" --version)"
echo "clips:   ${SECONDS_LEN} s, ${FPS_SRC} fps, H.264 (libx264 veryfast, yuv420p, g=60); best of $REPEATS runs"
LOAD=$(cut -d' ' -f1 /proc/loadavg)
echo "load:    $LOAD (1-min average at start)"
[ "$NPROC" -ge 2 ] || echo "note: only $NPROC CPU; the 2-core rows cannot scale here"
awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }' &&
  echo "note: the machine is not idle; figures will be noisy (best of $REPEATS helps only so much)"
echo

ROWS=()    # "clip|setting|cli fps|prep fps|ratio"
SCALING=() # summary lines

for res in 1280x720 1920x1080; do
  name=$([ "$res" = 1280x720 ] && echo 720p || echo 1080p)
  make_clips "$res"
  A=$(clip_path "$res" a)
  B=$(clip_path "$res" b)
  FA=$(count_frames "$A")
  FB=$(count_frames "$B")

  RATE=$(mbit_s "$A")
  echo "bench: $name ($FA + $FB source frames, ~$RATE Mbit/s)"

  # 1 core, one clip.
  cli1() { ffmpeg_one "$A" taskset -c 0; }
  D1=$WORK/$name-1
  write_manifest "$D1" "$A"
  prep1_setup() { rm -rf "$D1/cache"; }
  prep1() { prep_build "$D1" 1 taskset -c 0; }
  times=$(best_pair cli1 prep1_setup prep1)
  read -r t_cli1 t_prep1 <<<"$times"
  CACHE_MB=$(du -sm "$D1/cache" | cut -f1)

  # 2 cores, two views (two sessions, one file each).
  cli2() {
    local pa pb
    ffmpeg_one "$A" &
    pa=$!
    ffmpeg_one "$B" &
    pb=$!
    wait "$pa"
    wait "$pb"
  }
  D2=$WORK/$name-2
  write_manifest "$D2" "$A" "$B"
  prep2_setup() { rm -rf "$D2/cache"; }
  prep2() { prep_build "$D2" 2; }
  times=$(best_pair cli2 prep2_setup prep2)
  read -r t_cli2 t_prep2 <<<"$times"

  cli1_fps=$(rate "$FA" "$t_cli1")
  prep1_fps=$(rate "$FA" "$t_prep1")
  cli2_fps=$(rate $((FA + FB)) "$t_cli2")
  prep2_fps=$(rate $((FA + FB)) "$t_prep2")
  r1=$(div "$t_cli1" "$t_prep1") # same frames, so the fps ratio is the inverse time ratio
  r2=$(div "$t_cli2" "$t_prep2")
  scale=$(div "$(div $((FA + FB)) "$t_prep2")" "$(div "$FA" "$t_prep1")")
  cli_scale=$(div "$(div $((FA + FB)) "$t_cli2")" "$(div "$FA" "$t_cli1")")

  # 1 core, one clip, ending in JPEG: the CLI's mjpeg encoder against prep.compress=jpeg:90.
  clij() { ffmpeg_jpeg "$A" taskset -c 0; }
  prepj() { CODEC=jpeg:90 prep_build "$D1" 1 taskset -c 0; }
  times=$(best_pair clij prep1_setup prepj)
  read -r t_clij t_prepj <<<"$times"
  JPEG_MB=$(du -sm "$D1/cache" | cut -f1)

  ROWS+=("$name|1 core|$cli1_fps|$prep1_fps|${r1}x")
  ROWS+=("$name|1 core, JPEG|$(rate "$FA" "$t_clij")|$(rate "$FA" "$t_prepj")|$(div "$t_clij" "$t_prepj")x")
  ROWS+=("$name|2 cores/2 views|$cli2_fps|$prep2_fps|${r2}x")
  SCALING+=("$name: prep 2-core scaling ${scale}x (target ≥ 1.8x: $(mark "$scale" 1.8); the CLI's own: ${cli_scale}x); per-core prep/CLI ${r1}x (target ≥ 0.9x: $(mark "$r1" 0.9)); clip ~$RATE Mbit/s; prep cache ${CACHE_MB} MiB per view raw, ${JPEG_MB} MiB as jpeg:90")
  rm -rf "$D1" "$D2"
done

# ---------------------------------------------------------------------------------------------
# Report: the same markdown table on stdout and in $MD.
# ---------------------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1 /proc/loadavg)

report() {
  echo "### prep vs ffmpeg CLI (source frames decoded per second, best of $REPEATS)"
  echo
  echo "Machine: $NPROC CPUs, $CPU_MODEL; $FFMPEG_VERSION."
  echo "Load average (1 min) at start / end: $LOAD / $LOAD_END (anything else running skews the 2-core rows first)."
  echo "Clips: ${SECONDS_LEN} s, ${FPS_SRC} fps testsrc2 + noise (alls=$NOISE), H.264 libx264 veryfast, yuv420p, g=60."
  echo "Both tools: fps=10, 224x224 bilinear, RGB. The CLI writes to /dev/null; prep writes its cache to disk."
  echo "JPEG rows: the same chain ending in one JPEG per frame: the CLI's mjpeg encoder (-q:v 3) against prep.compress=jpeg:90 (libjpeg-turbo, 4:4:4 at Q 90)."
  echo
  printf '| %-6s | %-15s | %-14s | %-8s | %-8s |\n' clip setting "ffmpeg CLI fps" "prep fps" "prep/CLI"
  printf '| %-6s | %-15s | %-14s | %-8s | %-8s |\n' ------ --------------- -------------- -------- --------
  local row c s a b r
  for row in "${ROWS[@]}"; do
    IFS='|' read -r c s a b r <<<"$row"
    printf '| %-6s | %-15s | %14s | %8s | %8s |\n' "$c" "$s" "$a" "$b" "$r"
  done
  echo
  for row in "${SCALING[@]}"; do echo "- $row"; done
}

echo
report | tee "$MD"
echo
echo "bench: wrote $MD"
