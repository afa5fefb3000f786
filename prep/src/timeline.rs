//! The session timeline: one clock shared by every view of a session.
//!
//! Timeline frame `i` sits at session time `start_s + i / fps`. A view whose first frame
//! sits at session time `offset_s` shows, at timeline frame `i`, its latest source frame
//! with local time `<= start_s + i / fps - offset_s` (a frame is held until the next one
//! arrives). Frame timestamps come from the container (pts), so unequal frame rates, start
//! offsets and variable frame rate all line up. The timeline spans the time every view
//! covers: from the latest view start to the earliest view end.

use std::ops::Range;

/// Tolerance for comparing times in seconds (timestamps are exact rationals turned into f64).
pub const EPS: f64 = 1e-6;

/// One session's timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// Frames per second.
    pub fps: f64,
    /// Session time of frame 0.
    pub start_s: f64,
    /// Number of frames.
    pub frames: u64,
}

/// Where one view sits on the session clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewSpan {
    /// Session time of the view's first frame.
    pub offset_s: f64,
    /// Duration of the view in seconds.
    pub duration_s: f64,
}

impl Timeline {
    /// The timeline covering the overlap of all `views` at `fps`.
    pub fn for_views(views: &[ViewSpan], fps: f64) -> Result<Timeline, String> {
        let start = views
            .iter()
            .map(|v| v.offset_s)
            .fold(f64::NEG_INFINITY, f64::max);
        let end = views
            .iter()
            .map(|v| v.offset_s + v.duration_s)
            .fold(f64::INFINITY, f64::min);
        if views.is_empty() || end - start <= EPS {
            return Err(format!(
                "the views do not overlap in time (latest start {start:.3} s, earliest end {end:.3} s); check offset_s"
            ));
        }
        let frames = ((end - start) * fps - EPS).ceil().max(0.0) as u64;
        if frames == 0 {
            return Err(format!(
                "the views overlap for {:.3} s, less than one frame at {fps} fps",
                end - start
            ));
        }
        Ok(Timeline {
            fps,
            start_s: start,
            frames,
        })
    }

    /// Session time of frame `i`.
    pub fn time(&self, i: u64) -> f64 {
        self.start_s + i as f64 / self.fps
    }

    /// End of the timeline (exclusive), in session seconds.
    pub fn end_s(&self) -> f64 {
        self.time(self.frames)
    }

    /// Timeline frames whose time lies in `[start_s, end_s)`, clipped to the timeline.
    pub fn frame_range(&self, start_s: f64, end_s: f64) -> Range<u64> {
        let idx = |t: f64| {
            (((t - self.start_s) * self.fps - EPS).ceil().max(0.0) as u64).min(self.frames)
        };
        idx(start_s)..idx(end_s)
    }
}

/// Assigns timeline frames to the source frames of one view as they are decoded.
#[derive(Debug, Clone)]
pub struct Picker {
    local_start: f64,
    fps: f64,
    frames: u64,
    next: u64,
}

impl Picker {
    /// A picker for a view at `offset_s` on timeline `tl`.
    pub fn new(tl: &Timeline, offset_s: f64) -> Picker {
        Picker {
            local_start: tl.start_s - offset_s,
            fps: tl.fps,
            frames: tl.frames,
            next: 0,
        }
    }

    fn local(&self, i: u64) -> f64 {
        self.local_start + i as f64 / self.fps
    }

    /// A source frame with local time `t` was decoded: returns the timeline frames that
    /// the *previous* source frame must fill (those before `t`).
    pub fn advance_to(&mut self, t: f64) -> Range<u64> {
        let from = self.next;
        while self.next < self.frames && self.local(self.next) < t - EPS {
            self.next += 1;
        }
        from..self.next
    }

    /// The stream ended; its last frame is shown until local time `end_t`. Returns the
    /// timeline frames the last source frame must fill.
    pub fn finish(&mut self, end_t: f64) -> Range<u64> {
        self.advance_to(end_t)
    }

    /// Next timeline frame to fill.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// True when every timeline frame is filled.
    pub fn done(&self) -> bool {
        self.next >= self.frames
    }

    /// Local time of the next timeline frame to fill.
    pub fn next_local_time(&self) -> f64 {
        self.local(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick_all(tl: &Timeline, offset: f64, times: &[f64], frame_dur: f64) -> Vec<usize> {
        let mut p = Picker::new(tl, offset);
        let mut out = vec![usize::MAX; tl.frames as usize];
        for (k, &t) in times.iter().enumerate() {
            for i in p.advance_to(t) {
                out[i as usize] = k.saturating_sub(1);
            }
        }
        for i in p.finish(times[times.len() - 1] + frame_dur) {
            out[i as usize] = times.len() - 1;
        }
        out
    }

    #[test]
    fn same_rate_maps_one_to_one() {
        let times: Vec<f64> = (0..30).map(|k| k as f64 / 15.0).collect();
        let tl = Timeline::for_views(
            &[ViewSpan {
                offset_s: 0.0,
                duration_s: 2.0,
            }],
            15.0,
        )
        .unwrap();
        assert_eq!(tl.frames, 30);
        assert_eq!(
            pick_all(&tl, 0.0, &times, 1.0 / 15.0),
            (0..30).collect::<Vec<_>>()
        );
    }

    #[test]
    fn views_with_other_rates_and_offsets_hold_their_latest_frame() {
        // View A: 10 fps from session time 0; view B: 4 fps from session time 0.3.
        let a = ViewSpan {
            offset_s: 0.0,
            duration_s: 3.0,
        };
        let b = ViewSpan {
            offset_s: 0.3,
            duration_s: 2.0,
        };
        let tl = Timeline::for_views(&[a, b], 5.0).unwrap();
        assert_eq!((tl.start_s, tl.frames), (0.3, 10)); // 0.3 .. 2.3 s at 5 fps
        let tb: Vec<f64> = (0..8).map(|k| k as f64 / 4.0).collect();
        let got = pick_all(&tl, 0.3, &tb, 0.25);
        // Timeline frame i at session 0.3 + 0.2 i = local 0.2 i in B: frame floor(0.8 i).
        let want: Vec<usize> = (0..10)
            .map(|i| (0.8 * i as f64 + 1e-9).floor() as usize)
            .collect();
        assert_eq!(got, want);
        let ta: Vec<f64> = (0..30).map(|k| k as f64 / 10.0).collect();
        let got = pick_all(&tl, 0.0, &ta, 0.1);
        let want: Vec<usize> = (0..10).map(|i| 3 + 2 * i).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn variable_frame_rate_uses_timestamps() {
        let times = [0.0, 0.05, 0.3, 0.35, 0.9];
        let tl = Timeline {
            fps: 10.0,
            start_s: 0.0,
            frames: 10,
        };
        let got = pick_all(&tl, 0.0, &times, 0.1);
        assert_eq!(got, vec![0, 1, 1, 2, 3, 3, 3, 3, 3, 4]);
    }

    #[test]
    fn segments_map_to_half_open_frame_ranges() {
        let tl = Timeline {
            fps: 4.0,
            start_s: 0.5,
            frames: 20,
        };
        assert_eq!(tl.frame_range(1.0, 2.0), 2..6);
        assert_eq!(tl.frame_range(0.0, 0.6), 0..1);
        assert_eq!(tl.frame_range(9.0, 12.0), 20..20);
    }

    #[test]
    fn disjoint_views_are_an_error() {
        let a = ViewSpan {
            offset_s: 0.0,
            duration_s: 1.0,
        };
        let b = ViewSpan {
            offset_s: 2.0,
            duration_s: 1.0,
        };
        assert!(Timeline::for_views(&[a, b], 5.0)
            .unwrap_err()
            .contains("do not overlap"));
    }
}
