#!/usr/bin/env python3
"""PyTorch eager peer of mvdrive's training step, for side-by-side benchmarks.

torchvision's R(2+1)D-18 or R3D-18, or `transformer`: a PyTorch copy of mvdrive's video
transformer (`model.backbone=transformer` with its default settings, see `video_transformer`
below; same parameters, 2,680,516 with 4 classes at 8 x 112 x 112). Random weights,
`num_classes` outputs, one view, the same batch and clip shape as the mvdrive run it is
compared with, cross-entropy and AdamW (lr 1e-3, weight decay 0.05, as `train fit`'s
defaults), eager mode:

- precision `32`: float32;
- `16-mixed`: CUDA autocast float16 with a GradScaler;
- `bf16-mixed`: autocast bfloat16 (CUDA or CPU);
- `--checkpointing`: `torch.utils.checkpoint(use_reentrant=False)` around the segments
  mvdrive checkpoints: the stem and each BasicBlock of the ResNets; the embedding, each
  block and the final norm of the transformer.

Prints one line of JSON: median seconds per step over `--steps` timed steps (after one
warm-up step), and peak memory: on CUDA the caching allocator's peak allocated and
reserved bytes (`torch.cuda.max_memory_allocated` / `max_memory_reserved`, reset after
the model is built), on CPU the process's peak RSS above its RSS before the model is built
(as mvdrive's `train probe` measures).

Shared by `scripts/gpu_check.sh` and the memory benchmarks (`bench/memory_vs_torch.sh`); needs
torch and torchvision: `.bench-venv` (`make bench-venv`), not the lean libtorch venv of
`make setup`, where `import torch` fails.
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


def video_transformer(torch, classes, clip, dim=192, layers=4, heads=3, ff_dim=768,
                      dropout=0.1, tubelet=(2, 16, 16), pool="cls"):
    """mvdrive's divided space-time video transformer (TimeSformer-style) and its classifier.

    A copy of `train/src/model/backbones/transformer.rs` and `tokens.rs` with the defaults
    of `configs/config.yaml` (`model.transformer_*`): tubelet embedding (a Conv3d with
    kernel = stride = tubelet, zero padding at the end up to a multiple of the tubelet) plus
    a learned factorised positional embedding (`pos_time` [t, dim] + `pos_space` [h*w, dim]),
    tokens time-major, a CLS token prepended, dropout; `layers` pre-LayerNorm blocks (eps
    1e-6) of temporal attention (the t tokens of one spatial position), spatial attention
    (the h*w tokens of one time step plus the CLS token, whose t outputs are averaged) and an
    MLP (dim -> ff_dim -> dim, exact GELU), each with a residual and dropout on its output
    (and inside the MLP); a final LayerNorm; the CLS token (or the token mean) as feature;
    `fc`: Linear(dim, classes). Attention: `qkv` Linear(dim, 3 dim), `scaled_dot_product_
    attention`, `proj` Linear(dim, dim). Variable names and shapes are mvdrive's (`embed.*`,
    `block0.*` .., `norm.*`, `fc.*`); initialisation as mvdrive's (ViT-style).

    `segments()`: `embed`, `block0` .., `norm`, the units mvdrive checkpoints.
    """
    nn = torch.nn
    F = torch.nn.functional
    assert dim % heads == 0

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, l, d = x.shape
            q, k, v = self.qkv(x).reshape(b, l, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v)
            out = self.proj(out.transpose(1, 2).reshape(b, l, d))
            return F.dropout(out, dropout, self.training)

    grid = [(n + k - 1) // k for n, k in zip(clip, tubelet)]
    t, s = grid[0], grid[1] * grid[2]
    has_cls = pool == "cls"

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv3d(3, dim, kernel_size=tubelet, stride=tubelet)
            self.pos_time = nn.Parameter(torch.randn(t, dim) * 0.02)
            self.pos_space = nn.Parameter(torch.randn(s, dim) * 0.02)
            if has_cls:
                self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)

        def forward(self, x):
            pad = [g * k - n for g, k, n in zip(grid, tubelet, x.shape[2:])]
            if any(pad):
                x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
            tokens = self.proj(x).flatten(2).transpose(1, 2)  # [N, t*h*w, dim], time-major
            pos = (self.pos_time.unsqueeze(1) + self.pos_space.unsqueeze(0)).reshape(1, t * s, dim)
            tokens = tokens + pos
            if has_cls:
                tokens = torch.cat([self.cls_token.expand(tokens.shape[0], 1, dim), tokens], 1)
            return F.dropout(tokens, dropout, self.training)

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(dim, ff_dim)
            self.fc2 = nn.Linear(ff_dim, dim)

        def forward(self, x):
            h = F.dropout(F.gelu(self.fc1(x)), dropout, self.training)
            return F.dropout(self.fc2(h), dropout, self.training)

    class DividedBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm_time = nn.LayerNorm(dim, eps=1e-6)
            self.attn_time = Attention()
            self.norm_space = nn.LayerNorm(dim, eps=1e-6)
            self.attn_space = Attention()
            self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp()

        def forward(self, x):
            n, _, d = x.shape
            if has_cls:
                cls, patches = x[:, :1], x[:, 1:]
            else:
                cls, patches = None, x
            # Temporal attention: the t tokens at each spatial position.
            xt = patches.reshape(n, t, s, d).permute(0, 2, 1, 3).reshape(n * s, t, d)
            yt = self.attn_time(self.norm_time(xt))
            patches = patches + yt.reshape(n, s, t, d).permute(0, 2, 1, 3).reshape(n, t * s, d)
            # Spatial attention: the s tokens of each time step (+ the CLS token).
            xs = patches.reshape(n * t, s, d)
            if has_cls:
                xs = torch.cat([cls.expand(n, t, d).reshape(n * t, 1, d), xs], 1)
            ys = self.attn_space(self.norm_space(xs))
            if has_cls:
                cls_out = ys[:, :1].reshape(n, t, d).mean(1, keepdim=True)
                x = torch.cat([cls + cls_out, patches + ys[:, 1:].reshape(n, t * s, d)], 1)
            else:
                x = patches + ys.reshape(n, t * s, d)
            return x + self.mlp(self.norm_mlp(x))

    class VideoTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = Embed()
            for i in range(layers):
                setattr(self, f"block{i}", DividedBlock())
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.fc = nn.Linear(dim, classes)
            for m in self.modules():  # mvdrive's initialisation (tokens.rs, r3d::classifier)
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.01 if m is self.fc else 0.02)
                    nn.init.zeros_(m.bias)

        def segment_names(self):
            return ["embed"] + [f"block{i}" for i in range(layers)] + ["norm"]

        def forward(self, x):
            for name in self.segment_names():
                x = getattr(self, name)(x)
            return self.fc(x[:, 0] if has_cls else x.mean(1))

    return VideoTransformer()


def checkpointed(torch, inner):
    """`inner` run under `torch.utils.checkpoint(use_reentrant=False)` when training."""
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if not self.training:
                return self.inner(x)
            return checkpoint(self.inner, x, use_reentrant=False)

    return Checkpointed()


def build(args, torch, models):
    if args.model == "transformer":
        model = video_transformer(torch, args.classes, (args.frames, args.size, args.size))
        if args.checkpointing:
            for name in model.segment_names():
                setattr(model, name, checkpointed(torch, getattr(model, name)))
        return model
    ctor = {"r2plus1d_18": models.video.r2plus1d_18, "r3d_18": models.video.r3d_18}[args.model]
    model = ctor(weights=None, num_classes=args.classes)
    if args.checkpointing:
        model.stem = checkpointed(torch, model.stem)
        for name in ["layer1", "layer2", "layer3", "layer4"]:
            layer = getattr(model, name)
            for i in range(len(layer)):
                layer[i] = checkpointed(torch, layer[i])
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="r2plus1d_18", choices=["r2plus1d_18", "r3d_18", "transformer"])
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
    # On the CPU the baseline is the RSS before the model exists, as in mvdrive's probe: both
    # figures then hold the weights, gradients, optimizer state and activations.
    base_rss = rss_bytes()
    model = build(args, torch, models).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scaler = torch.amp.GradScaler("cuda", enabled=args.precision == "16-mixed")
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(args.precision)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

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
        return float(loss.detach())

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
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
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
