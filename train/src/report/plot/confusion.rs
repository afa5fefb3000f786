//! `confusion.png`: the confusion matrix as row-normalised shares with counts, class
//! names, support and a colour bar.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform};

use std::path::Path;

use super::{draw_err, font, path_err, register_fonts, PlotError, FONT};
use crate::report::metrics::ConfusionMatrix;

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

    root.fill(&WHITE).map_err(&err)?;
    let (w, _) = root.dim_in_pixel();
    let cx = w as i32 / 2;
    put(
        root,
        &confusion_title(cm),
        (cx, MARGIN + 4),
        font(20.0).pos(Pos::new(HPos::Center, VPos::Top)),
    )?;
    put(
        root,
        CONFUSION_SUBTITLE,
        (cx, MARGIN + 32),
        font(13.0)
            .color(&BLACK.mix(0.65))
            .pos(Pos::new(HPos::Center, VPos::Top)),
    )?;
    if n == 0 {
        return Ok(());
    }

    draw_cells(root, cm, &layout)?;
    draw_class_names(root, cm, &layout)?;
    draw_colour_bar(root, cm, &layout)?;
    Ok(())
}

/// Draws `s` at `pos` in `style`.
fn put<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &str,
    pos: (i32, i32),
    style: TextStyle,
) -> Result<(), PlotError> {
    root.draw(&Text::new(s.to_string(), pos, style))
        .map_err(draw_err::<DB::ErrorType>("confusion plot"))
}

/// Where the matrix sits: its top-left corner, cell size, classes, side and the gap
/// between cells.
struct Grid {
    ox: i32,
    oy: i32,
    cell: i32,
    n: usize,
    side: i32,
    gap: i32,
}

impl Grid {
    fn of(cm: &ConfusionMatrix, layout: &ConfusionLayout) -> Grid {
        let (ox, oy) = layout.origin;
        let (cell, n) = (layout.cell, cm.num_classes());
        Grid {
            ox,
            oy,
            cell,
            n,
            side: n as i32 * cell,
            gap: i32::from(cell >= 12),
        }
    }

    /// `(ox, oy, cell, n, side, gap)`.
    fn parts(&self) -> (i32, i32, i32, usize, i32, i32) {
        (self.ox, self.oy, self.cell, self.n, self.side, self.gap)
    }
}

/// The cells, coloured by row share, with their counts, and the outline.
fn draw_cells<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cm: &ConfusionMatrix,
    layout: &ConfusionLayout,
) -> Result<(), PlotError> {
    let err = draw_err::<DB::ErrorType>("confusion plot");
    let (ox, oy, cell, n, side, gap) = Grid::of(cm, layout).parts();
    // Cells.
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
                    put(
                        root,
                        &s,
                        (x + (cell - gap) / 2, y + (cell - gap) / 2 + v_nudge(size)),
                        font(size)
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )?;
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

    Ok(())
}

/// Class names (rows left, columns below, rotated), axis titles and the support column.
fn draw_class_names<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cm: &ConfusionMatrix,
    layout: &ConfusionLayout,
) -> Result<(), PlotError> {
    let (ox, oy, cell, n, side, gap) = Grid::of(cm, layout).parts();
    // Class names: rows on the left (right-aligned), columns below (rotated, reading up).
    let lf = layout.label_font;
    if layout.show_labels {
        for (i, label) in layout.labels.iter().enumerate() {
            let mid = i as i32 * cell + (cell - gap) / 2;
            put(
                root,
                label,
                (ox - 8, oy + mid + v_nudge(lf)),
                font(lf).pos(Pos::new(HPos::Right, VPos::Center)),
            )?;
            put(
                root,
                label,
                (ox + mid + v_nudge(lf), oy + side + 8),
                font(lf)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            )?;
        }
    }
    // Axis titles.
    let (_, h) = root.dim_in_pixel();
    put(
        root,
        "predicted class",
        (
            ox + side / 2,
            h as i32 - MARGIN - AXIS_TITLE_H / 2 + v_nudge(15.0),
        ),
        font(15.0).pos(Pos::new(HPos::Center, VPos::Center)),
    )?;
    put(
        root,
        "true class",
        (MARGIN + AXIS_TITLE_H / 2 + v_nudge(15.0), oy + side / 2),
        font(15.0)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    )?;

    // Support column.
    let sx = layout.support_x;
    if layout.show_labels {
        put(
            root,
            "n",
            (sx, oy - 6),
            font(13.0)
                .color(&BLACK.mix(0.65))
                .pos(Pos::new(HPos::Left, VPos::Bottom)),
        )?;
        for t in 0..n {
            let mid = t as i32 * cell + (cell - gap) / 2;
            put(
                root,
                &cm.support(t).to_string(),
                (sx, oy + mid + v_nudge(lf)),
                font(lf)
                    .color(&BLACK.mix(0.65))
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )?;
        }
    }

    Ok(())
}

/// The colour bar, 100% at the top.
fn draw_colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cm: &ConfusionMatrix,
    layout: &ConfusionLayout,
) -> Result<(), PlotError> {
    let err = draw_err::<DB::ErrorType>("confusion plot");
    let (_, oy, _, _, side, _) = Grid::of(cm, layout).parts();
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
        put(
            root,
            name,
            (bx + BAR_W + 6, y + v_nudge(12.0)),
            font(12.0).pos(Pos::new(HPos::Left, VPos::Center)),
        )?;
    }
    Ok(())
}
