//! Writing videos with ffmpeg-next (used by `prep synth`): RGB frames in, an encoded file
//! with exact presentation timestamps out.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Sws, Flags};
use ffmpeg::{codec, encoder, format, frame, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

/// The codecs `prep synth` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264 via libx264 (falls back to MPEG-4 part 2 where libx264 is missing).
    H264,
    /// MPEG-4 part 2.
    Mpeg4,
    /// Motion JPEG.
    Mjpeg,
}

/// An open video file being written.
pub struct VideoWriter {
    octx: format::context::Output,
    enc: encoder::Video,
    sws: Sws,
    rgb: frame::Video,
    yuv: frame::Video,
    enc_tb: Rational,
    ost_tb: Rational,
    width: u32,
    height: u32,
    frame_dur: i64,
}

fn err(path: &Path, what: &str) -> impl Fn(ffmpeg::Error) -> String {
    let p = path.display().to_string();
    let what = what.to_string();
    move |e| format!("{p}: {what}: {e}")
}

impl VideoWriter {
    /// Create `path` (container from its extension) for `width x height` frames whose
    /// timestamps count in units of `time_base` seconds.
    pub fn create(
        path: &Path,
        codec_kind: Codec,
        width: u32,
        height: u32,
        time_base: Rational,
        frame_rate: Rational,
    ) -> Result<VideoWriter, String> {
        crate::video::init();
        let mut octx = format::output(path).map_err(err(path, "cannot create"))?;
        let (found, pix) = match codec_kind {
            Codec::H264 => match encoder::find_by_name("libx264") {
                Some(c) => (Some(c), Pixel::YUV420P),
                None => (encoder::find(codec::Id::MPEG4), Pixel::YUV420P),
            },
            Codec::Mpeg4 => (encoder::find(codec::Id::MPEG4), Pixel::YUV420P),
            Codec::Mjpeg => (encoder::find(codec::Id::MJPEG), Pixel::YUVJ420P),
        };
        let c = found.ok_or_else(|| {
            format!(
                "{}: no {codec_kind:?} encoder in this FFmpeg",
                path.display()
            )
        })?;
        let global = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
        let mut ost = octx.add_stream(c).map_err(err(path, "add stream"))?;
        let mut enc = codec::context::Context::new_with_codec(c)
            .encoder()
            .video()
            .map_err(err(path, "encoder"))?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(pix);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(frame_rate));
        enc.set_gop(12);
        enc.set_max_b_frames(if codec_kind == Codec::H264 { 2 } else { 0 });
        let mut flags = codec::Flags::empty();
        if global {
            flags |= codec::Flags::GLOBAL_HEADER;
        }
        let mut opts = Dictionary::new();
        if c.name() == "libx264" {
            opts.set("preset", "veryfast");
            opts.set("crf", "20");
        } else {
            // Fixed quantiser: good quality at any size.
            flags |= codec::Flags::QSCALE;
            enc.set_global_quality(3 * 118);
            enc.set_qmin(2);
            enc.set_qmax(5);
        }
        enc.set_flags(flags);
        ost.set_time_base(time_base);
        let enc = enc
            .open_as_with(c, opts)
            .map_err(err(path, "open encoder"))?;
        ost.set_parameters(&enc);
        octx.write_header().map_err(err(path, "write header"))?;
        let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(time_base);
        let sws = Sws::get(
            Pixel::RGB24,
            width,
            height,
            pix,
            width,
            height,
            Flags::BILINEAR,
        )
        .map_err(err(path, "scaler"))?;
        Ok(VideoWriter {
            octx,
            enc,
            sws,
            rgb: frame::Video::new(Pixel::RGB24, width, height),
            yuv: frame::Video::empty(),
            enc_tb: time_base,
            ost_tb,
            width,
            height,
            // One frame in time-base units, so every packet carries its duration (else
            // muxers under-report the stream duration by one frame).
            frame_dur: ((frame_rate.denominator() as f64 * time_base.denominator() as f64)
                / (frame_rate.numerator() as f64 * time_base.numerator() as f64))
                .round()
                .max(1.0) as i64,
        })
    }

    /// Encode one packed RGB24 frame with presentation time `pts` (in `time_base` units).
    pub fn push_rgb(&mut self, rgb: &[u8], pts: i64) -> Result<(), String> {
        let row = self.width as usize * 3;
        let stride = self.rgb.stride(0);
        let data = self.rgb.data_mut(0);
        for y in 0..self.height as usize {
            data[y * stride..y * stride + row].copy_from_slice(&rgb[y * row..(y + 1) * row]);
        }
        self.sws
            .run(&self.rgb, &mut self.yuv)
            .map_err(|e| format!("scale: {e}"))?;
        self.yuv.set_pts(Some(pts));
        self.enc
            .send_frame(&self.yuv)
            .map_err(|e| format!("encode: {e}"))?;
        self.drain()
    }

    fn drain(&mut self) -> Result<(), String> {
        let mut pkt = Packet::empty();
        while self.enc.receive_packet(&mut pkt).is_ok() {
            pkt.set_stream(0);
            if pkt.duration() <= 0 {
                pkt.set_duration(self.frame_dur);
            }
            pkt.rescale_ts(self.enc_tb, self.ost_tb);
            pkt.write_interleaved(&mut self.octx)
                .map_err(|e| format!("write: {e}"))?;
        }
        Ok(())
    }

    /// Flush the encoder and write the trailer.
    pub fn finish(mut self) -> Result<(), String> {
        self.enc.send_eof().map_err(|e| format!("encode: {e}"))?;
        self.drain()?;
        self.octx
            .write_trailer()
            .map_err(|e| format!("trailer: {e}"))
    }
}
