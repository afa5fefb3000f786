#!/usr/bin/env python3
"""Peak memory and time of one CPU convolution's forward and backward, four ways.

Why mvdrive back-propagates weight-heavy convolutions (more weights than unfolded input,
as in the last stage of a video ResNet) on ATen's own kernel, and why through ATen's
process-wide switch rather than a per-convolution operator (docs/architecture.md,
"oneDNN's backward of weight-heavy convolutions"). Same libtorch as mvdrive (torch 2.11.0):

- `onednn`: `F.conv3d`, libtorch's default (oneDNN forward and backward);
- `aten`: the same with `torch.backends.mkldnn.enabled = False` (ATen's `slow_conv3d`
  both ways), what mvdrive's switch does for the backward;
- `slow_conv3d`: ATen's kernel called as an operator in the forward: its autograd formula
  is `convolution_backward`, which picks oneDNN again;
- `unfold_gemm`: the convolution written as an unfold (a view) and one `tensordot`, so
  autograd saves the unfolded input and differentiates a GEMM.

Each case runs in a fresh process. Memory is the peak resident memory (VmHWM, reset
through /proc/self/clear_refs) above the resident memory before a forward and backward, with
glibc's mmap threshold fixed at 64 KiB so that freed blocks go back to the kernel; the
weight's own gradient is part of it. It is given for the first pass (which includes what
oneDNN keeps between calls: its generated kernels and its scratchpad) and for a later one. Times are the medians of
`--reps` passes. Batch 4, float32, `--threads` threads. Needs .bench-venv
(make bench-venv). A benchmark, not a test:

    .bench-venv/bin/python bench/conv_backward.py [--out bench/results/conv-backward.md]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

# (C_in, C_out, T, H=W, stride): R3D-18's layer4 3x3x3 convolution, the strided one that
# enters layer4, and for contrast layer1's (not weight-heavy).
CASES = [(512, 512, 1, 7, 1), (256, 512, 2, 14, 2), (64, 64, 8, 56, 1)]
MODES = ["onednn", "aten", "slow_conv3d", "unfold_gemm"]


def status_kib(key):
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+)", f.read()).group(1))


def one(args):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cin, cout, t, hw, stride = args.case
    mode = args.mode
    w = torch.randn(cout, cin, 3, 3, 3, requires_grad=True)
    x = torch.randn(4, cin, t, hw, hw, requires_grad=True)
    if mode == "aten":
        torch.backends.mkldnn.enabled = False

    def conv(x):
        if mode == "slow_conv3d":
            return torch._C._nn.slow_conv3d(x, w, [3, 3, 3], None, [stride] * 3, [1] * 3)
        if mode == "unfold_gemm":
            p = F.pad(x, (1,) * 6)
            cols = p.unfold(2, 3, stride).unfold(3, 3, stride).unfold(4, 3, stride)
            return torch.tensordot(cols, w, dims=([1, 5, 6, 7], [1, 2, 3, 4])).permute(
                0, 4, 1, 2, 3
            )
        return F.conv3d(x, w, stride=stride, padding=1)

    def step():
        w.grad = None
        x.grad = None
        t0 = time.perf_counter()
        y = conv(x)
        t1 = time.perf_counter()
        y.backward(torch.ones_like(y))
        return t1 - t0, time.perf_counter() - t1

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_kib("VmRSS")
    step()
    first = status_kib("VmHWM") - base
    ref = F.conv3d(x.detach(), w.detach(), stride=stride, padding=1)
    with torch.no_grad():
        diff = (conv(x) - ref).abs().max().item() / ref.abs().max().item()
    w.grad = None
    x.grad = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_kib("VmRSS")
    times = [step()]
    peak = status_kib("VmHWM") - base
    times += [step() for _ in range(args.reps - 1)]
    fwd = statistics.median(a for a, _ in times)
    bwd = statistics.median(b for _, b in times)
    print(f"{first / 1024:.0f} {peak / 1024:.0f} {fwd:.3f} {bwd:.3f} {diff:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="also write the table to this markdown file")
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--case", type=int, nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return one(args)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    rows = [
        "| convolution (batch 4, float32) | weights | "
        + " | ".join(MODES)
        + " |",
        "| --- | --- |" + " --- |" * len(MODES),
    ]
    for case in CASES:
        cin, cout, t, hw, stride = case
        cells = []
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--threads", str(args.threads)]
            cmd += ["--reps", str(args.reps), "--case", *map(str, case)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"conv_backward: {mode} {case} failed:\n{out.stderr}")
            first, peak, fwd, bwd, diff = out.stdout.split()
            cells.append(f"+{first} / +{peak} MiB, {fwd} + {bwd} s")
            print(f"{cin}->{cout} {t}x{hw}x{hw} s{stride} {mode}: first pass +{first} MiB, "
                  f"later passes +{peak} MiB, "
                  f"forward {fwd} s, backward {bwd} s, output vs F.conv3d {diff}", flush=True)
        weights = cout * cin * 27 * 4 / 2**20
        rows.append(
            f"| {cin}->{cout}, 3x3x3 stride {stride} (4 x {cin} x {t}x{hw}x{hw}) "
            f"| {weights:.1f} MiB | " + " | ".join(cells) + " |"
        )
    table = "\n".join(rows)
    print("\n" + table)
    if args.out:
        import torch

        head = (
            f"# One convolution's forward and backward on CPU, four ways\n\n"
            f"`.bench-venv/bin/python bench/conv_backward.py --out {args.out}` "
            f"({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {args.threads} threads, "
            f"{os.cpu_count()} CPUs). Each cell: peak resident memory above the memory before "
            f"the first pass / before a later pass (the weight gradient included), then "
            f"a later pass's forward + backward seconds "
            f"(medians of {args.reps}). What the columns are: the script's docstring.\n\n"
        )
        with open(args.out, "w") as f:
            f.write(head + table + "\n")


if __name__ == "__main__":
    main()
