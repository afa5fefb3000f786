//! Per-frame JPEG (records of `prep.compress=jpeg:Q`), through libjpeg-turbo.
//!
//! libjpeg-turbo was chosen over the pure-Rust pair (jpeg-encoder + zune-jpeg) because the
//! Rust encoder measured 3.2x slower at Q=90 (see `examples/jpeg_codecs.rs` and
//! docs/architecture.md, "Compact caches"). Chroma is kept at full resolution from Q=90 up
//! and halved both ways (4:2:0) below, as FORMAT.md says.

use std::cell::RefCell;
use std::path::Path;

use turbojpeg::{Compressor, Decompressor, Image, PixelFormat, Subsamp};

use crate::error::{Error, Result};

/// The chroma subsampling used at quality `q`: 4:4:4 from 90 up, 4:2:0 below.
pub fn subsampling(q: u8) -> Subsamp {
    if q >= 90 {
        Subsamp::None
    } else {
        Subsamp::Sub2x2
    }
}

/// Encodes RGB frames of one size at one quality, reusing libjpeg-turbo's state.
pub struct JpegEncoder {
    compressor: Compressor,
    height: usize,
    width: usize,
}

impl JpegEncoder {
    /// An encoder of `height` x `width` RGB frames at quality `q` (1..=100); `path` names the
    /// file in errors.
    pub fn new(height: usize, width: usize, q: u8, path: &Path) -> Result<Self> {
        let fail = |e: turbojpeg::Error| Error::format(path, format!("jpeg encoder: {e}"));
        let mut compressor = Compressor::new().map_err(fail)?;
        compressor.set_quality(i32::from(q));
        compressor.set_subsamp(subsampling(q));
        Ok(JpegEncoder {
            compressor,
            height,
            width,
        })
    }

    /// Encode one frame (`height * width * 3` bytes) into `out`, replacing its contents.
    pub fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>, path: &Path) -> Result<()> {
        let (h, w) = (self.height, self.width);
        if frame.len() != h * w * 3 {
            return Err(Error::format(
                path,
                format!(
                    "jpeg frame of {} bytes, expected {h} x {w} x 3",
                    frame.len()
                ),
            ));
        }
        let image = Image {
            pixels: frame,
            width: w,
            pitch: w * 3,
            height: h,
            format: PixelFormat::RGB,
        };
        let fail = |e: turbojpeg::Error| Error::format(path, format!("jpeg encoding: {e}"));
        out.resize(self.compressor.buf_len(w, h).map_err(fail)?, 0);
        let n = self
            .compressor
            .compress_to_slice(image, out)
            .map_err(fail)?;
        out.truncate(n);
        Ok(())
    }
}

thread_local! {
    // One decompressor per thread (loader prefetch threads, verify), made on first use.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Decode JPEG frame `k` of a record straight into `out` (RGB, exactly its size). A payload
/// that is not a JPEG of that size, or that libjpeg-turbo finds damaged, is an error naming
/// `path` and the frame.
pub fn decode_jpeg(packed: &[u8], out: &mut [u8], k: usize, path: &Path) -> Result<()> {
    let bad = |what: String| Error::format(path, format!("jpeg frame {k}: {what}"));
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decompressor::new().map_err(|e| bad(e.to_string()))?);
        }
        let Some(d) = slot.as_mut() else {
            return Err(bad("no decompressor".into()));
        };
        let result = decode_with(d, packed, out).map_err(bad);
        if result.is_err() {
            // libjpeg-turbo 2.1 can leave a handle unusable after an error: start afresh.
            *slot = None;
        }
        result
    })
}

fn decode_with(
    d: &mut Decompressor,
    packed: &[u8],
    out: &mut [u8],
) -> std::result::Result<(), String> {
    let header = d.read_header(packed).map_err(|e| e.to_string())?;
    let (w, h) = (header.width, header.height);
    if w.checked_mul(h).and_then(|n| n.checked_mul(3)) != Some(out.len()) {
        return Err(format!(
            "decodes to {h} x {w} x 3 bytes, expected {}",
            out.len()
        ));
    }
    let image = Image {
        pixels: out,
        width: w,
        pitch: w * 3,
        height: h,
        format: PixelFormat::RGB,
    };
    d.decompress(packed, image).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(h: usize, w: usize) -> Vec<u8> {
        (0..h * w * 3)
            .map(|i| {
                let (p, c) = (i / 3, i % 3);
                ((p % w) * 3 + (p / w) * 2 + c * 30) as u8
            })
            .collect()
    }

    #[test]
    fn frames_round_trip_close_and_damage_is_an_error_not_a_panic() {
        let p = Path::new("t.shard");
        let (h, w) = (24, 40);
        let frame = gradient(h, w);
        for q in [50u8, 90, 100] {
            let mut enc = JpegEncoder::new(h, w, q, p).expect("encoder");
            let mut packed = Vec::new();
            enc.encode(&frame, &mut packed, p).expect("encode");
            assert_eq!(&packed[..2], &[0xFF, 0xD8], "a JPEG starts with SOI");
            let mut out = vec![0u8; frame.len()];
            decode_jpeg(&packed, &mut out, 0, p).expect("decode");
            let max = frame
                .iter()
                .zip(&out)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            assert!(max < 24, "q={q}: max abs difference {max}");
            // Another size than the record's is refused before decoding.
            let mut small = vec![0u8; frame.len() - 3];
            let e = decode_jpeg(&packed, &mut small, 3, p)
                .unwrap_err()
                .to_string();
            assert!(e.contains("jpeg frame 3") && e.contains("t.shard"), "{e}");
            // Garbage instead of the entropy-coded data: an error (libjpeg-turbo may also
            // decode a damaged scan to wrong pixels, which the record checksum catches).
            let mut cut = packed[..packed.len() / 3].to_vec();
            cut.extend(std::iter::repeat_n(0xFFu8, 7));
            let _ = decode_jpeg(&cut, &mut out, 1, p);
            let e = decode_jpeg(&[0, 1, 2, 3], &mut out, 2, p).unwrap_err();
            assert!(e.to_string().contains("jpeg frame 2"), "{e}");
        }
        // A frame of the wrong size for the encoder is refused.
        let mut enc = JpegEncoder::new(h, w, 90, p).expect("encoder");
        assert!(enc.encode(&frame[3..], &mut Vec::new(), p).is_err());
    }
}
