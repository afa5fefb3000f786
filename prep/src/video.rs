//! Reading videos with ffmpeg-next: probing (size, rate, duration) and decoding with one
//! thread per video, frames handed out with their local time in seconds.

use std::path::Path;
use std::sync::Once;

use ffmpeg::{format, frame, media, Rational};
use ffmpeg_next as ffmpeg;

/// Initialise FFmpeg once and make it quiet (errors reach the user through our messages).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// What `probe` learns about a video without decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate (the manifest's `fps` override, else the stream's average rate).
    pub fps: f64,
    /// Duration from the first frame, seconds.
    pub duration_s: f64,
    /// Codec name.
    pub codec: String,
}

const NOPTS: i64 = i64::MIN;

fn secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * tb.numerator() as f64 / tb.denominator() as f64
}

fn rate(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| r.numerator() as f64 / r.denominator() as f64)
}

fn open(path: &Path) -> Result<(format::context::Input, usize), String> {
    init();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() == 0 {
        return Err("is empty (0 bytes); re-export or re-copy the video".into());
    }
    let ictx = format::input(path).map_err(|e| {
        format!("cannot be opened as a video ({e}); the file is corrupt or not a video")
    })?;
    let idx = ictx
        .streams()
        .best(media::Type::Video)
        .ok_or("has no video stream")?
        .index();
    Ok((ictx, idx))
}

/// Read a video's header (and, for containers without durations, its packet timestamps).
pub fn probe(path: &Path, fps_override: Option<f64>) -> Result<VideoInfo, String> {
    let (mut ictx, idx) = open(path)?;
    let stream = ictx.stream(idx).ok_or("has no video stream")?;
    let tb = stream.time_base();
    let params = stream.parameters();
    let codec = params.id().name().to_string();
    let ctx = ffmpeg::codec::context::Context::from_parameters(params)
        .map_err(|e| format!("unusable codec parameters: {e}"))?;
    let dec = ctx
        .decoder()
        .video()
        .map_err(|e| format!("no decoder for codec `{codec}`: {e}"))?;
    let (width, height) = (dec.width(), dec.height());
    if width == 0 || height == 0 {
        return Err(format!(
            "has a {width}x{height} video stream; the file is corrupt"
        ));
    }
    let avg_fps = rate(stream.avg_frame_rate());
    let guess_fps = rate(stream.rate());
    let start = stream.start_time();
    let start_s = if start == NOPTS { 0.0 } else { secs(start, tb) };
    let frames = stream.frames();
    let header_s = if stream.duration() > 0 {
        secs(stream.duration(), tb)
    } else if ictx.duration() > 0 {
        // SAFETY: reading a plain field of the open format context.
        let fmt_start_ts = unsafe { (*ictx.as_ptr()).start_time };
        let fmt_start = if fmt_start_ts == NOPTS {
            0.0
        } else {
            fmt_start_ts as f64 / 1e6
        };
        ictx.duration() as f64 / 1e6 - (start_s - fmt_start)
    } else {
        0.0
    };
    let header_ok = header_s > 0.0 && header_s.is_finite();
    let (fps, duration_s) = match (fps_override, avg_fps) {
        (Some(f), _) if frames > 0 => (f, frames as f64 / f),
        (None, Some(f)) if header_ok => (f, header_s),
        _ => {
            // No usable rate or duration in the header (MKV often has neither):
            // scan packet timestamps, without decoding.
            let scan = scan_packets(&mut ictx, idx, tb);
            let fps = fps_override
                .or(avg_fps)
                .or_else(|| {
                    (scan.count > 1 && scan.span() > 0.0)
                        .then(|| (scan.count - 1) as f64 / scan.span())
                })
                .or(guess_fps)
                .ok_or("has no frame rate; add an `fps` column to the manifest")?;
            let dur = match fps_override {
                Some(f) => scan.count as f64 / f,
                None if scan.count > 0 => scan.span() + 1.0 / fps,
                None => 0.0,
            };
            (fps, dur)
        }
    };
    if duration_s <= 0.0 {
        return Err("holds no video frames (zero length)".into());
    }
    Ok(VideoInfo {
        width,
        height,
        fps,
        duration_s,
        codec,
    })
}

/// Packet timestamps of one stream.
struct Scan {
    count: u64,
    first: f64,
    last: f64,
}

impl Scan {
    /// Seconds from the first to the last packet's presentation time.
    fn span(&self) -> f64 {
        if self.count > 0 {
            self.last - self.first
        } else {
            0.0
        }
    }
}

fn scan_packets(ictx: &mut format::context::Input, idx: usize, tb: Rational) -> Scan {
    let mut scan = Scan {
        count: 0,
        first: f64::INFINITY,
        last: f64::NEG_INFINITY,
    };
    let mut packet = ffmpeg::Packet::empty();
    while packet.read(ictx).is_ok() {
        if packet.stream() != idx {
            continue;
        }
        scan.count += 1;
        if let Some(p) = packet.pts().or(packet.dts()) {
            let t = secs(p, tb);
            scan.first = scan.first.min(t);
            scan.last = scan.last.max(t);
        }
    }
    scan
}

/// What decoding saw.
#[derive(Debug, Default, Clone)]
pub struct DecodeStats {
    /// Frames the decoder produced.
    pub frames: u64,
    /// Packets or frames the decoder rejected.
    pub errors: u64,
    /// The first such error, with its time.
    pub first_error: Option<String>,
    /// Local time of the last frame.
    pub last_time: f64,
    /// True if the callback asked to stop early.
    pub stopped: bool,
}

/// Whether decoding should go on.
pub enum Flow {
    /// Keep decoding.
    Continue,
    /// Enough frames: stop.
    Stop,
}

/// Decode every frame of the video's best video stream with one decoder thread, calling
/// `on_frame(frame, local_time_s)` in presentation order (the frame is handed over, so the
/// callback can keep it without copying pixels). Local time is 0 at the stream's
/// first frame; with `fps_override` it is `frame_index / fps`.
pub fn decode(
    path: &Path,
    fps_override: Option<f64>,
    mut on_frame: impl FnMut(frame::Video, f64) -> Result<Flow, String>,
) -> Result<DecodeStats, String> {
    let (mut ictx, idx) = open(path)?;
    let stream = ictx.stream(idx).ok_or("has no video stream")?;
    let tb = stream.time_base();
    let mut start = stream.start_time();
    let fps = fps_override
        .or_else(|| rate(stream.avg_frame_rate()))
        .or_else(|| rate(stream.rate()))
        .unwrap_or(25.0);
    let mut ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| e.to_string())?;
    ctx.set_threading(ffmpeg::codec::threading::Config::count(1));
    let mut dec = ctx.decoder().video().map_err(|e| e.to_string())?;
    let mut stats = DecodeStats::default();
    let mut last_t: Option<f64> = None;
    let mut packet = ffmpeg::Packet::empty();
    let mut read_errors = 0u32;

    let note_error = |stats: &mut DecodeStats, what: String| {
        stats.errors += 1;
        if stats.first_error.is_none() {
            stats.first_error = Some(what);
        }
    };

    // Drain decoded frames; returns false when the callback wants to stop.
    let mut drain = |dec: &mut ffmpeg::decoder::Video,
                     stats: &mut DecodeStats,
                     last_t: &mut Option<f64>,
                     start: &mut i64|
     -> Result<bool, String> {
        loop {
            // A fresh frame each time: the callback may keep it (no pixel copy).
            let mut frame = frame::Video::empty();
            match dec.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(true),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    return Ok(true)
                }
                Err(e) => {
                    note_error(
                        stats,
                        format!("decode error after {:.2} s: {e}", last_t.unwrap_or(0.0)),
                    );
                    return Ok(true);
                }
            }
            let t = match (fps_override, frame.timestamp().or(frame.pts())) {
                (Some(f), _) => stats.frames as f64 / f,
                (None, Some(ts)) => {
                    if *start == NOPTS {
                        *start = ts;
                    }
                    secs(ts - *start, tb)
                }
                (None, None) => last_t.map_or(0.0, |l| l + 1.0 / fps),
            };
            // Timestamps must not go backwards; a repeated or reordered one is nudged.
            let t = match *last_t {
                Some(l) if t <= l => l + 1e-4,
                _ => t,
            };
            *last_t = Some(t);
            stats.frames += 1;
            stats.last_time = t;
            if let Flow::Stop = on_frame(frame, t)? {
                stats.stopped = true;
                return Ok(false);
            }
        }
    };

    loop {
        match packet.read(&mut ictx) {
            Ok(()) => read_errors = 0,
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => {
                read_errors += 1;
                note_error(
                    &mut stats,
                    format!("read error after {:.2} s: {e}", last_t.unwrap_or(0.0)),
                );
                if read_errors > 32 {
                    break;
                }
                continue;
            }
        }
        if packet.stream() != idx {
            continue;
        }
        if let Err(e) = dec.send_packet(&packet) {
            note_error(
                &mut stats,
                format!("damaged packet after {:.2} s: {e}", last_t.unwrap_or(0.0)),
            );
        }
        if !drain(&mut dec, &mut stats, &mut last_t, &mut start)? {
            return Ok(stats);
        }
    }
    // Flush: without send_eof the last (B-)frames never come out.
    let _ = dec.send_eof();
    drain(&mut dec, &mut stats, &mut last_t, &mut start)?;
    Ok(stats)
}
