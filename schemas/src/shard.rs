//! Shard files and the records inside them.
//!
//! A shard is a plain file of records. Each record starts at a multiple of
//! [`PAGE_SIZE`](crate::PAGE_SIZE) and is one (session, view, chunk) of frames:
//!
//! - `none`: `frame_count` frames of raw `u8` HWC pixels back to back, so frame `i` is the
//!   byte range `[i * H*W*C, (i+1) * H*W*C)` of the record: a zero-copy slice of the mmap;
//! - `zstd`: each frame compressed on its own, back to back, followed by a table of
//!   `frame_count + 1` little-endian `u64` offsets (relative to the record start; the last
//!   one is the table's own offset), so any frame still decodes in O(1).
//!
//! Either kind ends with one checksum per frame. The tables are described once, in
//! [`crate::record`].
//!
//! Padding between records is zero bytes. Shards are written under a temporary name and
//! renamed by [`ShardWriter::finish`], so a shard that exists under its final name is complete.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::checksum::Hasher;
use crate::error::{io, Error, Result};
use crate::jpeg::JpegEncoder;
use crate::record::FrameSeed;
use crate::{page_align, record};

pub use crate::codec::Compression;

/// Where a finished record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLocation {
    /// Shard file name (final name, relative to the writer's folder).
    pub shard: String,
    /// Byte offset (page aligned).
    pub offset: u64,
    /// Byte length.
    pub length: u64,
    /// XXH3-64 of the record bytes.
    pub xxh3: u64,
}

struct OpenShard {
    file: BufWriter<File>,
    tmp: PathBuf,
    name: String,
    len: u64,
}

struct OpenRecord {
    start: u64,
    frame_bytes: usize,
    frames: u32,
    expected: u32,
    hasher: Hasher,
    offsets: Vec<u64>,
    seed: FrameSeed,
    sums: Vec<u8>,
}

/// Writes records into a sequence of size-capped shard files `{prefix}-NNNNN.shard` in one
/// folder. Frames are streamed to disk as they arrive: memory use is one frame.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    cap: u64,
    compression: Compression,
    next_no: u32,
    current: Option<OpenShard>,
    record: Option<OpenRecord>,
    done: Vec<(PathBuf, PathBuf)>,
    scratch: Vec<u8>,
    /// Frame size (height, width) of RGB records, which JPEG needs.
    image: Option<(u16, u16)>,
    /// The JPEG encoder, made on the first JPEG frame.
    jpeg: Option<JpegEncoder>,
}

impl ShardWriter {
    /// A writer of shards `dir/{prefix}-00000.shard`, ... of at most `cap` bytes each.
    pub fn new(dir: &Path, prefix: &str, cap: u64, compression: Compression) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            cap,
            compression,
            next_no: 0,
            current: None,
            record: None,
            done: Vec::new(),
            scratch: Vec::new(),
            image: None,
            jpeg: None,
        }
    }

    /// Records of RGB frames `height` x `width` (what JPEG encodes; sizes beyond 65535 are
    /// refused when a frame is pushed).
    pub fn with_image(mut self, height: u32, width: u32) -> Self {
        self.image = u16::try_from(height).ok().zip(u16::try_from(width).ok());
        self
    }

    /// Start a record of `frame_count` frames of `frame_bytes` bytes each, whose frame
    /// checksums are bound to `seed`. Opens a new shard first if this record would push
    /// the current one over the cap.
    pub fn begin_record(
        &mut self,
        frame_bytes: usize,
        frame_count: u32,
        seed: FrameSeed,
    ) -> Result<()> {
        if self.record.is_some() {
            return Err(Error::format(
                &self.dir,
                "begin_record while a record is open",
            ));
        }
        let estimate = frame_bytes as u64 * frame_count as u64;
        let roll = match &self.current {
            Some(s) => s.len > 0 && page_align(s.len) + estimate > self.cap,
            None => true,
        };
        if roll {
            self.close_current()?;
            let name = format!("{}-{:05}.shard", self.prefix, self.next_no);
            self.next_no += 1;
            let tmp = self.dir.join(format!("{name}.tmp"));
            let file = File::create(&tmp).map_err(io(&tmp))?;
            self.current = Some(OpenShard {
                file: BufWriter::with_capacity(1 << 20, file),
                tmp,
                name,
                len: 0,
            });
        }
        let shard = self
            .current
            .as_mut()
            .expect("a shard is open after rolling");
        let start = page_align(shard.len);
        let pad = (start - shard.len) as usize;
        shard
            .file
            .write_all(&vec![0u8; pad])
            .map_err(io(&shard.tmp))?;
        shard.len = start;
        self.record = Some(OpenRecord {
            start,
            frame_bytes,
            frames: 0,
            expected: frame_count,
            hasher: Hasher::new(),
            offsets: vec![0],
            seed,
            sums: Vec::with_capacity(frame_count as usize * record::CHECKSUM_BYTES),
        });
        Ok(())
    }

    /// Append one frame to the open record.
    pub fn push_frame(&mut self, frame: &[u8]) -> Result<()> {
        let (Some(rec), Some(shard)) = (self.record.as_mut(), self.current.as_mut()) else {
            return Err(Error::format(&self.dir, "push_frame without begin_record"));
        };
        if frame.len() != rec.frame_bytes || rec.frames >= rec.expected {
            return Err(Error::format(
                &shard.tmp,
                format!(
                    "frame {} of {} bytes does not fit a record of {} frames of {} bytes",
                    rec.frames,
                    frame.len(),
                    rec.expected,
                    rec.frame_bytes
                ),
            ));
        }
        let bytes: &[u8] = match self.compression {
            Compression::None => frame,
            Compression::Zstd(level) => {
                self.scratch = zstd::bulk::compress(frame, level).map_err(io(&shard.tmp))?;
                &self.scratch
            }
            Compression::Jpeg(quality) => {
                let Some((h, w)) = self
                    .image
                    .filter(|(h, w)| *h as usize * *w as usize * 3 == frame.len())
                else {
                    return Err(Error::format(
                        &shard.tmp,
                        "jpeg records hold RGB frames of the writer's image size (at most 65535 pixels a side)",
                    ));
                };
                let encoder = match &mut self.jpeg {
                    Some(e) => e,
                    slot => slot.insert(JpegEncoder::new(
                        h as usize, w as usize, quality, &shard.tmp,
                    )?),
                };
                encoder.encode(frame, &mut self.scratch, &shard.tmp)?;
                &self.scratch
            }
        };
        shard.file.write_all(bytes).map_err(io(&shard.tmp))?;
        rec.hasher.update(bytes);
        let sum = rec.seed.checksum(rec.frames as usize, bytes);
        rec.sums.extend_from_slice(&sum.to_le_bytes());
        shard.len += bytes.len() as u64;
        rec.frames += 1;
        rec.offsets.push(shard.len - rec.start);
        Ok(())
    }

    /// Close the open record and say where it is.
    pub fn end_record(&mut self) -> Result<RecordLocation> {
        let (Some(mut rec), Some(shard)) = (self.record.take(), self.current.as_mut()) else {
            return Err(Error::format(&self.dir, "end_record without begin_record"));
        };
        if rec.frames != rec.expected {
            return Err(Error::format(
                &shard.tmp,
                format!(
                    "record closed after {} of {} frames",
                    rec.frames, rec.expected
                ),
            ));
        }
        if self.compression.has_frame_table() {
            let table = record::encode_frame_table(&rec.offsets);
            shard.file.write_all(&table).map_err(io(&shard.tmp))?;
            rec.hasher.update(&table);
            shard.len += table.len() as u64;
        }
        shard.file.write_all(&rec.sums).map_err(io(&shard.tmp))?;
        rec.hasher.update(&rec.sums);
        shard.len += rec.sums.len() as u64;
        Ok(RecordLocation {
            shard: shard.name.clone(),
            offset: rec.start,
            length: shard.len - rec.start,
            xxh3: rec.hasher.digest(),
        })
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(shard) = self.current.take() {
            let file = shard
                .file
                .into_inner()
                .map_err(|e| io(&shard.tmp)(e.into_error()))?;
            file.sync_all().map_err(io(&shard.tmp))?;
            self.done.push((shard.tmp, self.dir.join(&shard.name)));
        }
        Ok(())
    }

    /// Flush, fsync and rename every shard to its final name. Returns the final names.
    pub fn finish(mut self) -> Result<Vec<String>> {
        if self.record.is_some() {
            return Err(Error::format(&self.dir, "finish with a record still open"));
        }
        self.close_current()?;
        let mut names = Vec::new();
        for (tmp, dst) in std::mem::take(&mut self.done) {
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            names.push(
                dst.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        Ok(names)
    }

    /// Delete every temporary shard (after a failure).
    pub fn abort(mut self) {
        if let Some(s) = self.current.take() {
            drop(s.file);
            let _ = std::fs::remove_file(&s.tmp);
        }
        for (tmp, _) in self.done.drain(..) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A read-only view of one record's bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
    frame_count: u32,
    frame_bytes: usize,
    /// Where the frame table of a compressed record starts; `None` for raw records.
    table_start: Option<usize>,
    /// The record's codec.
    compression: Compression,
    /// Where the frame checksums start, and what they are bound to; `None` for records
    /// without them (format 1 and 2).
    sums: Option<(usize, FrameSeed)>,
}

impl<'a> RecordView<'a> {
    /// Interpret `bytes` (exactly the record's length) as `frame_count` frames of
    /// `frame_bytes` bytes, ending with frame checksums bound to `seed` when it is given.
    /// Checks the layout (for zstd and jpeg, the whole frame table; see [`crate::record`]), not the
    /// checksums: [`RecordView::frame`] checks each frame's.
    pub fn new(
        bytes: &'a [u8],
        frame_count: u32,
        frame_bytes: usize,
        compression: Compression,
        seed: Option<FrameSeed>,
        path: &Path,
    ) -> Result<Self> {
        record::check_frame_bytes(frame_bytes, path)?;
        let body = record::body_len(bytes.len() as u64, frame_count, seed.is_some())
            .ok_or_else(|| Error::format(path, "record too short for its frame checksums"))?
            as usize;
        let table_start = if compression == Compression::None {
            if (frame_count as usize).checked_mul(frame_bytes) != Some(body) {
                return Err(Error::format(
                    path,
                    format!(
                        "record of {} bytes cannot hold {frame_count} frames of {frame_bytes} bytes",
                        bytes.len()
                    ),
                ));
            }
            None
        } else {
            let start = record::frame_table_start(body as u64, frame_count)
                .ok_or_else(|| Error::format(path, "compressed record: bad offset table"))?;
            record::check_frame_table(&bytes[start as usize..body], frame_count, start, path)?;
            Some(start as usize)
        };
        Ok(RecordView {
            compression,
            bytes,
            frame_count,
            frame_bytes,
            table_start,
            sums: seed.map(|s| (body, s)),
        })
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frame_count as usize
    }

    /// True when the record holds no frames.
    pub fn is_empty(&self) -> bool {
        self.frame_count == 0
    }

    /// Frame `i` as raw HWC bytes: borrowed from the mmap when uncompressed.
    pub fn frame(&self, i: usize, path: &Path) -> Result<Cow<'a, [u8]>> {
        if i >= self.len() {
            return Err(Error::format(
                path,
                format!("frame {i} out of range (record has {})", self.len()),
            ));
        }
        let fb = self.frame_bytes;
        let Some(start) = self.table_start else {
            let stored = &self.bytes[i * fb..(i + 1) * fb];
            self.check(i, stored, path)?;
            return Ok(Cow::Borrowed(stored));
        };
        let at = start + i * record::OFFSET_BYTES;
        let pair = &self.bytes[at..at + 2 * record::OFFSET_BYTES];
        let (a, b) = record::frame_span(pair, i, start as u64, path)?;
        let stored = &self.bytes[a as usize..b as usize];
        self.check(i, stored, path)?;
        let mut out = vec![0u8; fb];
        record::decode_frame(self.compression, stored, &mut out, i, path)?;
        Ok(Cow::Owned(out))
    }

    /// Check frame `i`'s `stored` bytes against its checksum, if the record has them.
    fn check(&self, i: usize, stored: &[u8], path: &Path) -> Result<()> {
        let Some((body, seed)) = self.sums else {
            return Ok(());
        };
        let at = body + i * record::CHECKSUM_BYTES;
        let want: Option<[u8; record::CHECKSUM_BYTES]> = self
            .bytes
            .get(at..at + record::CHECKSUM_BYTES)
            .and_then(|b| b.try_into().ok());
        if want.map(u64::from_le_bytes) != Some(seed.checksum(i, stored)) {
            return Err(record::checksum_error(
                path,
                &format!("frame {i} of the record"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checksum::xxh3;

    /// The frame seed of the test records.
    pub(crate) fn seed() -> FrameSeed {
        FrameSeed::new("s", "v", "rgb", 0)
    }

    /// `n` distinct test frames of `fb` bytes.
    pub(crate) fn frames(n: usize, fb: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| (0..fb).map(|j| ((i * 31 + j) % 251) as u8).collect())
            .collect()
    }

    fn write(
        dir: &Path,
        comp: Compression,
        cap: u64,
        recs: &[Vec<Vec<u8>>],
    ) -> Vec<RecordLocation> {
        let mut w = ShardWriter::new(dir, "rgb-t", cap, comp);
        let mut locs = Vec::new();
        for r in recs {
            w.begin_record(r[0].len(), r.len() as u32, seed()).unwrap();
            for f in r {
                w.push_frame(f).unwrap();
            }
            locs.push(w.end_record().unwrap());
        }
        w.finish().unwrap();
        locs
    }

    #[test]
    fn records_are_page_aligned_checksummed_and_read_back() {
        for comp in [Compression::None, Compression::Zstd(3)] {
            let dir = tempfile::tempdir().unwrap();
            let recs = vec![frames(3, 1000), frames(5, 1000)];
            let locs = write(dir.path(), comp, 1 << 30, &recs);
            assert_eq!(locs[0].shard, locs[1].shard, "one shard under the cap");
            assert_eq!(locs[1].offset % crate::PAGE_SIZE, 0);
            assert!(locs[1].offset >= locs[0].offset + locs[0].length);
            let data = std::fs::read(dir.path().join(&locs[1].shard)).unwrap();
            let bytes = &data[locs[1].offset as usize..(locs[1].offset + locs[1].length) as usize];
            assert_eq!(xxh3(bytes), locs[1].xxh3);
            let view = RecordView::new(bytes, 5, 1000, comp, Some(seed()), dir.path()).unwrap();
            for (i, f) in recs[1].iter().enumerate() {
                assert_eq!(&*view.frame(i, dir.path()).unwrap(), f.as_slice());
            }
            assert_eq!(
                matches!(view.frame(0, dir.path()).unwrap(), Cow::Borrowed(_)),
                comp == Compression::None
            );
            // The same bytes read as another stream's fail their checksums.
            let other = FrameSeed::new("s", "v", "rgb", 1);
            let view = RecordView::new(bytes, 5, 1000, comp, Some(other), dir.path()).unwrap();
            let e = view.frame(2, dir.path()).unwrap_err();
            assert!(e.to_string().contains("does not match its checksum"), "{e}");
        }
    }

    #[test]
    fn the_size_cap_starts_new_shards_and_no_tmp_files_remain() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![frames(4, 3000), frames(4, 3000), frames(4, 3000)];
        let locs = write(dir.path(), Compression::None, 20_000, &recs);
        assert_eq!(locs[0].shard, "rgb-t-00000.shard");
        assert_eq!(locs[1].shard, "rgb-t-00001.shard");
        assert_eq!(locs[2].shard, "rgb-t-00002.shard");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")));
    }

    #[test]
    fn abort_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), "rgb-t", 1 << 20, Compression::None);
        w.begin_record(10, 2, seed()).unwrap();
        w.push_frame(&[1; 10]).unwrap();
        w.abort();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn wrong_frame_sizes_and_counts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), "rgb-t", 1 << 20, Compression::None);
        w.begin_record(10, 1, seed()).unwrap();
        assert!(w.push_frame(&[1; 9]).is_err());
        assert!(w.end_record().is_err(), "0 of 1 frames");
    }

    #[test]
    fn compression_parses_levels() {
        assert_eq!(Compression::parse("none"), Some(Compression::None));
        assert_eq!(Compression::parse("zstd:7"), Some(Compression::Zstd(7)));
        assert_eq!(Compression::parse("zstd:0"), None);
        assert_eq!(Compression::parse("lz4"), None);
    }
}
