//! `timeline/<session>.png` of `train predict`: the per-frame class scores stacked over
//! time, the predicted segments as a colour band under them and, when the cache has them,
//! the true segments as a second band. One colour per class throughout.

use std::path::Path;

use plotters::prelude::*;

use super::{draw_err, font, path_err, register_fonts, PlotError, FONT};
use crate::report::timeline::Scores;

/// Size of a timeline picture in pixels.
pub const TIMELINE_SIZE: (u32, u32) = (1400, 560);

/// Matplotlib's tab10, then grey for anything beyond.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of class `c`.
pub fn class_color(c: usize) -> RGBColor {
    PALETTE[c % PALETTE.len()]
}

/// A segment to draw: (class, start, end), seconds.
pub type Span = (usize, f64, f64);

/// What one timeline picture shows; times in seconds on the session timeline.
pub struct TimelinePlot<'a> {
    /// Session id (the title).
    pub session: &'a str,
    /// Class names.
    pub classes: &'a [String],
    /// Per-frame scores (smoothed, as segmented).
    pub scores: &'a Scores,
    /// Timeline rate and the time of frame 0.
    pub fps: f64,
    /// See `fps`.
    pub start_s: f64,
    /// Predicted segments: (class, start, end).
    pub predicted: &'a [Span],
    /// True segments, when known.
    pub truth: Option<&'a [Span]>,
}

/// Write the picture to `path`.
pub fn plot_timeline(p: &TimelinePlot, path: &Path) -> Result<(), PlotError> {
    register_fonts()?;
    let root = BitMapBackend::new(path, TIMELINE_SIZE).into_drawing_area();
    let what = path.display().to_string();
    draw_timeline(&root, p).map_err(path_err(path))?;
    root.present().map_err(draw_err(&what))
}

/// Draw onto `root`.
pub fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    p: &TimelinePlot,
) -> Result<(), PlotError> {
    let err = draw_err::<DB::ErrorType>("timeline");
    root.fill(&WHITE).map_err(&err)?;
    let n = p.scores.frames.max(1);
    let (t0, t1) = (p.start_s, p.start_s + n as f64 / p.fps);
    let title = format!(
        "{}: {:.0} s, {} predicted segments{}",
        p.session,
        t1 - t0,
        p.predicted.len(),
        p.truth
            .map(|t| format!(", {} true", t.len()))
            .unwrap_or_default()
    );
    let body = root
        .margin(6, 6, 6, 6)
        .titled(&title, (FONT, 22).into_font().color(&BLACK))
        .map_err(&err)?;
    let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 as i32 * 62 / 100);
    let mut chart = ChartBuilder::on(&top)
        .margin_right(200)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(t0..t1, 0.0..1.0)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .y_desc("class score")
        .label_style(font(13.0))
        .axis_desc_style(font(14.0))
        .draw()
        .map_err(&err)?;
    // At most ~1500 points per class outline.
    let step = (n / 1500).max(1);
    let frames: Vec<usize> = (0..p.scores.frames).step_by(step).collect();
    let time = |f: usize| t0 + f as f64 / p.fps;
    let mut below = vec![0f64; frames.len()];
    for (c, name) in p.classes.iter().enumerate() {
        let above: Vec<f64> = frames
            .iter()
            .zip(&below)
            .map(|(&f, b)| b + p.scores.at(f, c) as f64)
            .collect();
        let mut outline: Vec<(f64, f64)> = frames
            .iter()
            .zip(&above)
            .map(|(&f, &y)| (time(f), y.min(1.0)))
            .collect();
        outline.extend(
            frames
                .iter()
                .zip(&below)
                .rev()
                .map(|(&f, &y)| (time(f), y.min(1.0))),
        );
        let color = class_color(c);
        chart
            .draw_series(std::iter::once(Polygon::new(
                outline,
                color.mix(0.85).filled(),
            )))
            .map_err(&err)?;
        // The legend, by hand in the right margin: a swatch and the class name per row.
        let (x, y) = (top.dim_in_pixel().0 as i32 - 185, 14 + 22 * c as i32);
        top.draw(&Rectangle::new([(x, y), (x + 16, y + 14)], color.filled()))
            .map_err(&err)?;
        top.draw(&Text::new(name.as_str(), (x + 24, y), font(14.0)))
            .map_err(&err)?;
        below = above;
    }
    draw_bands(&bottom, p, (t0, t1))
}

/// The predicted and true segments as rows of coloured boxes.
fn draw_bands<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &TimelinePlot,
    (t0, t1): (f64, f64),
) -> Result<(), PlotError> {
    let err = draw_err::<DB::ErrorType>("timeline bands");
    let rows: Vec<(&str, &[Span])> = std::iter::once(("predicted", p.predicted))
        .chain(p.truth.map(|t| ("truth", t)))
        .collect();
    let mut chart = ChartBuilder::on(area)
        .margin_right(200)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(t0..t1, 0.0..rows.len() as f64)
        .map_err(&err)?;
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("session time (s)")
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = y.floor() as usize;
            if (y - i as f64 - 0.5).abs() < 0.26 {
                names
                    .get(names.len().saturating_sub(i + 1))
                    .unwrap_or(&"")
                    .to_string()
            } else {
                String::new()
            }
        })
        .label_style(font(13.0))
        .axis_desc_style(font(14.0))
        .draw()
        .map_err(&err)?;
    for (i, (_, segs)) in rows.iter().enumerate() {
        let y = (rows.len() - 1 - i) as f64;
        chart
            .draw_series(segs.iter().map(|&(c, a, b)| {
                Rectangle::new([(a, y + 0.15), (b, y + 0.85)], class_color(c).filled())
            }))
            .map_err(&err)?;
    }
    Ok(())
}
