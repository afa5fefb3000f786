#!/usr/bin/env python3
"""PyTorch eager peer of mvdrive's training step, for side-by-side benchmarks.

torchvision's R(2+1)D-18 or R3D-18 (random weights, `num_classes` outputs), one view,
the same batch and clip shape as the mvdrive run it is compared with, cross-entropy and
AdamW (lr 1e-3, weight decay 0.05, as `train fit`'s defaults), eager mode:

- precision `32`: float32;
- `16-mixed`: CUDA autocast float16 with a GradScaler;
- `bf16-mixed`: autocast bfloat16 (CUDA or CPU);
- `--checkpointing`: `torch.utils.checkpoint(use_reentrant=False)` around the stem and
  each BasicBlock, the segments mvdrive checkpoints.

Prints one line of JSON: median seconds per step over `--steps` timed steps (after one
warm-up step), and peak memory: on CUDA the caching allocator's peak allocated and
reserved bytes (`torch.cuda.max_memory_allocated` / `max_memory_reserved`, reset after
the model is built), on CPU the process's peak RSS above its RSS before the first step.

Shared by `scripts/gpu_check.sh` and the memory benchmarks; needs torch and torchvision
(not the lean libtorch venv of `make setup`, where `import torch` fails).
"""

import argparse
import json
import resource
import statistics
import sys
import time


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def build(args, torch, models):
    ctor = {"r2plus1d_18": models.video.r2plus1d_18, "r3d_18": models.video.r3d_18}[args.model]
    model = ctor(weights=None, num_classes=args.classes)
    if args.checkpointing:
        from torch.utils.checkpoint import checkpoint

        class Checkpointed(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                if not self.training:
                    return self.inner(x)
                return checkpoint(self.inner, x, use_reentrant=False)

        model.stem = Checkpointed(model.stem)
        for name in ["layer1", "layer2", "layer3", "layer4"]:
            layer = getattr(model, name)
            for i in range(len(layer)):
                layer[i] = Checkpointed(layer[i])
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="r2plus1d_18", choices=["r2plus1d_18", "r3d_18"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--precision", default="32", choices=["32", "16-mixed", "bf16-mixed"])
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    try:
        import torch
        from torchvision import models
    except ImportError as e:
        print(json.dumps({"skipped": f"torch/torchvision not importable: {e}"}))
        return 0
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "CUDA not available to torch"}))
        return 0
    if args.precision == "16-mixed" and dev.type != "cuda":
        print(json.dumps({"skipped": "16-mixed needs CUDA"}))
        return 0
    torch.manual_seed(0)
    model = build(args, torch, models).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scaler = torch.amp.GradScaler("cuda", enabled=args.precision == "16-mixed")
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(args.precision)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = rss_bytes()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out = {
        "model": args.model,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "precision": args.precision,
        "checkpointing": args.checkpointing,
        "batch": args.batch,
        "clip": [args.frames, args.size, args.size],
        "seconds_per_step": statistics.median(times),
        "torch": torch.__version__,
    }
    if dev.type == "cuda":
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(dev)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["peak_rss_above_baseline_bytes"] = max(0, peak - base_rss)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
