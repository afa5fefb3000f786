#!/usr/bin/env python3
"""The reference for `make bench-loader`: clips/s when the source videos are decoded at train
time, the way the original Python project's DataLoader did it (PyAV: open each view, seek to
the segment, decode, pick T frames spread over it, convert to RGB at the cache's size).

    python bench/pyav_loader.py CACHE DATA_ROOT --split train --frames 8 --epochs 1

It reads the segments of CACHE (so both sides load exactly the same clips) and decodes the
videos named in CACHE's views table under DATA_ROOT. Prints JSON.
"""
import argparse
import json
import os
import time

import av
import numpy as np
import pyarrow.parquet as pq


def clip(path, start_s, end_s, t, size):
    """T frames spread uniformly over [start_s, end_s) of one video, as (T, H, W, 3) uint8."""
    want = [start_s + (j + 0.5) * (end_s - start_s) / t for j in range(t)]
    out = []
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_count = 1
        c.seek(int(max(0.0, start_s - 0.5) / s.time_base), stream=s, backward=True)
        k = 0
        last = None
        for frame in c.decode(s):
            ts = float(frame.pts * s.time_base) if frame.pts is not None else 0.0
            while k < t and ts > want[k] + 1e-6:
                out.append(last if last is not None else frame.to_ndarray(width=size[1], height=size[0], format="rgb24"))
                k += 1
            if k >= t:
                break
            last = frame.to_ndarray(width=size[1], height=size[0], format="rgb24")
        while k < t:
            out.append(last)
            k += 1
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache")
    ap.add_argument("data_root")
    ap.add_argument("--split", default="train")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--views", default="all", help="all, or one view name")
    a = ap.parse_args()
    with open(os.path.join(a.cache, "meta.json")) as f:
        meta = json.load(f)
    size = (meta["params"]["img_height"], meta["params"]["img_width"])
    # The index tables are where meta.json's index_files says (named by content since
    # format 2; see schemas/FORMAT.md).
    tables = {os.path.basename(f["path"]).split(".")[0]: os.path.join(a.cache, f["path"]) for f in meta["index_files"]}
    segs = [s for s in pq.read_table(tables["segments"]).to_pylist() if s["split"] == a.split]
    views = pq.read_table(tables["views"]).to_pylist()
    video = {(v["session"], v["view"]): (os.path.join(a.data_root, v["video"]), v["offset_s"]) for v in views}
    names = meta["views"] if a.views == "all" else [a.views]
    start = time.perf_counter()
    n = 0
    for _ in range(a.epochs):
        for s in segs:
            for v in names:
                path, offset = video[(s["session"], v)]
                clip(path, s["start_s"] - offset, s["end_s"] - offset, a.frames, size)
            n += 1
    secs = time.perf_counter() - start
    print(json.dumps({"clips": n, "views": len(names), "frames": a.frames, "seconds": secs, "clips_per_s": n / secs}))


if __name__ == "__main__":
    main()
