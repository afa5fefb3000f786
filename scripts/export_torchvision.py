#!/usr/bin/env python3
"""Export a torchvision video ResNet (r3d_18 or r2plus1d_18) to safetensors for mvdrive.

mvdrive's trainer (train/src/backbone/r3d.rs) rebuilds torchvision's video ResNets in tch
with exactly torchvision's module names, so the state dict written here loads by name
(`mvdrive_train::backbone::load_weights`, or `tch::nn::VarStore::load`).

What is written to --out DIR:

  <arch>.safetensors   the model's state_dict, names unchanged (stem.0.weight,
                       layer1.0.conv1.0.0.weight, ..., fc.weight, fc.bias) EXCEPT that every
                       `*.num_batches_tracked` is dropped: tch's BatchNorm has no such variable,
                       and with momentum=0.1 (torchvision's setting) PyTorch never reads it.
  input.safetensors    {"input": float32 [1, 3, 8, 112, 112]}, standard normal drawn from
                       torch.Generator seeded with --input-seed (already "normalised" values).
  logits.safetensors   {"logits": float32 [1, num_classes], "features": float32 [1, 512]}:
                       the model's output (and pooled features before fc) on that input in
                       eval mode (BatchNorm uses running statistics) under torch.no_grad().

Weights: --weights KINETICS400_V1 downloads torchvision's Kinetics-400 weights (needs network
access to download.pytorch.org, or a warm torch hub cache); without it the model is randomly
initialised by torchvision's own init after torch.manual_seed(--seed). Random BatchNorm
running stats would be trivial (mean 0, var 1), so for a meaningful comparison without
pretrained weights, --randomize-bn-stats fills running_mean/running_var with random values.

Requirements: Python with torch, torchvision and safetensors importable, e.g.
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.11.0 torchvision safetensors
This does NOT run in the repository's lean .venv: that one holds the torch wheel installed
with --no-deps only to provide libtorch to the Rust build, and `import torch` fails there.

Examples:
    python scripts/export_torchvision.py --arch r2plus1d_18 --out /tmp/tv-r2p1d --seed 0
    python scripts/export_torchvision.py --arch r3d_18 --weights KINETICS400_V1 --out weights/
"""

import argparse
import sys
from pathlib import Path

ARCHS = ("r3d_18", "r2plus1d_18")
INPUT_SHAPE = (1, 3, 8, 112, 112)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arch", choices=ARCHS, required=True, help="torchvision builder name")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument(
        "--weights",
        default=None,
        help="torchvision weights enum member, e.g. KINETICS400_V1 (default: random init)",
    )
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed for random init")
    p.add_argument(
        "--num-classes",
        type=int,
        default=400,
        help="size of fc for random init (pretrained weights always have 400)",
    )
    p.add_argument("--input-seed", type=int, default=1234, help="seed of input.safetensors")
    p.add_argument(
        "--randomize-bn-stats",
        action="store_true",
        help="fill BatchNorm running_mean/var with random values (random init only)",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
        from safetensors.torch import save_file
        from torchvision.models import video
    except ImportError as e:  # the repo's lean .venv lands here
        sys.exit(
            f"export_torchvision.py: cannot import {e.name!r}: run it with a Python that has "
            "torch, torchvision and safetensors (not the repo's lean .venv), e.g.\n"
            "  python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.11.0 torchvision "
            "safetensors"
        )

    builder = getattr(video, args.arch)
    torch.manual_seed(args.seed)
    if args.weights:
        enum_name = {"r3d_18": "R3D_18_Weights", "r2plus1d_18": "R2Plus1D_18_Weights"}[args.arch]
        enum = getattr(video, enum_name)
        try:
            weights = enum[args.weights]
        except KeyError:
            sys.exit(
                f"--weights {args.weights}: unknown for {args.arch}; "
                f"use one of {', '.join(m for m in enum.__members__)}"
            )
        try:
            model = builder(weights=weights)
        except OSError as e:  # urllib.error.URLError is an OSError
            sys.exit(
                f"--weights {args.weights}: cannot fetch {weights.url}: {e}\n"
                "Download it where the network allows and put it in the torch hub cache "
                f"({torch.hub.get_dir()}/checkpoints/), or export with random weights."
            )
    else:
        model = builder(weights=None, num_classes=args.num_classes)
        if args.randomize_bn_stats:
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm3d):
                        m.running_mean.normal_(0.0, 0.1)
                        m.running_var.uniform_(0.5, 1.5)
    model.eval()

    state = {
        k: v.detach().contiguous().clone()
        for k, v in model.state_dict().items()
        if not k.endswith(".num_batches_tracked")
    }
    dropped = len(model.state_dict()) - len(state)

    gen = torch.Generator().manual_seed(args.input_seed)
    x = torch.randn(INPUT_SHAPE, generator=gen, dtype=torch.float32)
    with torch.no_grad():
        features = {}
        hook = model.avgpool.register_forward_hook(
            lambda _m, _i, out: features.setdefault("f", out.flatten(1))
        )
        logits = model(x)
        hook.remove()

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "arch": args.arch,
        "weights": args.weights or f"random(seed={args.seed})",
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
    }
    weights_path = args.out / f"{args.arch}.safetensors"
    save_file(state, str(weights_path), metadata=meta)
    save_file({"input": x.contiguous()}, str(args.out / "input.safetensors"), metadata=meta)
    save_file(
        {"logits": logits.contiguous(), "features": features["f"].contiguous()},
        str(args.out / "logits.safetensors"),
        metadata=meta,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch}: {len(state)} tensors ({dropped} num_batches_tracked dropped), "
        f"{n_params} parameters -> {weights_path}; input {list(x.shape)} seed {args.input_seed}, "
        f"logits {list(logits.shape)} in {args.out}"
    )


if __name__ == "__main__":
    main()
