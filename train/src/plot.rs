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
use plotters::style::{FontStyle, FontTransform};

use crate::metrics::{ConfusionMatrix, EpochMetrics};

/// Size of `metrics.png` in pixels.
pub const METRICS_SIZE: (u32, u32) = (1000, 600);

/// The font family every text of these plots uses (registered by [`register_fonts`]).
const FONT: &str = "sans-serif";

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

fn draw_err<E: std::error::Error + Send + Sync>(
    what: &str,
) -> impl Fn(DrawingAreaErrorKind<E>) -> PlotError + '_ {
    move |e| PlotError::Draw {
        what: what.to_string(),
        msg: e.to_string(),
    }
}

fn path_err(path: &Path) -> impl Fn(PlotError) -> PlotError + '_ {
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
    let epochs = if first.epoch == last.epoch {
        format!("epoch {}", first.epoch)
    } else {
        format!("epochs {}\u{2013}{}", first.epoch, last.epoch)
    };
    let best = rows
        .iter()
        .filter(|r| r.top1.is_finite())
        .max_by(|a, b| a.top1.total_cmp(&b.top1));
    match best {
        Some(b) => format!(
            "Training metrics, {epochs} \u{b7} best top-1 {:.1}% (epoch {})",
            b.top1 * 100.0,
            b.epoch
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
        (Some(f), Some(l)) => (f64::from(f.epoch), f64::from(l.epoch)),
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
            .map(|r| (f64::from(r.epoch), (curve.value)(r)))
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
// ---------------------------------------------------------------------------------------

/// Pixel layout of a confusion plot, computed from the class count and label widths.
struct ConfusionLayout {
    size: (u32, u32),
    /// Top-left corner of the matrix.
    origin: (i32, i32),
    cell: i32,
    label_font: f64,
    count_font: f64,
    show_labels: bool,
    labels: Vec<String>,
    support_x: i32,
    bar_x: i32,
}

const MARGIN: i32 = 16;
const TITLE_H: i32 = 66;
const AXIS_TITLE_H: i32 = 22;
const BAR_W: i32 = 18;
const MAX_LABEL_CHARS: usize = 28;

fn text_width(text: &str, size: f64) -> i32 {
    FontDesc::new(FontFamily::Name(FONT), size, FontStyle::Normal)
        .box_size(text)
        .map(|(w, _)| w as i32)
        .unwrap_or((text.chars().count() as f64 * size * 0.6) as i32)
}

fn display_label(labels: &[String], i: usize) -> String {
    let raw = labels.get(i).map_or_else(|| i.to_string(), |s| s.clone());
    let raw = raw.replace(['\n', '\r', '\t'], " ");
    if raw.chars().count() > MAX_LABEL_CHARS {
        let cut: String = raw.chars().take(MAX_LABEL_CHARS - 1).collect();
        format!("{cut}\u{2026}")
    } else {
        raw
    }
}

fn confusion_layout(cm: &ConfusionMatrix, labels: &[String]) -> ConfusionLayout {
    let n = cm.num_classes();
    let cell = if n == 0 {
        0
    } else {
        (720 / n as i32).clamp(3, 90)
    };
    let label_font = (f64::from(cell) * 0.6).clamp(9.0, 14.0);
    let show_labels = cell >= 9;
    let count_font = (f64::from(cell) * 0.32).clamp(8.0, 16.0);
    let labels: Vec<String> = (0..n).map(|i| display_label(labels, i)).collect();
    let label_w = if show_labels {
        labels
            .iter()
            .map(|l| text_width(l, label_font))
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    let side = n as i32 * cell;
    let origin_x = MARGIN + AXIS_TITLE_H + 6 + label_w + 8;
    let origin_y = MARGIN + TITLE_H;
    let max_support = (0..n).map(|c| cm.support(c)).max().unwrap_or(0);
    let support_w = text_width(&format!("n={max_support}"), label_font).max(text_width("n", 13.0));
    let support_x = origin_x + side + 8;
    let bar_x = support_x + support_w + 22;
    let bar_labels_w = text_width("100%", 12.0) + 8;
    let width = (bar_x + BAR_W + bar_labels_w + MARGIN)
        .max(2 * MARGIN + text_width(&confusion_title(cm), 20.0))
        .max(2 * MARGIN + text_width(CONFUSION_SUBTITLE, 13.0));
    let height = origin_y + side.max(120) + 8 + label_w + 10 + AXIS_TITLE_H + MARGIN;
    ConfusionLayout {
        size: (width as u32, height as u32),
        origin: (origin_x, origin_y),
        cell,
        label_font,
        count_font,
        show_labels,
        labels,
        support_x,
        bar_x,
    }
}

const CONFUSION_SUBTITLE: &str =
    "rows: true class, columns: predicted class; colour: share of the row; numbers: counts";

fn confusion_title(cm: &ConfusionMatrix) -> String {
    let total = cm.total();
    if total == 0 {
        let n = cm.num_classes();
        let s = if n == 1 { "" } else { "es" };
        return format!("Confusion matrix ({n} class{s}, no samples)");
    }
    format!(
        "Confusion matrix ({} samples, top-1 {:.1}%, mean class acc {:.1}%, macro-F1 {:.3})",
        total,
        cm.accuracy() * 100.0,
        nan0(cm.mean_class_accuracy()) * 100.0,
        nan0(cm.macro_f1())
    )
}

fn nan0(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v
    }
}

/// The pixel size [`plot_confusion`] uses for this matrix and these labels.
pub fn confusion_size(cm: &ConfusionMatrix, labels: &[String]) -> Result<(u32, u32), PlotError> {
    register_fonts()?;
    Ok(confusion_layout(cm, labels).size)
}

/// Writes a confusion heat map to `path`: colour is the row-normalised share (recall on
/// the diagonal), each cell shows its count, class names label both axes, and a column
/// headed `n` gives each true class's support. `labels[i]` names class `i`; missing labels are
/// shown as the class index. The image grows with the class count (see [`confusion_size`]).
pub fn plot_confusion(
    cm: &ConfusionMatrix,
    labels: &[String],
    path: &Path,
) -> Result<(), PlotError> {
    let size = confusion_size(cm, labels)?;
    let root = BitMapBackend::new(path, size).into_drawing_area();
    let what = path.display().to_string();
    draw_confusion(&root, cm, labels).map_err(path_err(path))?;
    root.present().map_err(draw_err(&what))
}

/// matplotlib's "Blues" colour map, from 0 (near white) to 1 (dark blue).
fn blues(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (247, 251, 255),
        (222, 235, 247),
        (198, 219, 239),
        (158, 202, 225),
        (107, 174, 214),
        (66, 146, 198),
        (33, 113, 181),
        (8, 81, 156),
        (8, 48, 107),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

const NO_SUPPORT: RGBColor = RGBColor(228, 228, 228);

/// ab_glyph text sits about a quarter of its size too high when centred; this nudges it.
fn v_nudge(size: f64) -> i32 {
    (size * 0.22).round() as i32
}

/// Draws a confusion heat map onto `root`, which should be [`confusion_size`] big.
pub fn draw_confusion<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cm: &ConfusionMatrix,
    labels: &[String],
) -> Result<(), PlotError> {
    register_fonts()?;
    let err = draw_err::<DB::ErrorType>("confusion plot");
    let layout = confusion_layout(cm, labels);
    let n = cm.num_classes();
    let (ox, oy) = layout.origin;
    let cell = layout.cell;
    let side = n as i32 * cell;
    let font = |size: f64| {
        TextStyle::from(FontDesc::new(
            FontFamily::Name(FONT),
            size,
            FontStyle::Normal,
        ))
    };
    let text = |s: &str, pos: (i32, i32), style: TextStyle| {
        root.draw(&Text::new(s.to_string(), pos, style))
    };

    root.fill(&WHITE).map_err(&err)?;
    let (w, _) = root.dim_in_pixel();
    let cx = w as i32 / 2;
    text(
        &confusion_title(cm),
        (cx, MARGIN + 4),
        font(20.0).pos(Pos::new(HPos::Center, VPos::Top)),
    )
    .map_err(&err)?;
    text(
        CONFUSION_SUBTITLE,
        (cx, MARGIN + 32),
        font(13.0)
            .color(&BLACK.mix(0.65))
            .pos(Pos::new(HPos::Center, VPos::Top)),
    )
    .map_err(&err)?;
    if n == 0 {
        return Ok(());
    }

    // Cells.
    let gap = i32::from(cell >= 12);
    for t in 0..n {
        let support = cm.support(t);
        for p in 0..n {
            let count = cm.count(t, p);
            let share = if support == 0 {
                f64::NAN
            } else {
                count as f64 / support as f64
            };
            let fill = if support == 0 {
                NO_SUPPORT
            } else {
                blues(share)
            };
            let x = ox + p as i32 * cell;
            let y = oy + t as i32 * cell;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell - gap, y + cell - gap)],
                fill.filled(),
            ))
            .map_err(&err)?;
            if cell >= 18 {
                let s = count.to_string();
                let mut size = layout.count_font;
                while size > 7.0 && text_width(&s, size) > cell - 4 {
                    size -= 1.0;
                }
                if text_width(&s, size) <= cell - 2 {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    let ink = if count == 0 {
                        ink.mix(0.45)
                    } else {
                        ink.mix(1.0)
                    };
                    text(
                        &s,
                        (x + (cell - gap) / 2, y + (cell - gap) / 2 + v_nudge(size)),
                        font(size)
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )
                    .map_err(&err)?;
                }
            }
        }
    }
    // Outline.
    root.draw(&Rectangle::new(
        [(ox - 1, oy - 1), (ox + side - gap, oy + side - gap)],
        BLACK.mix(0.5).stroke_width(1),
    ))
    .map_err(&err)?;

    // Class names: rows on the left (right-aligned), columns below (rotated, reading up).
    let lf = layout.label_font;
    if layout.show_labels {
        for (i, label) in layout.labels.iter().enumerate() {
            let mid = i as i32 * cell + (cell - gap) / 2;
            text(
                label,
                (ox - 8, oy + mid + v_nudge(lf)),
                font(lf).pos(Pos::new(HPos::Right, VPos::Center)),
            )
            .map_err(&err)?;
            text(
                label,
                (ox + mid + v_nudge(lf), oy + side + 8),
                font(lf)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            )
            .map_err(&err)?;
        }
    }
    // Axis titles.
    let (_, h) = root.dim_in_pixel();
    text(
        "predicted class",
        (
            ox + side / 2,
            h as i32 - MARGIN - AXIS_TITLE_H / 2 + v_nudge(15.0),
        ),
        font(15.0).pos(Pos::new(HPos::Center, VPos::Center)),
    )
    .map_err(&err)?;
    text(
        "true class",
        (MARGIN + AXIS_TITLE_H / 2 + v_nudge(15.0), oy + side / 2),
        font(15.0)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    )
    .map_err(&err)?;

    // Support column.
    let sx = layout.support_x;
    if layout.show_labels {
        text(
            "n",
            (sx, oy - 6),
            font(13.0)
                .color(&BLACK.mix(0.65))
                .pos(Pos::new(HPos::Left, VPos::Bottom)),
        )
        .map_err(&err)?;
        for t in 0..n {
            let mid = t as i32 * cell + (cell - gap) / 2;
            text(
                &cm.support(t).to_string(),
                (sx, oy + mid + v_nudge(lf)),
                font(lf)
                    .color(&BLACK.mix(0.65))
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
            .map_err(&err)?;
        }
    }

    // Colour bar: 100% at the top.
    let bx = layout.bar_x;
    let bar_h = side.max(120);
    for k in 0..bar_h {
        let t = 1.0 - f64::from(k) / f64::from((bar_h - 1).max(1));
        root.draw(&Rectangle::new(
            [(bx, oy + k), (bx + BAR_W, oy + k + 1)],
            blues(t).filled(),
        ))
        .map_err(&err)?;
    }
    root.draw(&Rectangle::new(
        [(bx, oy), (bx + BAR_W, oy + bar_h)],
        BLACK.mix(0.5).stroke_width(1),
    ))
    .map_err(&err)?;
    for (frac, name) in [(1.0, "100%"), (0.5, "50%"), (0.0, "0%")] {
        let y = oy + ((1.0 - frac) * f64::from(bar_h)).round() as i32;
        root.draw(&PathElement::new(
            vec![(bx + BAR_W, y), (bx + BAR_W + 4, y)],
            BLACK.stroke_width(1),
        ))
        .map_err(&err)?;
        text(
            name,
            (bx + BAR_W + 6, y + v_nudge(12.0)),
            font(12.0).pos(Pos::new(HPos::Left, VPos::Center)),
        )
        .map_err(&err)?;
    }
    Ok(())
}
