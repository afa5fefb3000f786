#!/usr/bin/env python3
"""Convert SAM-3D-Body per-frame keypoint files into one NumPy array per view for `prep`.

The original Python project stores SAM-3D-Body's output one file per frame:

    ROOT/<person>/<env>/<view>/<frame:06d>_sam3d_body.npz

Each file holds an `output` entry: a pickled dict (an object array) with
`pred_keypoints_3d` ([70, 3]) and `pred_keypoints_2d` ([70, 2]) in SAM-3D-Body's 70-joint
(MHR 70) order. `prep` cannot unpickle Python objects, so this script reads them (numpy
only) and writes, for every view folder:

    OUT/<person>/<env>/<view>.npy   float32 [T, K, C]

row t = source frame t of the view's video, frames 0 .. the last frame file (or
--frames). C is x, y, z, conf (4) with --kind 3d, x, y, conf (3) with --kind 2d; conf is
1 for every joint of a frame that has a file. K is 52 (--joints 52: the original project's
joints 0-4, 5-6, 21-62, 67-69, `keypoint_layout` sam3d52) or 70 (--joints 70, sam3d70).

A missing frame file is written as NaN, which prep masks (the original project read it
as zeros, which a model cannot tell from a real pose). A dict holding several people
([N, 70, 3]) gives the first. Name the .npy in the manifest's `keypoints` column with
its `keypoint_layout`, then run `prep build`:

    python scripts/sam3d_to_npy.py --root sam3d/ --out kpt/ --joints 52
    prep build --manifest manifest.csv --segments segments.csv --out cache/

3-D keypoints are camera coordinates, not pixels: use prep.kpt_normalize=none or
center_scale with them (prep refuses `image`).
"""

import argparse
import re
import sys
from pathlib import Path

import numpy as np

# The original project's 52 of SAM-3D-Body's 70 joints: the head (0-4), the shoulders
# (5-6), both hands with their wrists (21-62), the acromions and the neck (67-69).
KEEP_52 = list(range(0, 7)) + list(range(21, 63)) + [67, 68, 69]
FRAME_FILE = re.compile(r"^(\d+)_sam3d_body\.npz$")


class BadInput(Exception):
    """An input problem, reported as one line naming the file."""


def frame_keypoints(path: Path, key: str) -> np.ndarray:
    """The [70, D] keypoints `key` of one per-frame file."""
    try:
        with np.load(path, allow_pickle=True) as z:
            if "output" not in z.files:
                raise BadInput(f"{path}: no `output` entry (it has: {', '.join(z.files)}); is it a SAM-3D-Body file?")
            out = z["output"]
    except BadInput:
        raise
    except Exception as e:  # zip, pickle or format errors
        raise BadInput(
            f"{path}: not a readable .npz ({type(e).__name__}); re-export it, or remove it to have the frame masked"
        ) from e
    if isinstance(out, np.ndarray) and out.dtype == object:
        out = out.item() if out.shape == () else out.flat[0]
    if isinstance(out, (list, tuple)):
        if not out:
            raise BadInput(f"{path}: `output` is an empty list (nobody detected?)")
        out = out[0]
    if not isinstance(out, dict) or key not in out:
        keys = ", ".join(map(str, out.keys())) if isinstance(out, dict) else type(out).__name__
        raise BadInput(f"{path}: `output` has no `{key}` (it has: {keys})")
    kp = np.asarray(out[key], dtype=np.float64)
    while kp.ndim > 2:
        kp = kp[0]  # [1, 70, D] or several people: the first
    if kp.ndim != 2 or kp.shape[0] != 70:
        raise BadInput(f"{path}: `{key}` has shape {list(np.shape(out[key]))}, expected [70, D]")
    return kp


def convert_view(folder: Path, out: Path, joints: list, kind: str, frames: int) -> tuple:
    """Write one view's array; returns (T, missing frames)."""
    files = {}
    for f in folder.iterdir():
        m = FRAME_FILE.match(f.name)
        if m:
            files[int(m.group(1))] = f
    t = max(max(files) + 1, frames)
    dims = 3 if kind == "3d" else 2
    key = f"pred_keypoints_{kind}"
    arr = np.full((t, len(joints), dims + 1), np.nan, dtype=np.float32)
    for i, f in files.items():
        kp = frame_keypoints(f, key)
        if kp.shape[1] < dims:
            raise BadInput(f"{f}: `{key}` has {kp.shape[1]} values per joint, expected {dims}")
        arr[i, :, :dims] = kp[joints, :dims]
        arr[i, :, dims] = 1.0
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, arr)
    return t, t - len(files)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="ROOT/<person>/<env>/<view>/<frame:06d>_sam3d_body.npz")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/<person>/<env>/<view>.npy")
    p.add_argument("--joints", type=int, choices=(52, 70), default=52, help="52: the original project's subset (sam3d52); 70: all (sam3d70)")
    p.add_argument("--kind", choices=("3d", "2d"), default="3d", help="pred_keypoints_3d (x, y, z) or pred_keypoints_2d (x, y)")
    p.add_argument("--frames", type=int, default=0, help="write at least this many frames (missing ones at the end as NaN)")
    a = p.parse_args(argv)
    if not a.root.is_dir():
        print(f"{a.root}: not a folder; give --root the folder holding <person>/<env>/<view>/", file=sys.stderr)
        return 1
    joints = KEEP_52 if a.joints == 52 else list(range(70))
    views = sorted({f.parent for f in a.root.glob("*/*/*/*_sam3d_body.npz")})
    if not views:
        print(f"{a.root}: no <person>/<env>/<view>/<frame>_sam3d_body.npz files found", file=sys.stderr)
        return 1
    layout = f"sam3d{a.joints}"
    try:
        for v in views:
            rel = v.relative_to(a.root)
            dest = a.out / rel.parent / f"{rel.name}.npy"
            t, missing = convert_view(v, dest, joints, a.kind, a.frames)
            print(f"{dest}: {t} frames, {missing} missing (NaN), keypoint_layout {layout}")
    except BadInput as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
