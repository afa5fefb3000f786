#!/usr/bin/env python3
"""Read an mvdrive cache with numpy + pyarrow only (no mvdrive code), following FORMAT.md
(zstandard for zstd caches, Pillow for jpeg caches).

    python read_cache.py CACHE                     # list sessions, views and records
    python read_cache.py CACHE --session S --view V --frame T --out frame.rgb
                                                   # write timeline frame T as raw HWC RGB bytes
    python read_cache.py CACHE --session S --view V --frame T --keypoints --out kpt.f32
                                                   # write its keypoints (float32 K*C, then the valid flag)
"""
import argparse
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq


def load(cache):
    with open(os.path.join(cache, "meta.json")) as f:
        meta = json.load(f)
    if meta["format_version"] not in (1, 2, 3):
        sys.exit(f"{cache}: format version {meta['format_version']}, this reader knows 1 to 3")
    # The tables are where meta.json's index_files says: index/<name>.parquet (version 1)
    # or index/<name>.<xxh3>.parquet (versions 2 and 3).
    paths = {}
    for f in meta["index_files"]:
        base = os.path.basename(f["path"])
        paths[base.split(".")[0]] = os.path.join(cache, f["path"])
    tables = {}
    for name in ("sessions", "views", "records", "segments", "labels"):
        if name not in paths:
            sys.exit(f"{cache}/meta.json: index_files does not list the {name} table")
        tables[name] = pq.read_table(paths[name]).to_pylist()
    return meta, tables


def record_frames(cache, rec):
    """All frames of a record as a (T, H, W, C) uint8 array (zero-copy for `none`).

    The frame checksums at the end of a version 3 record (`frame_xxh3`) are not checked
    here (that needs the xxhash package); `prep verify` checks them."""
    shape = (rec["frame_count"], rec["height"], rec["width"], rec["channels"])
    path = os.path.join(cache, rec["shard"])
    if rec["compression"] == "none":
        return np.memmap(path, dtype=np.uint8, mode="r", offset=rec["offset"], shape=shape)
    if rec["compression"] in ("zstd", "jpeg"):
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=rec["offset"], shape=(rec["length"],))
        n = rec["frame_count"]
        # The record's body: all of it, less the frame checksums when it has them.
        body = rec["length"] - (8 * n if rec.get("frame_xxh3") else 0)
        off = np.frombuffer(raw[body - 8 * (n + 1):body].tobytes(), dtype="<u8")
        stored = [raw[off[k]:off[k + 1]].tobytes() for k in range(n)]
        if rec["compression"] == "zstd":
            import zstandard  # optional: only needed for zstd caches

            d = zstandard.ZstdDecompressor()
            frames = [np.frombuffer(d.decompress(b), np.uint8) for b in stored]
        else:
            import io

            from PIL import Image  # Pillow: only needed for jpeg caches

            frames = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in stored]
        return np.stack(frames).reshape(shape)
    raise ValueError(f"unknown compression {rec['compression']}")


def keypoints(cache, records, session, view, t):
    """Keypoints of timeline frame t: ((K, C) float32 array, valid), or None without keypoints."""
    for rec in records:
        if (rec["session"], rec["view"], rec["modality"]) == (session, view, "kpt") and \
                rec["frame_start"] <= t < rec["frame_start"] + rec["frame_count"]:
            k, c = rec["height"], rec["width"]
            a = np.memmap(os.path.join(cache, rec["shard"]), dtype="<f4", mode="r", offset=rec["offset"],
                          shape=(rec["frame_count"], k * c + 1))
            row = np.asarray(a[t - rec["frame_start"]])
            return row[:-1].reshape(k, c), bool(row[-1] > 0)
    return None


def frame(cache, records, session, view, t):
    for rec in records:
        if (rec["session"], rec["view"], rec["modality"]) == (session, view, "rgb") and \
                rec["frame_start"] <= t < rec["frame_start"] + rec["frame_count"]:
            return np.asarray(record_frames(cache, rec)[t - rec["frame_start"]])
    raise KeyError(f"no frame {t} for session {session} view {view}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache")
    ap.add_argument("--session")
    ap.add_argument("--view")
    ap.add_argument("--frame", type=int)
    ap.add_argument("--out")
    ap.add_argument("--keypoints", action="store_true", help="with --out: write the frame's keypoints (float32 K*C, then the flag) instead")
    a = ap.parse_args()
    meta, t = load(a.cache)
    if a.session is None:
        print(f"{len(t['sessions'])} sessions, views {meta['views']}, {len(t['records'])} records, "
              f"{len(t['segments'])} segments, img {meta['params']['img_height']}x{meta['params']['img_width']}")
        for s in t["sessions"]:
            print(f"  {s['session']}: {s['timeline_frames']} frames @ {s['fps']} fps")
        return
    if a.keypoints:
        kp = keypoints(a.cache, t["records"], a.session, a.view, a.frame)
        if kp is None:
            sys.exit(f"{a.session}/{a.view} has no keypoints")
        print(f"keypoints of frame {a.frame} of {a.session}/{a.view}: shape {kp[0].shape}, valid {kp[1]}")
        if a.out:
            np.concatenate([kp[0].reshape(-1), np.float32([1.0 if kp[1] else 0.0])]).astype("<f4").tofile(a.out)
        return
    img = frame(a.cache, t["records"], a.session, a.view, a.frame)
    print(f"frame {a.frame} of {a.session}/{a.view}: shape {img.shape}, mean {img.mean():.3f}")
    if a.out:
        img.tofile(a.out)


if __name__ == "__main__":
    main()
