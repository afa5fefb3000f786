//! The codec choice behind `prep.compress=jpeg:Q`, measured: libjpeg-turbo (what prep uses)
//! against the pure-Rust pair jpeg-encoder (with its SIMD paths) + zune-jpeg, on the RGB
//! frames of a raw cache, at the same quality and chroma subsampling, on one thread.
//!
//! `cargo run --release -p mvdrive-schemas --example jpeg_codecs -- CACHE [FRAMES] [QUALITY]`
//! prints one JSON object: frames/s of each encoder and decoder, mean bytes per frame, and
//! the Rust/turbo time ratios (median of 3 passes). Run by `make bench-loader`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mvdrive_schemas::cache::Cache;
use mvdrive_schemas::jpeg::{decode_jpeg, subsampling, JpegEncoder};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn frames(cache: &Path, limit: usize) -> Res<(Vec<Vec<u8>>, usize, usize)> {
    let c = Cache::open(cache)?;
    let mut out = Vec::new();
    let mut size = (0, 0);
    for rec in c.records.iter().filter(|r| r.modality == "rgb") {
        size = (rec.height as usize, rec.width as usize);
        for t in 0..rec.frame_count as u64 {
            if out.len() == limit {
                return Ok((out, size.0, size.1));
            }
            out.push(c.read_frame(&rec.session, &rec.view, rec.frame_start + t)?);
        }
        if out.len() == limit {
            break;
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no RGB frames", cache.display()).into());
    }
    Ok((out, size.0, size.1))
}

/// Median of three timings of `f`, in seconds.
fn median3(mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    let mut t = Vec::new();
    for _ in 0..3 {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[1])
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cache) = args.first().map(PathBuf::from) else {
        return Err("usage: jpeg_codecs CACHE [FRAMES] [QUALITY]".into());
    };
    let limit: usize = args.get(1).map_or(Ok(300), |s| s.parse())?;
    let q: u8 = args.get(2).map_or(Ok(90), |s| s.parse())?;
    let (frames, h, w) = frames(&cache, limit)?;
    // A frame of another size (a cache with views of several sizes) is left out.
    let frames: Vec<Vec<u8>> = frames
        .into_iter()
        .filter(|f| f.len() == h * w * 3)
        .collect();
    let n = frames.len() as f64;
    let p = Path::new("bench");

    let mut turbo = JpegEncoder::new(h, w, q, p)?;
    let mut turbo_out: Vec<Vec<u8>> = vec![Vec::new(); frames.len()];
    let enc_turbo = median3(|| {
        for (f, o) in frames.iter().zip(turbo_out.iter_mut()) {
            turbo.encode(f, o, p)?;
        }
        Ok(())
    })?;
    let sampling = match subsampling(q) {
        turbojpeg::Subsamp::None => jpeg_encoder::SamplingFactor::F_1_1,
        _ => jpeg_encoder::SamplingFactor::F_2_2,
    };
    let mut rust_out: Vec<Vec<u8>> = vec![Vec::new(); frames.len()];
    let enc_rust = median3(|| {
        for (f, o) in frames.iter().zip(rust_out.iter_mut()) {
            o.clear();
            let mut e = jpeg_encoder::Encoder::new(&mut *o, q);
            e.set_sampling_factor(sampling);
            e.encode(f, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)?;
        }
        Ok(())
    })?;
    let mut pixels = vec![0u8; h * w * 3];
    let dec_turbo = median3(|| {
        for (k, o) in turbo_out.iter().enumerate() {
            decode_jpeg(o, &mut pixels, k, p)?;
        }
        Ok(())
    })?;
    let dec_rust = median3(|| {
        let options = zune_jpeg::zune_core::options::DecoderOptions::default()
            .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB);
        for o in &turbo_out {
            let mut d = zune_jpeg::JpegDecoder::new_with_options(o.as_slice(), options);
            d.decode_into(&mut pixels)?;
        }
        Ok(())
    })?;
    let mean = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / n;
    println!(
        "{}",
        serde_json::json!({
            "frames": frames.len(), "height": h, "width": w, "quality": q,
            "encode_fps": {"turbojpeg": n / enc_turbo, "jpeg_encoder": n / enc_rust},
            "decode_fps": {"turbojpeg": n / dec_turbo, "zune_jpeg": n / dec_rust},
            "bytes_per_frame": {"turbojpeg": mean(&turbo_out), "jpeg_encoder": mean(&rust_out)},
            "rust_over_turbo_time": {"encode": enc_rust / enc_turbo, "decode": dec_rust / dec_turbo},
        })
    );
    Ok(())
}
