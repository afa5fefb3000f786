#!/usr/bin/env python3
"""Export pytorchvideo's X3D-S or X3D-M (Kinetics-400 weights) to safetensors for mvdrive.

mvdrive's X3D (train/src/model/backbones/x3d.rs) computes what pytorchvideo's `x3d_s` /
`x3d_m` compute, under other names; `model.pretrained` recognises pytorchvideo's names and
renames them on load (train/src/model/pytorchvideo.rs; the table is in
docs/x3d-pytorchvideo.md). So this script writes the state dict with pytorchvideo's names,
dropping only `num_batches_tracked`:

    python3 scripts/export_pytorchvideo.py --arch x3d_s --weights X3D_S.pyth --out weights/
    train fit --cache CACHE model.backbone=x3d model.pretrained=weights/x3d_s.safetensors \
        data.img_size=160 data.uniform_temporal_subsample_num=13

--weights is a pytorchvideo model-zoo checkpoint (X3D_S.pyth / X3D_M.pyth from
dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/; the state dict is under
"model_state"); without it the model keeps pytorchvideo's random initialisation (seeded).
The head's 400-class `proj` becomes mvdrive's `fc`, kept only when the classes number 400.

Notes: pytorchvideo normalises X3D input with mean 0.45 and std 0.225 on every channel,
which is what mvdrive's X3D uses. pytorchvideo pools its head with a fixed kernel at its
build size; mvdrive pools globally (the same at that size, fully convolutional at others).

Requirements: Python with torch, torchvision, pytorchvideo (0.1.5 checked) and safetensors,
e.g. python3 -m venv /tmp/pv && /tmp/pv/bin/pip install torch==2.11.0 torchvision==0.26.0
pytorchvideo==0.1.5 safetensors. Not the repository's lean .venv (libtorch only). This
script was not run where it was written (no network); the rename it relies on is tested in
Rust on a file with pytorchvideo's names (train/tests/fine_tune.rs).
"""

import argparse
import sys
from pathlib import Path

ARCHS = {"x3d_s": (13, 160), "x3d_m": (16, 224)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), required=True)
    ap.add_argument("--weights", type=Path, help="pytorchvideo .pyth checkpoint (model_state)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import torch
        from pytorchvideo.models.x3d import create_x3d
        from safetensors.torch import save_file
    except ImportError as e:
        print(f"export_pytorchvideo: {e}; see the requirements in this script's header", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    frames, size = ARCHS[args.arch]
    model = create_x3d(input_clip_length=frames, input_crop_size=size)
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=False)
        state = state.get("model_state", state)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            print(f"export_pytorchvideo: {args.weights}: missing {missing}, unexpected {unexpected}", file=sys.stderr)
            return 1
    tensors = {
        k: v.detach().contiguous().float()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{args.arch}.safetensors"
    save_file(tensors, str(out))
    print(f"export_pytorchvideo: {len(tensors)} tensors -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
