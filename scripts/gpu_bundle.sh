#!/usr/bin/env bash
# make gpu-check: prepare, on the build machine, everything scripts/gpu_check.sh needs on a
# GPU machine, in one folder small enough to copy (<= 60 MiB; no libtorch, no build there):
#   bin/train                     the --features cuda release binary, debug info stripped
#   bin/tests/memory_techniques   the device-generic trainer tests, --features cuda
#   caches/c112, caches/c224      small synthetic caches (zstd frames)
#   gpu_check.sh, torch_peer.py   the check and its PyTorch eager peer
# Usage: scripts/gpu_bundle.sh [BUNDLE_DIR]   (default gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."
B="${1:-gpu-check}"
PREP=target/release/prep
rm -rf "$B"
mkdir -p "$B/bin/tests" "$B/caches"

echo "gpu-check: building the --features cuda train binary and trainer tests"
cargo build --release -p mvdrive-train --features cuda --bin train
objcopy --strip-debug target/release/train "$B/bin/train"
exe=$(cargo test --release -p mvdrive-train --features cuda --test memory_techniques --no-run \
    --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "memory_techniques":
        print(m["executable"])')
objcopy --strip-debug "$exe" "$B/bin/tests/memory_techniques"
echo "gpu-check: back to the CPU build of train"
cargo build --release -p mvdrive-train --bin train

echo "gpu-check: synthetic caches at 112x112 and 224x224"
"$PREP" synth -q --out "$B/data" --sessions 4 --seed 0
for s in 112 224; do
    "$PREP" build -q --manifest "$B/data/manifest.csv" --segments "$B/data/segments.csv" \
        --out "$B/caches/c$s" data.img_size=$s prep.fps=4 data.max_video_frames=64 prep.compress=zstd:3
done
rm -rf "$B/data"
cp scripts/gpu_check.sh bench/torch_peer.py "$B/"

size=$(du -sm "$B" | cut -f1)
echo "gpu-check: $B is $size MiB"
if [ "$size" -gt 60 ]; then
    echo "gpu-check: $B is over 60 MiB; it must stay copyable" >&2
    exit 1
fi
cat <<EOT
gpu-check: ready. On a GPU machine with torch 2.11.0 in its python3, from a checkout with $B/:
  bash $B/gpu_check.sh --bundle $B --out gpu-check-out --results bench/results/gpu.md
EOT
