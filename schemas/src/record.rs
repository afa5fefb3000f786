//! The inside of one record, in one place: how frame `i` is found (raw frames back to
//! back, or the per-frame table of a zstd record), how it is read with a positioned read,
//! and how a keypoint frame is encoded and decoded. [`RecordView`](crate::shard::RecordView)
//! (the mmap reader of `verify`, `export`, [`Cache`](crate::Cache)) and
//! [`read_frame_into`] (the `pread` reader of `train`'s loader) both go through the frame
//! table functions here, and [`ShardWriter`](crate::shard::ShardWriter) writes the table
//! with [`encode_frame_table`].
//!
//! The zstd frame table (see `schemas/FORMAT.md`, "Records"): `frame_count + 1`
//! little-endian `u64` offsets after the frames, relative to the record start.
//! Frame `k` is the standalone zstd frame at bytes `[off[k], off[k+1])`; `off[frame_count]`
//! is where the table itself starts, so the record's body is
//! `off[frame_count] + 8 * (frame_count + 1)` bytes.
//!
//! The frame checksums (format 3, [`RecordRow::frame_xxh3`]): after the body, one
//! little-endian `u64` per frame, the XXH3-64 of the frame's stored bytes (raw or
//! compressed) with a seed that binds it to its place ([`FrameSeed`]). Every read checks
//! it, so a flipped byte or an index pointing at other bytes stops the reader.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::checksum::{xxh3, xxh3_seeded};
use crate::error::{io, Error, Result};
use crate::index::RecordRow;
use crate::jpeg::decode_jpeg;
use crate::shard::Compression;

/// Bytes of one offset of the zstd frame table.
pub const OFFSET_BYTES: usize = 8;

/// Bytes of one frame checksum.
pub const CHECKSUM_BYTES: usize = 8;

/// What a frame checksum is bound to: its (session, view, modality) and timeline frame.
/// The checksum of frame `t` is XXH3-64 of the stored bytes with seed
/// `XXH3-64(session NUL view NUL modality) + t` (wrapping), so bytes of another frame,
/// record or session never pass as this frame's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSeed {
    stream: u64,
    frame_start: u64,
}

impl FrameSeed {
    /// The seed of the record of (session, view, modality) that starts at timeline frame
    /// `frame_start`.
    pub fn new(session: &str, view: &str, modality: &str, frame_start: u64) -> Self {
        let key = [session, view, modality].join("\0");
        FrameSeed {
            stream: xxh3(key.as_bytes()),
            frame_start,
        }
    }

    /// The seed of record `rec`.
    pub fn of(rec: &RecordRow) -> Self {
        FrameSeed::new(&rec.session, &rec.view, &rec.modality, rec.frame_start)
    }

    /// The checksum of frame `k` of the record, over its `stored` bytes.
    pub fn checksum(&self, k: usize, stored: &[u8]) -> u64 {
        let seed = self
            .stream
            .wrapping_add(self.frame_start)
            .wrapping_add(k as u64);
        xxh3_seeded(stored, seed)
    }
}

/// Bytes of the checksum table of a record of `frame_count` frames (format 3).
pub fn checksum_table_len(frame_count: u32) -> u64 {
    frame_count as u64 * CHECKSUM_BYTES as u64
}

/// The bytes of a record before its checksum table: all of them for records without one;
/// `None` if the record is too short to hold the table.
pub fn body_len(length: u64, frame_count: u32, frame_xxh3: bool) -> Option<u64> {
    if frame_xxh3 {
        length.checked_sub(checksum_table_len(frame_count))
    } else {
        Some(length)
    }
}

/// The error of a frame whose stored bytes do not match their checksum.
pub fn checksum_error(path: &Path, what: &str) -> Error {
    Error::format(
        path,
        format!(
            "{what} does not match its checksum: the shard is damaged or was changed \
             after the index was written; run `prep verify` (and `prep build --rehash` to repair)"
        ),
    )
}

/// Bytes of the frame table of a zstd record of `frame_count` frames.
pub fn frame_table_len(frame_count: u32) -> u64 {
    (frame_count as u64 + 1) * OFFSET_BYTES as u64
}

/// Where the frame table starts inside a zstd record of `length` bytes holding
/// `frame_count` frames (relative to the record start); `None` if the record is too short
/// to hold the table.
pub fn frame_table_start(length: u64, frame_count: u32) -> Option<u64> {
    length.checked_sub(frame_table_len(frame_count))
}

/// The frame table bytes of the frame offsets `offsets` (`frame_count + 1` of them, the
/// last being where the table starts), as the writer appends them to a zstd record.
pub fn encode_frame_table(offsets: &[u64]) -> Vec<u8> {
    offsets.iter().flat_map(|o| o.to_le_bytes()).collect()
}

/// Offset number `k` of the frame table bytes `table` (which start at the table start);
/// `None` past the end of `table`.
pub fn table_offset(table: &[u8], k: usize) -> Option<u64> {
    let at = k.checked_mul(OFFSET_BYTES)?;
    let b: [u8; OFFSET_BYTES] = table.get(at..at + OFFSET_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Check a whole frame table of `frame_count` frames: offsets never go backwards and the
/// last one is `table_start` (the table follows the last frame).
pub fn check_frame_table(
    table: &[u8],
    frame_count: u32,
    table_start: u64,
    path: &Path,
) -> Result<()> {
    let bad = || Error::format(path, "compressed record: bad offset table");
    if table.len() as u64 != frame_table_len(frame_count)
        || table_offset(table, frame_count as usize) != Some(table_start)
    {
        return Err(bad());
    }
    let mut prev = 0;
    for k in 0..=frame_count as usize {
        let o = table_offset(table, k).ok_or_else(bad)?;
        if o < prev {
            return Err(Error::format(
                path,
                "compressed record: offsets go backwards",
            ));
        }
        prev = o;
    }
    Ok(())
}

/// The byte range `[off[k], off[k+1])` of compressed frame `k`, from the two offsets
/// `pair` (16 bytes: `off[k]`, `off[k+1]`), checked to lie before the table at
/// `table_start`.
pub fn frame_span(pair: &[u8], k: usize, table_start: u64, path: &Path) -> Result<(u64, u64)> {
    match (table_offset(pair, 0), table_offset(pair, 1)) {
        (Some(a), Some(b)) if a <= b && b <= table_start => Ok((a, b)),
        _ => Err(Error::format(
            path,
            format!("compressed record: frame {k} has a bad offset table entry"),
        )),
    }
}

/// Decode one stored frame of a `compression` record into `out`, which must come out
/// exactly full.
pub fn decode_frame(
    compression: Compression,
    packed: &[u8],
    out: &mut [u8],
    k: usize,
    path: &Path,
) -> Result<()> {
    match compression {
        Compression::Jpeg(_) => decode_jpeg(packed, out, k, path),
        _ => decompress_frame(packed, out, k, path),
    }
}

/// Decompress one zstd frame into `out`, which must come out exactly full.
pub fn decompress_frame(packed: &[u8], out: &mut [u8], k: usize, path: &Path) -> Result<()> {
    let n = zstd::bulk::decompress_to_buffer(packed, out).map_err(io(path))?;
    if n != out.len() {
        return Err(Error::format(
            path,
            format!(
                "zstd frame {k} decodes to {n} bytes, expected {}",
                out.len()
            ),
        ));
    }
    Ok(())
}

/// The largest frame a record may declare: 8192 x 8192 pixels of 4 bytes (prep's largest
/// `data.img_size`). A larger `height x width x channels` in an index is damage, refused
/// before anything of that size is allocated.
pub const MAX_FRAME_BYTES: usize = 8192 * 8192 * 4 + 4;

/// Checks a record's declared frame size against [`MAX_FRAME_BYTES`].
pub fn check_frame_bytes(frame_bytes: usize, path: &Path) -> Result<()> {
    if frame_bytes == 0 || frame_bytes > MAX_FRAME_BYTES {
        return Err(Error::format(
            path,
            format!("a frame of {frame_bytes} bytes is not possible (the index is damaged); run `prep verify`"),
        ));
    }
    Ok(())
}

/// Read frame `frame` of record `rec` from its open shard `file` into `out` (exactly
/// [`RecordRow::frame_bytes`] bytes), with positioned reads (`pread`): nothing is mapped
/// and the file position is not used, so one `File` can serve many threads.
///
/// Raw records are read straight into `out`. For zstd records the two frame-table entries
/// of the frame are read, checked against the record and the table, and the compressed
/// frame is read into `scratch` (grown as needed, reused across calls) and decompressed
/// into `out`. With `check` (what every reader but a benchmark passes), a record with
/// frame checksums has the frame's stored bytes checked against theirs before they are
/// used. Errors name `rec.shard` and the record.
///
/// Returns the number of frame bytes read from the file: the frame for raw records; the
/// compressed frame plus its 16 table bytes for zstd (the 8 bytes of a checksum are not
/// counted).
pub fn read_frame_into(
    file: &File,
    rec: &RecordRow,
    frame: usize,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
    check: bool,
) -> Result<usize> {
    let path = Path::new(&rec.shard);
    let fb = rec.frame_bytes();
    check_frame_bytes(fb, path)?;
    if frame >= rec.frame_count as usize {
        return Err(Error::format(
            path,
            format!(
                "frame {frame} out of range (record has {})",
                rec.frame_count
            ),
        ));
    }
    if out.len() != fb {
        return Err(Error::format(
            path,
            format!(
                "a buffer of {} bytes cannot take a frame of {fb} bytes",
                out.len()
            ),
        ));
    }
    let body = body_len(rec.length, rec.frame_count, rec.frame_xxh3).ok_or_else(|| {
        Error::format(
            path,
            "record too short for its frame checksums; run `prep verify`",
        )
    })?;
    let check = check && rec.frame_xxh3;
    let verify = |stored: &[u8]| -> Result<()> {
        if !check {
            return Ok(());
        }
        let mut want = [0u8; CHECKSUM_BYTES];
        let at = shard_offset(rec, body + (frame * CHECKSUM_BYTES) as u64)?;
        file.read_exact_at(&mut want, at).map_err(io(path))?;
        if FrameSeed::of(rec).checksum(frame, stored) != u64::from_le_bytes(want) {
            let what = format!(
                "frame {} of session `{}` view `{}` ({}, chunk {})",
                rec.frame_start + frame as u64,
                rec.session,
                rec.view,
                rec.modality,
                rec.chunk
            );
            return Err(checksum_error(path, &what));
        }
        Ok(())
    };
    match Compression::from_column(&rec.compression) {
        Some(Compression::None) => {
            if (rec.frame_count as u64).checked_mul(fb as u64) != Some(body) {
                return Err(Error::format(
                    path,
                    format!(
                        "record of {} bytes cannot hold {} frames of {fb} bytes",
                        rec.length, rec.frame_count
                    ),
                ));
            }
            file.read_exact_at(out, shard_offset(rec, (frame * fb) as u64)?)
                .map_err(io(path))?;
            verify(out)?;
            Ok(fb)
        }
        Some(comp @ (Compression::Zstd(_) | Compression::Jpeg(_))) => {
            let table_start = frame_table_start(body, rec.frame_count)
                .ok_or_else(|| Error::format(path, "compressed record: bad offset table"))?;
            let mut pair = [0u8; 2 * OFFSET_BYTES];
            let at = shard_offset(rec, table_start + (frame * OFFSET_BYTES) as u64)?;
            file.read_exact_at(&mut pair, at).map_err(io(path))?;
            let (a, b) = frame_span(&pair, frame, table_start, path)?;
            scratch.resize((b - a) as usize, 0);
            file.read_exact_at(scratch, shard_offset(rec, a)?)
                .map_err(io(path))?;
            verify(scratch)?;
            decode_frame(comp, scratch, out, frame, path)?;
            Ok(scratch.len() + pair.len())
        }
        None => Err(Error::format(
            path,
            format!("unknown compression `{}`", rec.compression),
        )),
    }
}

/// Encode one keypoint frame: the `K * C` `values`, then the validity flag (1.0 when
/// `valid`, else 0.0), each a little-endian `f32`, into `out` (cleared first).
pub fn encode_keypoints(values: &[f32], valid: bool, out: &mut Vec<u8>) {
    out.clear();
    let flag = if valid { 1.0f32 } else { 0.0 };
    for v in values.iter().chain(std::iter::once(&flag)) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Byte `rel` of record `rec` as an offset in its shard; an error if it does not fit.
fn shard_offset(rec: &RecordRow, rel: u64) -> Result<u64> {
    rec.offset.checked_add(rel).ok_or_else(|| {
        Error::format(
            &rec.shard,
            format!("record offset {} + {rel} is out of range", rec.offset),
        )
    })
}

/// Decode one keypoint frame (`K * C + 1` little-endian `f32`: the values, then the
/// validity flag) into `values` (`K * C` of them); returns whether the frame is valid
/// (flag > 0). Errors if `frame` is not exactly `(values.len() + 1) * 4` bytes.
pub fn decode_keypoints(frame: &[u8], values: &mut [f32], path: &Path) -> Result<bool> {
    if frame.len() != (values.len() + 1) * 4 {
        return Err(Error::format(
            path,
            format!(
                "a keypoint frame of {} bytes does not hold {} values and a flag",
                frame.len(),
                values.len()
            ),
        ));
    }
    let mut words = frame
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    for (v, w) in values.iter_mut().zip(&mut words) {
        *v = w;
    }
    Ok(words.next().unwrap_or(0.0) > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::tests::frames;
    use crate::shard::{RecordView, ShardWriter};

    /// Two records (3 and 5 frames of 1000 bytes); the row of the second.
    fn write(dir: &Path, comp: Compression) -> (RecordRow, Vec<Vec<u8>>) {
        let mut w = ShardWriter::new(dir, "rgb-t", 1 << 30, comp);
        let mut last = None;
        for (start, f) in [(0, frames(3, 1000)), (3, frames(5, 1000))] {
            let seed = FrameSeed::new("s", "v", "rgb", start);
            w.begin_record(1000, f.len() as u32, seed).unwrap();
            for x in &f {
                w.push_frame(x).unwrap();
            }
            last = Some((w.end_record().unwrap(), f));
        }
        w.finish().unwrap();
        let (loc, f) = last.unwrap();
        let row = RecordRow {
            session: "s".into(),
            view: "v".into(),
            modality: "rgb".into(),
            chunk: 1,
            shard: dir.join(&loc.shard).display().to_string(),
            offset: loc.offset,
            length: loc.length,
            frame_start: 3,
            frame_count: 5,
            height: 10,
            width: 100,
            channels: 1,
            compression: comp.column_name().into(),
            xxh3: loc.xxh3,
            frame_xxh3: true,
        };
        (row, f)
    }

    #[test]
    fn positioned_reads_match_the_mmap_view_for_raw_and_zstd() {
        for comp in [Compression::None, Compression::Zstd(3)] {
            let dir = tempfile::tempdir().unwrap();
            let (row, want) = write(dir.path(), comp);
            let file = File::open(&row.shard).unwrap();
            let data = std::fs::read(&row.shard).unwrap();
            let bytes = &data[row.offset as usize..(row.offset + row.length) as usize];
            let seed = Some(FrameSeed::of(&row));
            let view = RecordView::new(bytes, 5, 1000, comp, seed, dir.path()).unwrap();
            let (mut out, mut scratch) = (vec![0u8; 1000], Vec::new());
            for (i, f) in want.iter().enumerate() {
                let n = read_frame_into(&file, &row, i, &mut out, &mut scratch, true).unwrap();
                assert_eq!(&out, f);
                assert_eq!(&*view.frame(i, dir.path()).unwrap(), f.as_slice());
                match comp {
                    Compression::None => assert_eq!(n, 1000),
                    _ => assert_eq!(n, scratch.len() + 16),
                }
            }
        }
    }

    #[test]
    fn bad_requests_and_bad_tables_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (row, _) = write(dir.path(), Compression::Zstd(3));
        let file = File::open(&row.shard).unwrap();
        let (mut out, mut scratch) = (vec![0u8; 1000], Vec::new());
        let e = read_frame_into(&file, &row, 5, &mut out, &mut scratch, true).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = read_frame_into(&file, &row, 0, &mut out[..999], &mut scratch, true).unwrap_err();
        assert!(e.to_string().contains("cannot take a frame"), "{e}");
        let mut odd = row.clone();
        odd.compression = "lz4".into();
        assert!(read_frame_into(&file, &odd, 0, &mut out, &mut scratch, true).is_err());
        let mut short = row.clone();
        short.length = 8;
        assert!(read_frame_into(&file, &short, 0, &mut out, &mut scratch, true).is_err());

        // A table entry pointing past the table: refused by both readers.
        let mut data = std::fs::read(&row.shard).unwrap();
        let body = body_len(row.length, row.frame_count, true).unwrap();
        let start = frame_table_start(body, row.frame_count).unwrap();
        let at = (row.offset + start) as usize + OFFSET_BYTES;
        data[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&row.shard, &data).unwrap();
        let file = File::open(&row.shard).unwrap();
        let e = read_frame_into(&file, &row, 0, &mut out, &mut scratch, true).unwrap_err();
        assert!(e.to_string().contains("bad offset table entry"), "{e}");
        let bytes = &data[row.offset as usize..(row.offset + row.length) as usize];
        let comp = Compression::Zstd(3);
        let seed = Some(FrameSeed::of(&row));
        assert!(RecordView::new(bytes, 5, 1000, comp, seed, dir.path()).is_err());
    }

    #[test]
    fn a_flipped_byte_or_a_moved_offset_fails_the_frame_checksum() {
        for comp in [Compression::None, Compression::Zstd(3)] {
            let dir = tempfile::tempdir().unwrap();
            let (row, want) = write(dir.path(), comp);
            let (mut out, mut scratch) = (vec![0u8; 1000], Vec::new());
            // One flipped byte inside frame 2's stored bytes.
            let mut data = std::fs::read(&row.shard).unwrap();
            let at = row.offset as usize
                + match comp {
                    Compression::None => 2 * 1000 + 17,
                    _ => {
                        let body = body_len(row.length, 5, true).unwrap();
                        let start = (row.offset + frame_table_start(body, 5).unwrap()) as usize;
                        table_offset(&data[start..], 2).unwrap() as usize + 3
                    }
                };
            data[at] ^= 0x10;
            std::fs::write(&row.shard, &data).unwrap();
            let file = File::open(&row.shard).unwrap();
            let e = read_frame_into(&file, &row, 2, &mut out, &mut scratch, true).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("frame 5 of session `s` view `v` (rgb, chunk 1)"),
                "{msg}"
            );
            assert!(msg.contains("prep verify"), "{msg}");
            // Without the check (the benchmark's way) the damage goes through for raw.
            if comp == Compression::None {
                read_frame_into(&file, &row, 2, &mut out, &mut scratch, false).unwrap();
                assert_ne!(out, want[2]);
            }
            // The other frames still read.
            read_frame_into(&file, &row, 1, &mut out, &mut scratch, true).unwrap();
            assert_eq!(out, want[1]);
            // An index pointing at the first record, whose frames 0..3 hold the same bytes
            // as this one's: refused, as the checksums are bound to the timeline frame.
            if comp == Compression::None {
                let mut moved = row.clone();
                (moved.offset, moved.frame_count, moved.length) = (0, 3, 3 * 1008);
                let e = read_frame_into(&file, &moved, 0, &mut out, &mut scratch, true);
                assert!(e.unwrap_err().to_string().contains("checksum"));
            }
        }
    }

    #[test]
    fn keypoint_frames_decode_values_and_the_flag() {
        let words = [1.5f32, -2.0, 0.25, 1.0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut encoded = vec![7u8; 3];
        encode_keypoints(&words[..3], true, &mut encoded);
        assert_eq!(encoded, bytes);
        let mut vals = [0f32; 3];
        assert!(decode_keypoints(&bytes, &mut vals, Path::new("k")).unwrap());
        assert_eq!(vals, [1.5, -2.0, 0.25]);
        encode_keypoints(&vals, false, &mut encoded);
        assert!(!decode_keypoints(&encoded, &mut vals, Path::new("k")).unwrap());
        assert!(decode_keypoints(&bytes[..12], &mut vals, Path::new("k")).is_err());
    }
}
