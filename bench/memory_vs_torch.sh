#!/usr/bin/env bash
# make bench-memory, part 3: mvdrive against PyTorch eager on the same models, side by side in
# one run. R(2+1)D-18, R3D-18 (torchvision's) and the video transformer (bench/torch_peer.py
# holds a PyTorch copy of mvdrive's, same parameters), batch 4, 8 x 112x112, one view, 4
# classes, AdamW, on each of four rows: baseline (fp32), checkpointing (one segment per
# BasicBlock and the stem; the embedding, each block and the norm of the transformer), bf16
# (mvdrive's bf16-mixed; PyTorch's CPU autocast) and bf16 + checkpointing. Every row of both
# programs runs in a fresh process, the two programs alternating, and reports peak resident
# memory above the process's RSS before the model was built, and seconds per step.
# Writes bench-out/memory/vs_torch.jsonl and bench/results/memory-vs-torch.md (with the
# target checks). Needs .bench-venv (make bench-venv). A benchmark, not a test.
# Settings: BENCH_STEPS (3; the transformer runs 4x as many), BENCH_VS_MODELS (default "r2plus1d_18 r3d_18 transformer"),
# BENCH_VS_ROWS (default "fp32 ckpt bf16 bf16+ckpt"; "fp32 ckpt" on a CPU without AVX-512 bf16 kernels, where bf16
# steps take minutes), BENCH_VS_OUT (default bench/results/memory-vs-torch.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${TRAIN:-target/release/train}
PEER_PY=${BENCH_PEER_PYTHON:-.bench-venv/bin/python}
OUT=bench-out/memory
STEPS=${BENCH_STEPS:-3}
MODELS=${BENCH_VS_MODELS:-r2plus1d_18 r3d_18 transformer}
ROWS=" ${BENCH_VS_ROWS:-fp32 ckpt bf16 bf16+ckpt} "
REPORT=${BENCH_VS_OUT:-bench/results/memory-vs-torch.md}
JSONL="$OUT/vs_torch.jsonl"
CACHE="$OUT/cache-112"

if [ ! -x "$PEER_PY" ]; then
  echo "bench-memory: $PEER_PY not found; run make bench-venv" >&2
  exit 1
fi
[ -f "$CACHE/meta.json" ] || { echo "bench-memory: $CACHE missing (bench/memory.sh builds it)" >&2; exit 1; }
: > "$JSONL"
echo "bench-memory: mvdrive vs PyTorch eager, 112x112, T=8, batch 4, one view, CPU, $STEPS timed steps per row"

record() { # record PROGRAM MODEL ROW JSON-or-empty ERRFILE
  local line=$4
  if [ -z "$line" ]; then
    line="{\"error\": \"$(tail -n 1 "$5" | tr -d '"\\')\"}"
  fi
  "$PEER_PY" -c 'import json,sys; r=json.loads(sys.argv[4]); r.update(program=sys.argv[1], model=sys.argv[2], row=sys.argv[3]); print(json.dumps(r))' \
    "$1" "$2" "$3" "$line" >> "$JSONL"
}

n=0
for model in $MODELS; do
  for row in "fp32 32 false" "ckpt 32 true" "bf16 bf16-mixed false" "bf16+ckpt bf16-mixed true"; do
    set -- $row
    name=$1 precision=$2 ckpt=$3
    case "$ROWS" in *" $name "*) ;; *) continue ;; esac
    # The transformer's steps are short (0.1-0.3 s): 4x as many keep its mean steady.
    steps=$STEPS; [ "$model" = transformer ] && steps=$((STEPS * 4))
    peer_flags=(); [ "$ckpt" = true ] && peer_flags=(--checkpointing)
    mv() {
      record mvdrive "$model" "$name" "$("$TRAIN" probe --cache "$CACHE" --steps "$steps" \
        model.backbone="$model" trainer.precision="$precision" model.use_gradient_checkpointing="$ckpt" \
        data.img_size=112 data.uniform_temporal_subsample_num=8 data.batch_size=4 \
        data.num_workers=0 train.view=single trainer.device=cpu 2>"$OUT/vs-mv.err" | tail -n 1)" "$OUT/vs-mv.err"
    }
    pt() {
      record pytorch "$model" "$name" "$("$PEER_PY" bench/torch_peer.py --model "$model" --batch 4 \
        --frames 8 --size 112 --classes 4 --precision "$precision" --steps "$steps" --device cpu \
        "${peer_flags[@]}" 2>"$OUT/vs-pt.err" | tail -n 1)" "$OUT/vs-pt.err"
    }
    # Alternate which program goes first, so that drift on the machine hits both alike.
    if [ $((n % 2)) = 0 ]; then mv; pt; else pt; mv; fi
    n=$((n + 1))
    echo "  $model $name: done"
  done
done

"$PEER_PY" - "$JSONL" <<'EOF' | tee "$REPORT"
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def mem(r):
    if "peak_rss_above_baseline_bytes" in r:
        return r["peak_rss_above_baseline_bytes"]
    if "peak_rss_bytes" in r:
        return r["peak_rss_bytes"] - r["baseline_rss_bytes"]
    return None
def secs(r):
    return r.get("seconds_per_step")
get = {(r["program"], r["model"], r["row"]): r for r in rows}
names = {"r2plus1d_18": "R(2+1)D-18", "r3d_18": "R3D-18", "transformer": "transformer"}
print(f"# mvdrive against PyTorch eager (measured {os.popen('date -u +%F').read().strip()}, {os.cpu_count()} CPUs)")
print()
print("Batch 4, 8 x 112x112, one view, CPU, AdamW; memory is peak RSS above the RSS before the model was built")
print("(weights, gradients, optimizer state and activations), time is seconds per step; each row a fresh process.")
print("PyTorch: eager, `torch.utils.checkpoint(use_reentrant=False)` per segment, CPU autocast bfloat16.")
print()
print("| model | row | mvdrive MiB | PyTorch MiB | memory mvdrive / PyTorch | mvdrive s | PyTorch s | time mvdrive / PyTorch |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
checks = []
models = list(dict.fromkeys(r["model"] for r in rows))
for m in models:
    for row in ("fp32", "ckpt", "bf16", "bf16+ckpt"):
        a, b = get.get(("mvdrive", m, row), {}), get.get(("pytorch", m, row), {})
        ma, mb, sa, sb = mem(a), mem(b), secs(a), secs(b)
        if None in (ma, mb, sa, sb):
            print(f"| {names.get(m, m)} | {row} | {a.get('error', '-')} | {b.get('error', '-')} | - | - | - | - |")
            continue
        print(f"| {names.get(m, m)} | {row} | {ma/2**20:.0f} | {mb/2**20:.0f} | {ma/mb:.2f} | {sa:.2f} | {sb:.2f} | {sa/sb:.2f} |")
print()
print("Checkpointing against each program's own baseline (saving: 1 - memory with / without; extra time: with / without - 1):")
print()
print("| model | precision | mvdrive saving | PyTorch saving | mvdrive extra time | PyTorch extra time |")
print("| --- | --- | --- | --- | --- | --- |")
for m in models:
    for base, ck in (("fp32", "ckpt"), ("bf16", "bf16+ckpt")):
        vals = {}
        for prog in ("mvdrive", "pytorch"):
            b, c = get.get((prog, m, base), {}), get.get((prog, m, ck), {})
            if None in (mem(b), mem(c), secs(b), secs(c)):
                continue
            vals[prog] = (1 - mem(c) / mem(b), secs(c) / secs(b) - 1)
        if len(vals) < 2:
            continue
        (sv, tv), (sp, tp) = vals["mvdrive"], vals["pytorch"]
        print(f"| {names.get(m, m)} | {base} | {100*sv:.0f}% | {100*sp:.0f}% | {100*tv:+.0f}% | {100*tp:+.0f}% |")
        if m == "transformer":
            checks.append((f"transformer {base}: saving >= 40% at <= +35%", sv >= 0.40 and tv <= 0.35))
        else:
            checks.append((f"{names.get(m, m)} {base}: saving >= PyTorch's", sv >= sp))
            checks.append((f"{names.get(m, m)} {base}: extra time <= PyTorch's", tv <= tp))
print()
for what, ok in checks:
    print(f"- {what}: {'PASS' if ok else 'FAIL'}")
EOF
