//! `timeline/<session>.png` of `train predict`: the per-frame class scores stacked over
//! time, the predicted segments as a colour band under them and, when the cache has them,
//! the true segments as a second band. One colour per class throughout.

use std::path::Path;

use plotters::prelude::*;

use super::{draw_err, font, path_err, register_fonts, PlotError, FONT};
use crate::report::timeline::Scores;

/// Size of a timeline picture in pixels, for `classes` classes: 1400 x 560, taller when the
/// legend (one row per class, in the score panel's right margin) needs it.
pub fn timeline_size(classes: usize) -> (u32, u32) {
    // The score panel is 62% of the body under the title (~42 px with margins).
    let legend = LEGEND_TOP + LEGEND_ROW * classes as u32 + 10;
    (1400, 560.max((legend * 100).div_ceil(62) + 42))
}

const LEGEND_TOP: u32 = 14;
const LEGEND_ROW: u32 = 22;

/// Matplotlib's tab20 order: tab10, then tab10's light tints.
const PALETTE: [RGBColor; 20] = [
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
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// The colour of class `c`: tab20 for the first 20, then hues a golden angle apart at two
/// lightnesses, so that no two classes of a dataset share a colour.
pub fn class_color(c: usize) -> RGBColor {
    if let Some(col) = PALETTE.get(c) {
        return *col;
    }
    let k = c - PALETTE.len();
    let hue = (k as f64 * 0.381_966_011_250_105).fract();
    let light = if k.is_multiple_of(2) { 0.45 } else { 0.65 };
    let (r, g, b) = HSLColor(hue, 0.65, light).rgb();
    RGBColor(r, g, b)
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
    let root = BitMapBackend::new(path, timeline_size(p.classes.len())).into_drawing_area();
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
        let (x, y) = (
            top.dim_in_pixel().0 as i32 - 185,
            (LEGEND_TOP + LEGEND_ROW * c as u32) as i32,
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws a timeline of `classes` classes (each the top score for a stretch) at its
    /// size; `MVDRIVE_PLOT_OUT=DIR` keeps it as `DIR/timeline-many-classes.png`.
    fn render(classes: usize) -> (Vec<u8>, (u32, u32)) {
        let frames = classes * 10;
        let mut values = vec![0.0f32; frames * classes];
        for f in 0..frames {
            values[f * classes + f / 10] = 1.0;
        }
        let scores = Scores {
            frames,
            classes,
            values,
        };
        let names: Vec<String> = (0..classes).map(|c| format!("class {c}")).collect();
        let predicted: Vec<Span> = (0..classes)
            .map(|c| (c, c as f64, c as f64 + 1.0))
            .collect();
        let p = TimelinePlot {
            session: "s",
            classes: &names,
            scores: &scores,
            fps: 10.0,
            start_s: 0.0,
            predicted: &predicted,
            truth: None,
        };
        register_fonts().unwrap();
        if let Ok(out) = std::env::var("MVDRIVE_PLOT_OUT") {
            std::fs::create_dir_all(&out).unwrap();
            plot_timeline(&p, &Path::new(&out).join("timeline-many-classes.png")).unwrap();
        }
        let size = timeline_size(classes);
        let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
            draw_timeline(&root, &p).unwrap();
            root.present().unwrap();
        }
        (buf, size)
    }

    #[test]
    fn every_class_has_its_own_colour_and_a_legend_row_inside_the_picture() {
        let classes = 30;
        let colours: std::collections::HashSet<_> =
            (0..classes).map(|c| class_color(c).rgb()).collect();
        assert_eq!(colours.len(), classes, "two classes share a colour");
        assert_eq!(
            timeline_size(4),
            (1400, 560),
            "a few classes keep the usual size"
        );
        let (buf, (w, h)) = render(classes);
        assert!(h > 560, "30 legend rows need a taller picture");
        // Each class's swatch (16 x 14 px, in the legend column) is in the picture, the
        // last one too.
        for c in 0..classes {
            let (r, g, b) = class_color(c).rgb();
            let in_legend = (0..h as usize)
                .flat_map(|y| (w as usize - 200..w as usize).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let i = (y * w as usize + x) * 3;
                    buf[i..i + 3] == [r, g, b]
                })
                .count();
            assert!(in_legend >= 16 * 14, "class {c}: {in_legend} legend pixels");
        }
    }
}
