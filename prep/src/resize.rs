//! Resizing decoded frames to `data.img_size` RGB with swscale, in one of three modes.

use ffmpeg::format::Pixel;
use ffmpeg::frame;
use ffmpeg::software::scaling::{Context, Flags};
use ffmpeg_next as ffmpeg;

use crate::config::{ResizeMode, Scaler};

/// Size of the scaled image and where it lands in the output frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Width swscale produces.
    pub inner_w: u32,
    /// Height swscale produces.
    pub inner_h: u32,
    /// Column of the output where the scaled image starts (letterbox), or column of the
    /// scaled image where the output starts (center crop).
    pub dx: u32,
    /// Same for rows.
    pub dy: u32,
}

/// Where a `src_w x src_h` frame goes in an `out_w x out_h` frame.
pub fn placement(mode: ResizeMode, src_w: u32, src_h: u32, out_w: u32, out_h: u32) -> Placement {
    let (sx, sy) = (out_w as f64 / src_w as f64, out_h as f64 / src_h as f64);
    match mode {
        ResizeMode::Stretch => Placement {
            inner_w: out_w,
            inner_h: out_h,
            dx: 0,
            dy: 0,
        },
        ResizeMode::Letterbox => {
            let s = sx.min(sy);
            let iw = ((src_w as f64 * s).round() as u32).clamp(1, out_w);
            let ih = ((src_h as f64 * s).round() as u32).clamp(1, out_h);
            Placement {
                inner_w: iw,
                inner_h: ih,
                dx: (out_w - iw) / 2,
                dy: (out_h - ih) / 2,
            }
        }
        ResizeMode::CenterCrop => {
            let s = sx.max(sy);
            let iw = ((src_w as f64 * s).round() as u32).max(out_w);
            let ih = ((src_h as f64 * s).round() as u32).max(out_h);
            Placement {
                inner_w: iw,
                inner_h: ih,
                dx: (iw - out_w) / 2,
                dy: (ih - out_h) / 2,
            }
        }
    }
}

/// Turns decoded frames of any pixel format and size into packed RGB24 frames of the
/// configured size. The swscale context is rebuilt only if the input format or size changes.
pub struct Resizer {
    mode: ResizeMode,
    flags: Flags,
    out_w: u32,
    out_h: u32,
    ctx: Option<(Pixel, u32, u32, Context, Placement)>,
    scaled: frame::Video,
}

impl Resizer {
    /// A resizer to `out_w x out_h`.
    pub fn new(mode: ResizeMode, scaler: Scaler, out_w: u32, out_h: u32) -> Resizer {
        let flags = match scaler {
            Scaler::Bilinear => Flags::BILINEAR,
            Scaler::Bicubic => Flags::BICUBIC,
            Scaler::Area => Flags::AREA,
        };
        Resizer {
            mode,
            flags,
            out_w,
            out_h,
            ctx: None,
            scaled: frame::Video::empty(),
        }
    }

    /// Bytes of one output frame (H * W * 3).
    pub fn frame_bytes(&self) -> usize {
        (self.out_w * self.out_h * 3) as usize
    }

    /// Scale `src` into `out` (exactly [`Self::frame_bytes`] long, HWC RGB).
    pub fn resize(&mut self, src: &frame::Video, out: &mut [u8]) -> Result<(), String> {
        let key = (src.format(), src.width(), src.height());
        if self.ctx.as_ref().map(|c| (c.0, c.1, c.2)) != Some(key) {
            let p = placement(self.mode, src.width(), src.height(), self.out_w, self.out_h);
            let ctx = Context::get(
                key.0,
                key.1,
                key.2,
                Pixel::RGB24,
                p.inner_w,
                p.inner_h,
                self.flags,
            )
            .map_err(|e| format!("cannot scale {:?} {}x{} frames: {e}", key.0, key.1, key.2))?;
            self.ctx = Some((key.0, key.1, key.2, ctx, p));
            self.scaled = frame::Video::empty();
        }
        let Some((_, _, _, ctx, p)) = self.ctx.as_mut() else {
            return Err("internal: no scaler".into());
        };
        ctx.run(src, &mut self.scaled)
            .map_err(|e| format!("scaling failed: {e}"))?;
        let stride = self.scaled.stride(0);
        let data = self.scaled.data(0);
        let row = self.out_w as usize * 3;
        match self.mode {
            ResizeMode::Stretch => {
                for y in 0..self.out_h as usize {
                    out[y * row..(y + 1) * row]
                        .copy_from_slice(&data[y * stride..y * stride + row]);
                }
            }
            ResizeMode::Letterbox => {
                out.fill(0);
                let inner = p.inner_w as usize * 3;
                for y in 0..p.inner_h as usize {
                    let o = (y + p.dy as usize) * row + p.dx as usize * 3;
                    out[o..o + inner].copy_from_slice(&data[y * stride..y * stride + inner]);
                }
            }
            ResizeMode::CenterCrop => {
                for y in 0..self.out_h as usize {
                    let s = (y + p.dy as usize) * stride + p.dx as usize * 3;
                    out[y * row..(y + 1) * row].copy_from_slice(&data[s..s + row]);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_fits_and_centres() {
        let p = placement(ResizeMode::Letterbox, 320, 180, 112, 112);
        assert_eq!((p.inner_w, p.inner_h, p.dx, p.dy), (112, 63, 0, 24));
    }

    #[test]
    fn center_crop_covers_and_centres() {
        let p = placement(ResizeMode::CenterCrop, 320, 180, 112, 112);
        assert_eq!((p.inner_w, p.inner_h, p.dx, p.dy), (199, 112, 43, 0));
    }
}
