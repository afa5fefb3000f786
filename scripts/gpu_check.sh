#!/usr/bin/env bash
# One prepared check of every GPU path of mvdrive, in one call, with no build step:
#   1. `train info` (the CUDA devices the binary sees);
#   2. the device-generic trainer tests on the device (fp16 autocast + loss scaling, the
#      scaler's skip on an injected inf, bf16 compute-copy gradients against fp32,
#      checkpointing gradients equal to plain): MVDRIVE_TEST_DEVICE=cuda;
#   3. a short `train fit` per backbone in 32, 16-mixed and bf16-mixed, with and without
#      gradient checkpointing;
#   4. GPU utilisation (nvidia-smi dmon) during a fit at 3 views x 16 x 224^2;
#   5. `train bench-memory` on the device at 112^2 and 224^2 (device memory in use from
#      cudaMemGetInfo, sampled every millisecond: the caching allocator's reserved peak
#      plus the CUDA context, not the live-tensor peak);
#   6. the PyTorch eager peer (bench/torch_peer.py) on the same models and shapes.
# Prints a summary table last; the logs, the JSON and gpu.md go to --out. On a GPU,
# gpu.md is also copied to --results (bench/results/gpu.md in a checkout).
#
# `make gpu-check` prepares the bundle this reads (gpu-check/: bin/train, bin/tests/,
# caches/c112, caches/c224, torch_peer.py, this script). On the GPU machine:
#   bash gpu-check/gpu_check.sh --bundle gpu-check --out gpu-out
# It puts the machine's own torch `lib` folder (python3 -c 'import torch') on
# LD_LIBRARY_PATH: the bundle carries no libtorch.
#
# --device cpu runs the same plumbing on a CPU (train/tests/gpu_check.rs does, so the
# script does not rot): the CUDA-only parts are reported as skipped.
set -uo pipefail

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//; /^set -uo/d'
    cat <<'EOF'
Options:
  --bundle DIR      prepared bundle (default: gpu-check next to this script, else ./gpu-check)
  --train PATH      the train binary (default: BUNDLE/bin/train)
  --tests DIR       folder of trainer test binaries (default: BUNDLE/bin/tests; none = skipped)
  --cache112 DIR    cache at 112x112 (default: BUNDLE/caches/c112)
  --cache224 DIR    cache at 224x224 (default: BUNDLE/caches/c224)
  --peer PATH       bench/torch_peer.py (default: BUNDLE/torch_peer.py)
  --device D        cuda (default) or cpu
  --out DIR         logs and results (default: gpu-check-out)
  --results PATH    where gpu.md is copied on a GPU run (default: none)
  --img N           frame size of the fits and the first bench-memory (default 112)
  --quick           one backbone, fewer rows, no 224^2 bench (the CPU plumbing test)
  --precisions "P ..." precisions of the fits and the peer (default "32 16-mixed bf16-mixed")
  --test-filter S   run only the trainer tests whose names contain S (default: all)
EOF
}

here="$(cd "$(dirname "$0")" && pwd)"
bundle=""
train="" tests="" c112="" c224="" peer=""
device=cuda out=gpu-check-out results="" quick=0 img=112
precisions="32 16-mixed bf16-mixed" test_filter=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) bundle="$2"; shift 2 ;;
        --train) train="$2"; shift 2 ;;
        --tests) tests="$2"; shift 2 ;;
        --cache112) c112="$2"; shift 2 ;;
        --cache224) c224="$2"; shift 2 ;;
        --peer) peer="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --results) results="$2"; shift 2 ;;
        --img) img="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --precisions) precisions="$2"; shift 2 ;;
        --test-filter) test_filter="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown option \`$1\` (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$bundle" ]; then
    if [ -x "$here/bin/train" ]; then bundle="$here"; else bundle="gpu-check"; fi
fi
train="${train:-$bundle/bin/train}"
tests="${tests:-$bundle/bin/tests}"
c112="${c112:-$bundle/caches/c112}"
c224="${c224:-$bundle/caches/c224}"
peer="${peer:-$bundle/torch_peer.py}"
case "$device" in
    cuda) dev="cuda:0" ;;
    cpu) dev="cpu" ;;
    *) echo "gpu_check: --device must be cuda or cpu, not \`$device\`" >&2; exit 2 ;;
esac
for need in "$train" "$c112/meta.json"; do
    if [ ! -e "$need" ]; then
        echo "gpu_check: $need not found; run \`make gpu-check\` on the build machine first (or pass --train/--cache112)" >&2
        exit 2
    fi
done
[ -e "$c224/meta.json" ] || c224="$c112"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
summary="$out/summary.tsv"
: > "$summary"
failures=0

# The machine's own libtorch (same 2.11.0 build): the bundle carries none.
torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)"
if [ -n "$torch_lib" ] && [ -d "$torch_lib" ]; then
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# row PART RESULT DETAIL: one line of the summary table.
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$summary"; }
# run NAME CMD...: run with its log in $out/NAME.log; prints the exit status.
run() {
    local name="$1"; shift
    "$@" > "$out/$name.log" 2>&1
    echo $?
}

# 1. train info
rc=$(run info "$train" info)
cuda_devices=$(sed -n 's/^cuda devices: *//p' "$out/info.log")
gpu_name=$( (nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true) | head -1)
if [ "$rc" != 0 ]; then
    row "train info" FAIL "exit $rc (see info.log: is libtorch on LD_LIBRARY_PATH?)"
    failures=$((failures + 1))
elif [ "$device" = cuda ] && [ "${cuda_devices:-0}" = 0 ]; then
    row "train info" FAIL "no CUDA device seen by the binary (built with --features cuda?)"
    failures=$((failures + 1))
else
    row "train info" ok "cuda devices: ${cuda_devices:-0}${gpu_name:+ ($gpu_name)}"
fi

# 2. device-generic trainer tests
if [ -x "$tests/memory_techniques" ]; then
    rc=$(run unit-tests env MVDRIVE_TEST_DEVICE="$device" "$tests/memory_techniques" --test-threads=1 \
        ${test_filter:+"$test_filter"})
    passed=$(grep -o '[0-9]* passed' "$out/unit-tests.log" | tail -1)
    if [ "$rc" = 0 ]; then row "trainer tests on $device" ok "$passed"; else
        row "trainer tests on $device" FAIL "exit $rc, see unit-tests.log"; failures=$((failures + 1)); fi
else
    row "trainer tests on $device" skipped "no test binaries in $tests"
fi

# 3. a short fit per backbone x precision x checkpointing
if [ "$quick" = 1 ]; then backbones="r3d_18"; else backbones="r2plus1d_18 r3d_18 x3d transformer mamba stgcn"; fi
fit_common=(-q --cache "$c112" trainer.device="$dev" train.max_epochs=1 data.batch_size=2
    data.uniform_temporal_subsample_num=8 data.img_size="$img" data.val_split=null
    trainer.log_dir="$out/fits" train.warmup_epochs=0)
for b in $backbones; do
    extra=()
    if [ "$b" = stgcn ]; then extra=(model.input_type=kpt data.load_kpt=true); fi
    for p in $precisions; do
        for ck in false true; do
            name="fit-$b-$p-ck$ck"
            if [ "$p" = 16-mixed ] && [ "$device" = cpu ]; then
                row "fit $b $p ck=$ck" skipped "16-mixed needs CUDA"; continue
            fi
            start=$(date +%s.%N)
            rc=$(run "$name" "$train" fit "${fit_common[@]}" model.backbone="$b" trainer.precision="$p" \
                model.use_gradient_checkpointing="$ck" trainer.experiment="$name" "${extra[@]}")
            secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
            if [ "$rc" = 0 ]; then
                loss=$(grep -o 'train loss [0-9.naNinf-]*' "$out/$name.log" | head -1)
                row "fit $b $p ck=$ck" ok "${loss:-done}, $(printf '%.1f' "$secs") s"
            else
                row "fit $b $p ck=$ck" FAIL "exit $rc: $(grep -m1 '^error' "$out/$name.log")"
                failures=$((failures + 1))
            fi
        done
    done
done

# 4. GPU utilisation during a fit at 3 views x 16 x 224^2
if [ "$device" = cuda ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi dmon -s u -d 1 > "$out/dmon.log" 2>&1 &
    dmon=$!
    start=$(date +%s.%N)
    rc=$(run fit-utilisation "$train" fit -q --cache "$c224" trainer.device="$dev" train.max_epochs=1 \
        train.view=multi data.uniform_temporal_subsample_num=16 data.img_size=224 data.batch_size=4 \
        data.num_workers=4 data.val_split=null trainer.log_dir="$out/fits" trainer.experiment=utilisation)
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    kill "$dmon" 2> /dev/null; wait "$dmon" 2> /dev/null
    sm=$(awk '$1 ~ /^[0-9]+$/ && NF >= 2 { s += $2; n++ } END { if (n) printf "%.0f", s / n; else print "?" }' "$out/dmon.log")
    if [ "$rc" = 0 ]; then row "GPU busy, fit 3x16x224^2" ok "mean SM ${sm}% over $(printf '%.0f' "$secs") s (dmon.log)"; else
        row "GPU busy, fit 3x16x224^2" FAIL "exit $rc, see fit-utilisation.log"; failures=$((failures + 1)); fi
else
    row "GPU busy, fit 3x16x224^2" skipped "needs CUDA and nvidia-smi"
fi

# 5. bench-memory on the device
if [ "$quick" = 1 ]; then
    bench=(--backbones r3d_18 --techniques checkpointing --steps 1)
    sizes="$img"
else
    bench=(--steps 3)
    sizes="$img 224"
fi
for s in $sizes; do
    cache="$c112"; [ "$s" = 224 ] && cache="$c224"
    rc=$(run "bench-memory-$s" "$train" bench-memory -q --cache "$cache" "${bench[@]}" \
        --out "$out/bench-memory-$s.md" trainer.device="$dev" data.img_size="$s" \
        data.uniform_temporal_subsample_num=8 data.batch_size=4 train.view=single)
    if [ "$rc" = 0 ]; then row "bench-memory ${s}^2 on $device" ok "bench-memory-$s.md"; else
        row "bench-memory ${s}^2 on $device" FAIL "exit $rc, see bench-memory-$s.log"; failures=$((failures + 1)); fi
done

# 6. the PyTorch eager peer on the same models and shapes
peer_json="$out/torch-peer.jsonl"
: > "$peer_json"
if [ -f "$peer" ] && python3 -c 'import torch, torchvision' 2> /dev/null; then
    if [ "$quick" = 1 ]; then models="r3d_18"; else models="r2plus1d_18 r3d_18"; fi
    for m in $models; do
        for p in $precisions; do
            for ck in "" --checkpointing; do
                for s in $sizes; do
                    python3 "$peer" --model "$m" --precision "$p" $ck --size "$s" --frames 8 --batch 4 \
                        --steps 3 --device "$device" >> "$peer_json" 2>> "$out/torch-peer.log" ||
                        echo "{\"model\": \"$m\", \"precision\": \"$p\", \"error\": \"see torch-peer.log\"}" >> "$peer_json"
                done
            done
        done
    done
    row "PyTorch peer" ok "$(grep -c seconds_per_step "$peer_json") runs (torch-peer.jsonl)"
else
    row "PyTorch peer" skipped "python3 cannot import torch and torchvision here"
fi

# gpu.md from the logs.
{
    echo "# GPU check ($(date -u +%Y-%m-%d), ${gpu_name:-no GPU}, device $device)"
    echo
    echo "Written by \`scripts/gpu_check.sh\` from the logs in its --out folder."
    echo "Device memory in bench-memory: \`cudaMemGetInfo\` (total - free) sampled every ms, i.e."
    echo "the caching allocator's reserved peak plus the CUDA context; the PyTorch peer reports"
    echo "\`torch.cuda.max_memory_allocated\` and \`max_memory_reserved\`."
    echo
    echo "| part | result | detail |"
    echo "| --- | --- | --- |"
    awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$summary"
    for s in $sizes; do
        if [ -f "$out/bench-memory-$s.md" ]; then
            echo; echo "## bench-memory, ${s}^2"; echo; cat "$out/bench-memory-$s.md"
        fi
    done
    if [ -s "$peer_json" ]; then
        echo; echo "## PyTorch eager peer"; echo
        echo '```'; cat "$peer_json"; echo '```'
    fi
} > "$out/gpu.md"
if [ "$device" = cuda ] && [ -n "$results" ]; then cp "$out/gpu.md" "$results"; fi

echo
echo "gpu_check: device $device${gpu_name:+ ($gpu_name)}, logs in $out"
column -t -s $'\t' "$summary" 2> /dev/null || cat "$summary"
if [ "$failures" -gt 0 ]; then
    echo "gpu_check: $failures part(s) failed"
    exit 1
fi
echo "gpu_check: every part ran (skipped parts are listed)"
