//! Plots written next to the checkpoints: `metrics.png` (loss and validation scores per
//! epoch) and `confusion.png` (a row-normalised confusion heat map with counts).
//!
//! Rendering is pure Rust (plotters' bitmap backend): text uses DejaVu Sans, embedded in
//! the binary at build time from `/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf` (Debian
//! package `fonts-dejavu-core`, installed by `make setup`), so no system font library is
//! needed at run time. NaN values (no validation in an epoch, an empty eval set) are left
//! out of the lines; a single epoch is drawn as points.
//!
//! [`plot_metrics`] and [`plot_confusion`] write PNG files; [`draw_metrics`] and
//! [`draw_confusion`] draw onto any plotters drawing area (e.g. an in-memory bitmap).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::report::metrics::EpochMetrics;

/// Size of `metrics.png` in pixels.
pub const METRICS_SIZE: (u32, u32) = (1000, 600);

/// The font family every text of these plots uses (registered by [`register_fonts`]).
pub(crate) const FONT: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");

/// Errors from plotting.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The embedded font could not be registered (a corrupt font file at build time).
    #[error(
        "the embedded DejaVu Sans font could not be loaded; reinstall fonts-dejavu-core \
         (`make setup`) and rebuild"
    )]
    Font,
    /// Drawing or encoding failed.
    #[error("drawing {what}: {msg}")]
    Draw {
        /// What was being drawn (usually the output file).
        what: String,
        /// The plotters error.
        msg: String,
    },
}

/// Registers the embedded DejaVu Sans as plotters' `sans-serif` family. Idempotent and
/// thread-safe; every plotting function here calls it first.
pub fn register_fonts() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// The plot font at `size` points.
pub(crate) fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(
        FontFamily::Name(FONT),
        size,
        FontStyle::Normal,
    ))
}

pub(crate) fn draw_err<E: std::error::Error + Send + Sync>(
    what: &str,
) -> impl Fn(DrawingAreaErrorKind<E>) -> PlotError + '_ {
    move |e| PlotError::Draw {
        what: what.to_string(),
        msg: e.to_string(),
    }
}

pub(crate) fn path_err(path: &Path) -> impl Fn(PlotError) -> PlotError + '_ {
    move |e| match e {
        PlotError::Draw { msg, .. } => PlotError::Draw {
            what: path.display().to_string(),
            msg,
        },
        other => other,
    }
}

/// Writes `metrics.png`-style training curves ([`METRICS_SIZE`]) to `path`: train/val loss
/// on the left, validation top-1, mean class accuracy and macro-F1 on the right.
pub fn plot_metrics(rows: &[EpochMetrics], path: &Path) -> Result<(), PlotError> {
    register_fonts()?;
    let root = BitMapBackend::new(path, METRICS_SIZE).into_drawing_area();
    let what = path.display().to_string();
    draw_metrics(&root, rows).map_err(path_err(path))?;
    root.present().map_err(draw_err(&what))
}

/// A curve: name, colour, one y value per row.
struct Curve<'a> {
    name: &'a str,
    color: RGBColor,
    value: fn(&EpochMetrics) -> f64,
}

const BLUE_C: RGBColor = RGBColor(31, 119, 180);
const ORANGE_C: RGBColor = RGBColor(255, 127, 14);
const GREEN_C: RGBColor = RGBColor(44, 160, 44);
const RED_C: RGBColor = RGBColor(214, 39, 40);

/// Draws the training curves onto `root` (any size; [`METRICS_SIZE`] is the intended one).
pub fn draw_metrics<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[EpochMetrics],
) -> Result<(), PlotError> {
    register_fonts()?;
    let err = draw_err::<DB::ErrorType>("metrics plot");
    let mut rows: Vec<EpochMetrics> = rows.to_vec();
    rows.sort_by_key(|r| r.epoch);

    root.fill(&WHITE).map_err(&err)?;
    let title = metrics_title(&rows);
    // A little room above the title: ab_glyph draws text slightly above its layout box.
    let body = root
        .margin(6, 0, 0, 0)
        .titled(&title, (FONT, 22).into_font().color(&BLACK))
        .map_err(&err)?;
    let panels = body.split_evenly((1, 2));

    let losses = [
        Curve {
            name: "train loss",
            color: BLUE_C,
            value: |r| r.train_loss,
        },
        Curve {
            name: "val loss",
            color: ORANGE_C,
            value: |r| r.val_loss,
        },
    ];
    let scores = [
        Curve {
            name: "top-1 accuracy",
            color: BLUE_C,
            value: |r| r.top1,
        },
        Curve {
            name: "mean class accuracy",
            color: GREEN_C,
            value: |r| r.mean_class_acc,
        },
        Curve {
            name: "macro-F1",
            color: RED_C,
            value: |r| r.macro_f1,
        },
    ];
    let loss_range = value_range(&rows, &losses);
    draw_panel(
        &panels[0],
        &rows,
        "Loss",
        "loss",
        &losses,
        loss_range,
        SeriesLabelPosition::UpperRight,
    )?;
    draw_panel(
        &panels[1],
        &rows,
        "Validation scores",
        "score",
        &scores,
        (0.0, 1.0),
        SeriesLabelPosition::LowerRight,
    )?;
    Ok(())
}

fn metrics_title(rows: &[EpochMetrics]) -> String {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return "Training metrics (no epochs yet)".to_string();
    };
    // Epochs are numbered from 1 here, as in `train fit`'s log (metrics.csv keeps the
    // 0-based index).
    let epochs = if first.epoch == last.epoch {
        format!("epoch {}", first.epoch + 1)
    } else {
        format!("epochs {}\u{2013}{}", first.epoch + 1, last.epoch + 1)
    };
    let best = rows
        .iter()
        .filter(|r| r.top1.is_finite())
        .max_by(|a, b| a.top1.total_cmp(&b.top1));
    match best {
        Some(b) => format!(
            "Training metrics, {epochs} \u{b7} best top-1 {:.1}% (epoch {})",
            b.top1 * 100.0,
            b.epoch + 1
        ),
        None => format!("Training metrics, {epochs}"),
    }
}

/// The padded range of the finite values of `curves`; (0, 1) when there are none.
fn value_range(rows: &[EpochMetrics], curves: &[Curve]) -> (f64, f64) {
    let values = rows
        .iter()
        .flat_map(|r| curves.iter().map(move |c| (c.value)(r)))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.06
    } else {
        (hi.abs() * 0.1).max(0.1)
    };
    let mut lo_p = lo - pad;
    if lo >= 0.0 && lo_p < 0.0 {
        lo_p = 0.0;
    }
    (lo_p, hi + pad)
}

/// Consecutive runs of finite points (a NaN breaks the line).
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    points
        .split(|(_, y)| !y.is_finite())
        .filter(|run| !run.is_empty())
        .map(|run| run.to_vec())
        .collect()
}

fn tick_decimals(span: f64) -> usize {
    if !span.is_finite() || span <= 0.0 {
        return 2;
    }
    (2.0 - span.log10().floor()).clamp(0.0, 6.0) as usize
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[EpochMetrics],
    caption: &str,
    y_desc: &str,
    curves: &[Curve],
    (y0, y1): (f64, f64),
    legend_at: SeriesLabelPosition,
) -> Result<(), PlotError> {
    let err = draw_err::<DB::ErrorType>(caption);
    let (e0, e1) = match (rows.first(), rows.last()) {
        (Some(f), Some(l)) => (f64::from(f.epoch + 1), f64::from(l.epoch + 1)),
        _ => (0.0, 1.0),
    };
    let x_pad = ((e1 - e0) * 0.03).max(0.5);
    let (x0, x1) = (e0 - x_pad, e1 + x_pad);
    // y1 > y0 always (value_range pads), but guard a degenerate caller-provided range.
    let y1 = if y1 > y0 { y1 } else { y0 + 1.0 };
    let y_top = if (y0, y1) == (0.0, 1.0) { 1.02 } else { y1 };

    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18).into_font())
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(x0..x1, y0..y_top)
        .map_err(&err)?;

    let n_epochs = (e1 - e0).round() as usize + 1;
    let decimals = tick_decimals(y1 - y0);
    let x_fmt = |x: &f64| {
        if (x - x.round()).abs() < 1e-6 {
            format!("{}", x.round() as i64)
        } else {
            String::new()
        }
    };
    let y_fmt = |y: &f64| format!("{y:.decimals$}");
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(n_epochs.clamp(2, 11))
        .y_labels(8)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .draw()
        .map_err(&err)?;

    for curve in curves {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (f64::from(r.epoch + 1), (curve.value)(r)))
            .collect();
        let color = curve.color;
        for run in finite_runs(&points) {
            if run.len() > 1 {
                chart
                    .draw_series(LineSeries::new(run, color.stroke_width(2)))
                    .map_err(&err)?;
            }
        }
        // Markers carry the legend entry: always drawn (even with no finite point) so the
        // legend lists every curve.
        let markers = points
            .into_iter()
            .filter(|(_, y)| y.is_finite())
            .map(move |p| Circle::new(p, 3, color.filled()));
        chart
            .draw_series(markers)
            .map_err(&err)?
            .label(curve.name)
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (22, 0)], color.stroke_width(2))
                    + Circle::new((11, 0), 3, color.filled())
            });
    }

    if rows.is_empty() {
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            "no epochs recorded yet",
            (w as i32 / 2, h as i32 / 2),
            TextStyle::from((FONT, 16).into_font())
                .color(&BLACK.mix(0.6))
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(&err)?;
    }

    chart
        .configure_series_labels()
        .position(legend_at)
        .margin(10)
        .legend_area_size(30)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(&err)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Confusion matrix
mod confusion;
pub mod timeline;

pub use confusion::{confusion_size, draw_confusion, plot_confusion};
