//! Metrics (confusion matrix, summaries, CSV) and the two PNG plots. Set
//! `MVDRIVE_PLOT_OUT=DIR` to keep the rendered PNGs for a look.

use mvdrive_train::report::{metrics, plot};

use std::path::Path;

use metrics::{ConfusionMatrix, EpochMetrics, MetricsCsv, MetricsError};
use plotters::prelude::*;

const EPS: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < EPS
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn matrix(rows: &[&[u64]]) -> ConfusionMatrix {
    let mut cm = ConfusionMatrix::new(rows.len());
    for (t, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), rows.len(), "square test matrix");
        for (p, &n) in row.iter().enumerate() {
            cm.add_n(t, p, n).unwrap();
        }
    }
    cm
}

// ---------------------------------------------------------------------------------------
// Confusion matrix metrics
// ---------------------------------------------------------------------------------------

#[test]
fn perfect_matrix_scores_one_everywhere() {
    let mut cm = ConfusionMatrix::new(3);
    for (c, n) in [(0, 4), (1, 7), (2, 1)] {
        for _ in 0..n {
            cm.add(c, c).unwrap();
        }
    }
    assert_eq!(cm.total(), 12);
    assert_eq!(cm.correct(), 12);
    assert_eq!(cm.accuracy(), 1.0);
    assert_eq!(cm.mean_class_accuracy(), 1.0);
    assert_eq!(cm.macro_f1(), 1.0);
    for m in cm.per_class() {
        assert_eq!((m.precision, m.recall, m.f1), (1.0, 1.0, 1.0));
    }
}

/// rows = true class, columns = predicted class:
///
/// ```text
///            pred A  pred B  pred C | support
///   true A      4       1       0   |    5
///   true B      2       6       2   |   10
///   true C      0       1       3   |    4
///   predicted   6       8       5   |   19
/// ```
///
/// top-1     = (4 + 6 + 3) / 19 = 13/19
/// recall    A = 4/5 = 0.8, B = 6/10 = 0.6, C = 3/4 = 0.75
/// mean class accuracy = (0.8 + 0.6 + 0.75) / 3 = 2.15/3 = 43/60
/// precision A = 4/6, B = 6/8, C = 3/5
/// F1 = 2tp/(support + predicted): A = 8/11, B = 12/18 = 2/3, C = 6/9 = 2/3
/// macro-F1  = (8/11 + 2/3 + 2/3) / 3 = (24/33 + 44/33) / 3 = 68/99
#[test]
fn known_three_class_case() {
    let cm = matrix(&[&[4, 1, 0], &[2, 6, 2], &[0, 1, 3]]);
    assert_eq!(cm.total(), 19);
    assert!(close(cm.accuracy(), 13.0 / 19.0));
    assert!(close(cm.mean_class_accuracy(), 43.0 / 60.0));
    assert!(close(cm.macro_f1(), 68.0 / 99.0));

    let m = cm.per_class();
    assert_eq!((m[0].tp, m[0].support, m[0].predicted), (4, 5, 6));
    assert_eq!((m[1].tp, m[1].support, m[1].predicted), (6, 10, 8));
    assert_eq!((m[2].tp, m[2].support, m[2].predicted), (3, 4, 5));
    assert!(close(m[0].precision, 4.0 / 6.0));
    assert!(close(m[1].precision, 0.75));
    assert!(close(m[2].precision, 0.6));
    assert!(close(m[0].recall, 0.8));
    assert!(close(m[1].recall, 0.6));
    assert!(close(m[2].recall, 0.75));
    assert!(close(m[0].f1, 8.0 / 11.0));
    assert!(close(m[1].f1, 2.0 / 3.0));
    assert!(close(m[2].f1, 2.0 / 3.0));
    // F1 is the harmonic mean of precision and recall.
    for c in &m {
        let h = 2.0 * c.precision * c.recall / (c.precision + c.recall);
        assert!(close(c.f1, h));
    }
    assert!(close(cm.precision(1), 0.75));
    assert!(close(cm.recall(2), 0.75));
    assert!(close(cm.f1(0), 8.0 / 11.0));

    // The same matrix from individual samples.
    let mut by_add = ConfusionMatrix::new(3);
    for t in 0..3 {
        for p in 0..3 {
            for _ in 0..cm.count(t, p) {
                by_add.add(t, p).unwrap();
            }
        }
    }
    assert_eq!(by_add, cm);
}

/// Class C has support but is never predicted:
///
/// ```text
///            pred A  pred B  pred C | support
///   true A      3       1       0   |   4
///   true B      0       2       0   |   2
///   true C      1       1       0   |   2
///   predicted   4       4       0   |   8
/// ```
///
/// top-1 = 5/8; recall A = 3/4, B = 1, C = 0 -> mean class acc = 1.75/3 = 7/12
/// precision C = 0/0 = NaN (never predicted); F1 C = 0/(2+0) = 0 (counts in the mean)
/// F1 A = 6/8 = 3/4, B = 4/6 = 2/3 -> macro-F1 = (3/4 + 2/3 + 0)/3 = 17/36
#[test]
fn class_never_predicted() {
    let cm = matrix(&[&[3, 1, 0], &[0, 2, 0], &[1, 1, 0]]);
    assert!(close(cm.accuracy(), 5.0 / 8.0));
    assert!(close(cm.mean_class_accuracy(), 7.0 / 12.0));
    assert!(close(cm.macro_f1(), 17.0 / 36.0));
    let c = cm.class_metrics(2);
    assert!(c.precision.is_nan());
    assert_eq!(c.recall, 0.0);
    assert_eq!(c.f1, 0.0);
}

/// A class that is neither a target nor a prediction is excluded from macro-F1 and from
/// mean class accuracy; a class that is only predicted (no support) counts in macro-F1
/// with F1 = 0 but not in mean class accuracy.
#[test]
fn classes_without_support() {
    // The never-predicted case above plus an unused class D.
    let cm = matrix(&[&[3, 1, 0, 0], &[0, 2, 0, 0], &[1, 1, 0, 0], &[0, 0, 0, 0]]);
    let d = cm.class_metrics(3);
    assert!(d.precision.is_nan() && d.recall.is_nan() && d.f1.is_nan());
    assert!(close(cm.macro_f1(), 17.0 / 36.0));
    assert!(close(cm.mean_class_accuracy(), 7.0 / 12.0));

    // D only predicted: true A once predicted as D.
    // rows A [3,1,0,1], B [0,2,0,0], C [1,1,0,0], D [0,0,0,0]; predicted A 4, B 4, C 0, D 1.
    // F1 A = 6/(5+4) = 2/3, B = 4/(2+4) = 2/3, C = 0, D = 0/(0+1) = 0 -> macro = (4/3)/4 = 1/3.
    // recall A = 3/5, B = 1, C = 0 -> mean class acc = 1.6/3 = 8/15 (D excluded).
    let cm = matrix(&[&[3, 1, 0, 1], &[0, 2, 0, 0], &[1, 1, 0, 0], &[0, 0, 0, 0]]);
    assert_eq!(cm.class_metrics(3).f1, 0.0);
    assert!(cm.class_metrics(3).recall.is_nan());
    assert!(close(cm.macro_f1(), 1.0 / 3.0));
    assert!(close(cm.mean_class_accuracy(), 8.0 / 15.0));
    assert!(close(cm.accuracy(), 5.0 / 9.0));
}

#[test]
fn empty_matrix_is_nan_not_panic() {
    for n in [0, 3] {
        let cm = ConfusionMatrix::new(n);
        assert!(cm.accuracy().is_nan());
        assert!(cm.mean_class_accuracy().is_nan());
        assert!(cm.macro_f1().is_nan());
    }
    let cm = ConfusionMatrix::new(2);
    assert_eq!(cm.count(5, 0), 0);
    assert!(cm.row(9).is_empty());
}

#[test]
fn bad_indices_are_errors_and_change_nothing() {
    let mut cm = ConfusionMatrix::new(3);
    let e = cm.add(3, 0).unwrap_err();
    assert!(matches!(
        e,
        MetricsError::ClassOutOfRange {
            what: "target",
            index: 3,
            num_classes: 3
        }
    ));
    assert!(e.to_string().contains("out of range"), "{e}");
    assert!(matches!(
        cm.add(0, 7),
        Err(MetricsError::ClassOutOfRange {
            what: "predicted",
            ..
        })
    ));
    assert_eq!(cm.total(), 0);
}

#[test]
fn confusion_csv_is_exact() {
    let cm = matrix(&[&[4, 1, 0], &[2, 6, 2], &[0, 1, 3]]);
    let csv = cm.to_csv(&labels(&["texting", "drinking", "looking left"]));
    assert_eq!(
        csv,
        "true\\pred,texting,drinking,looking left\n\
         texting,4,1,0\n\
         drinking,2,6,2\n\
         looking left,0,1,3\n"
    );
    // Labels needing quotes are quoted; missing labels become the class index.
    let csv = cm.to_csv(&labels(&["a,b", "say \"hi\""]));
    assert_eq!(
        csv,
        "true\\pred,\"a,b\",\"say \"\"hi\"\"\",2\n\
         \"a,b\",4,1,0\n\
         \"say \"\"hi\"\"\",2,6,2\n\
         2,0,1,3\n"
    );
    assert_eq!(ConfusionMatrix::new(0).to_csv(&[]), "true\\pred\n");
}

// ---------------------------------------------------------------------------------------
// metrics.csv
// ---------------------------------------------------------------------------------------

fn epoch(e: u32, train: f64, val: f64, top1: f64) -> EpochMetrics {
    EpochMetrics {
        epoch: e,
        step: u64::from(e) * 100,
        train_loss: train,
        val_loss: val,
        top1,
        mean_class_acc: top1 * 0.9,
        macro_f1: top1 * 0.8,
        lr: 3e-4,
        seconds: 12.5,
    }
}

#[test]
fn metrics_csv_appends_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    {
        let mut w = MetricsCsv::open(&path).unwrap();
        assert_eq!(w.path(), path);
        w.append(&epoch(1, 1.5, 1.25, 0.5)).unwrap();
        // Rows are on disk as soon as append returns, before the writer is dropped.
        let now = std::fs::read_to_string(&path).unwrap();
        assert_eq!(now.lines().count(), 2);
        w.append(&epoch(2, 1.0, f64::NAN, f64::NAN)).unwrap();
    }
    {
        // A resumed run: header not repeated.
        let mut w = MetricsCsv::open(&path).unwrap();
        w.append(&epoch(3, 0.75, 0.5, 1.0)).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "epoch,step,train_loss,val_loss,top1,mean_class_acc,macro_f1,lr,seconds\n\
         1,100,1.5,1.25,0.5,0.45,0.4,0.0003,12.5\n\
         2,200,1.0,NaN,NaN,NaN,NaN,0.0003,12.5\n\
         3,300,0.75,0.5,1.0,0.9,0.8,0.0003,12.5\n"
    );

    let rows = MetricsCsv::read(&path).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], epoch(1, 1.5, 1.25, 0.5));
    assert_eq!(rows[2], epoch(3, 0.75, 0.5, 1.0));
    assert!(rows[1].val_loss.is_nan() && rows[1].top1.is_nan());
    assert_eq!(rows[1].train_loss, 1.0);
}

#[test]
fn metrics_csv_cuts_a_torn_row_and_rejects_other_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    std::fs::write(
        &path,
        format!(
            "{}\n1,10,2.0,2.0,0.1,0.1,0.1,0.01,3.0\n2,20,1.",
            EpochMetrics::CSV_HEADER
        ),
    )
    .unwrap();
    // A reader ignores the torn row.
    assert_eq!(MetricsCsv::read(&path).unwrap().len(), 1);
    let mut w = MetricsCsv::open(&path).unwrap();
    w.append(&epoch(2, 1.0, 1.0, 0.25)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!(
            "{}\n1,10,2.0,2.0,0.1,0.1,0.1,0.01,3.0\n2,200,1.0,1.0,0.25,0.225,0.2,0.0003,12.5\n",
            EpochMetrics::CSV_HEADER
        )
    );

    let other = dir.path().join("other.csv");
    std::fs::write(&other, "epoch,loss\n1,2.0\n").unwrap();
    let e = MetricsCsv::open(&other).unwrap_err();
    assert!(matches!(e, MetricsError::HeaderMismatch { .. }), "{e}");
    assert!(e.to_string().contains("other.csv"), "{e}");
    assert!(matches!(
        MetricsCsv::read(&other),
        Err(MetricsError::HeaderMismatch { .. })
    ));
    // The rejected file is untouched.
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        "epoch,loss\n1,2.0\n"
    );

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!("{}\n1,x,1,1,1,1,1,1,1\n", EpochMetrics::CSV_HEADER),
    )
    .unwrap();
    let e = MetricsCsv::read(&bad).unwrap_err();
    assert!(matches!(e, MetricsError::Parse { line: 2, .. }), "{e}");

    let missing = MetricsCsv::open(dir.path().join("no/such/dir/metrics.csv")).unwrap_err();
    assert!(matches!(missing, MetricsError::Io { .. }));
}

#[test]
fn epoch_metrics_serde_and_confusion() {
    let cm = matrix(&[&[4, 1, 0], &[2, 6, 2], &[0, 1, 3]]);
    let row = epoch(7, 0.5, f64::NAN, 0.0).with_confusion(&cm);
    assert!(close(row.top1, 13.0 / 19.0));
    assert!(close(row.mean_class_acc, 43.0 / 60.0));
    assert!(close(row.macro_f1, 68.0 / 99.0));
    let json = serde_json::to_value(row).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut expected: Vec<&str> = EpochMetrics::CSV_HEADER.split(',').collect();
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected);
    assert_eq!(json["epoch"], 7);
    assert!(json["val_loss"].is_null(), "NaN is null in JSON");
    let back: EpochMetrics = serde_json::from_value(json).unwrap();
    assert!(back.val_loss.is_nan());
    assert_eq!(back.macro_f1, row.macro_f1);
    let back = EpochMetrics::parse_csv_row(&row.csv_row()).unwrap();
    assert_eq!(back.top1, row.top1);
    assert_eq!(back.macro_f1, row.macro_f1);
}

// ---------------------------------------------------------------------------------------
// PNGs
// ---------------------------------------------------------------------------------------

/// Checks the PNG signature and returns (width, height) from the IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 33,
        "{} is too short for a PNG",
        path.display()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    assert_eq!(be(&bytes[8..12]), 13, "IHDR length");
    assert_eq!(
        &bytes[bytes.len() - 8..bytes.len() - 4],
        b"IEND",
        "ends with IEND"
    );
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Size of a PNG of the same dimensions that is all white (the same encoder).
fn blank_png_len(dir: &Path, size: (u32, u32)) -> u64 {
    let path = dir.join(format!("blank-{}x{}.png", size.0, size.1));
    {
        let root = BitMapBackend::new(&path, size).into_drawing_area();
        root.fill(&WHITE).unwrap();
        root.present().unwrap();
    }
    std::fs::metadata(&path).unwrap().len()
}

/// Renders with `draw` into an RGB buffer of `size`.
fn render(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>),
) -> Vec<u8> {
    let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        draw(&root);
        root.present().unwrap();
    }
    buf
}

fn count_rgb(buf: &[u8], rgb: (u8, u8, u8)) -> usize {
    buf.chunks_exact(3)
        .filter(|p| (p[0], p[1], p[2]) == rgb)
        .count()
}

fn non_white(buf: &[u8]) -> usize {
    buf.chunks_exact(3)
        .filter(|p| p != &[255, 255, 255])
        .count()
}

fn history() -> Vec<EpochMetrics> {
    (1..=12)
        .map(|e| {
            let x = f64::from(e);
            let mut r = epoch(e, 2.0 / x + 0.1, 2.2 / x.sqrt(), 1.0 - 0.8 / x);
            r.mean_class_acc = 0.9 - 0.8 / x;
            r.macro_f1 = 0.85 - 0.8 / x;
            if e == 5 {
                // No validation this epoch: a gap in the val curves.
                r.val_loss = f64::NAN;
                r.top1 = f64::NAN;
                r.mean_class_acc = f64::NAN;
                r.macro_f1 = f64::NAN;
            }
            r
        })
        .collect()
}

#[test]
fn metrics_png_is_written_valid_and_not_blank() {
    let dir = tempfile::tempdir().unwrap();
    let blank = blank_png_len(dir.path(), plot::METRICS_SIZE);
    let one = vec![epoch(1, 1.2, 1.4, 0.3)];
    let all_nan = vec![epoch(1, f64::NAN, f64::NAN, f64::NAN), {
        let mut r = epoch(2, f64::INFINITY, f64::NAN, f64::NAN);
        r.lr = f64::NAN;
        r
    }];
    let cases: [(&str, Vec<EpochMetrics>); 4] = [
        ("history", history()),
        ("one-epoch", one),
        ("no-epochs", Vec::new()),
        ("all-nan", all_nan),
    ];
    for (name, rows) in &cases {
        let path = dir.path().join(format!("metrics-{name}.png"));
        plot::plot_metrics(rows, &path).unwrap();
        assert_eq!(png_size(&path), plot::METRICS_SIZE, "{name}");
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > blank + 2000, "{name}: {len} bytes vs blank {blank}");
    }
    if let Ok(out) = std::env::var("MVDRIVE_PLOT_OUT") {
        std::fs::create_dir_all(&out).unwrap();
        plot::plot_metrics(&history(), &Path::new(&out).join("metrics.png")).unwrap();
        for (name, rows) in &cases {
            plot::plot_metrics(rows, &Path::new(&out).join(format!("metrics-{name}.png"))).unwrap();
        }
    }
}

#[test]
fn metrics_pixels_show_every_curve() {
    let buf = render(plot::METRICS_SIZE, |root| {
        plot::draw_metrics(root, &history()).unwrap()
    });
    let total = (plot::METRICS_SIZE.0 * plot::METRICS_SIZE.1) as usize;
    let ink = non_white(&buf);
    assert!(
        ink > total / 50 && ink < total / 2,
        "{ink} of {total} pixels drawn"
    );
    // Every curve colour (train/top-1 blue, val orange, mean class acc green, F1 red).
    for rgb in [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)] {
        assert!(count_rgb(&buf, rgb) > 100, "colour {rgb:?} missing");
    }
    // A single epoch still shows its markers.
    let buf = render(plot::METRICS_SIZE, |root| {
        plot::draw_metrics(root, &[epoch(3, 1.0, 1.5, 0.5)]).unwrap()
    });
    for rgb in [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)] {
        assert!(count_rgb(&buf, rgb) > 20, "colour {rgb:?} missing");
    }
}

fn demo_confusion() -> (ConfusionMatrix, Vec<String>) {
    // 5 classes; "eating" has no samples and is predicted once; "yawning" is never predicted.
    let cm = matrix(&[
        &[40, 3, 1, 0, 0],
        &[5, 31, 2, 1, 0],
        &[0, 4, 18, 0, 0],
        &[0, 0, 0, 0, 0],
        &[2, 1, 3, 0, 0],
    ]);
    let names = labels(&["texting", "drinking", "looking left", "eating", "yawning"]);
    (cm, names)
}

#[test]
fn confusion_png_is_written_valid_and_not_blank() {
    let dir = tempfile::tempdir().unwrap();
    let (cm, names) = demo_confusion();
    let path = dir.path().join("confusion.png");
    plot::plot_confusion(&cm, &names, &path).unwrap();
    let size = plot::confusion_size(&cm, &names).unwrap();
    assert_eq!(png_size(&path), size);
    assert!(
        size.0 >= 400 && size.1 >= 400 && size.0 <= 2000 && size.1 <= 2000,
        "{size:?}"
    );
    let len = std::fs::metadata(&path).unwrap().len();
    let blank = blank_png_len(dir.path(), size);
    assert!(len > blank + 2000, "{len} bytes vs blank {blank}");

    let buf = render(size, |root| {
        plot::draw_confusion(root, &cm, &names).unwrap()
    });
    // Dark blue cells (the diagonal: 40/44, 31/39, 18/22 of their rows) and the grey of
    // the row without samples ("eating") are there.
    let dark_blue = buf
        .chunks_exact(3)
        .filter(|p| p[0] < 40 && p[1] < 130 && p[2] > 140)
        .count();
    assert!(dark_blue > 3 * 40 * 40, "{dark_blue} dark blue pixels");
    assert!(
        count_rgb(&buf, (228, 228, 228)) > 1000,
        "grey no-support row"
    );
    assert!(non_white(&buf) > (size.0 * size.1) as usize / 10);

    if let Ok(out) = std::env::var("MVDRIVE_PLOT_OUT") {
        std::fs::create_dir_all(&out).unwrap();
        plot::plot_confusion(&cm, &names, &Path::new(&out).join("confusion.png")).unwrap();
    }
}

#[test]
fn confusion_handles_odd_inputs() {
    let dir = tempfile::tempdir().unwrap();
    // Fewer labels than classes, a very long label, an empty matrix, many classes.
    let (cm, _) = demo_confusion();
    let short = labels(&["a very long class name that goes on and on and on", "b"]);
    let cases: Vec<(ConfusionMatrix, Vec<String>)> = vec![
        (cm, short),
        (ConfusionMatrix::new(0), Vec::new()),
        (ConfusionMatrix::new(1), labels(&["only"])),
        (
            {
                let mut big = ConfusionMatrix::new(60);
                for c in 0..60 {
                    big.add_n(c, c, 10 + c as u64).unwrap();
                    big.add_n(c, (c + 1) % 60, 3).unwrap();
                }
                big
            },
            (0..60).map(|i| format!("class {i}")).collect(),
        ),
        (ConfusionMatrix::new(300), Vec::new()),
    ];
    for (i, (cm, names)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("confusion-{i}.png"));
        plot::plot_confusion(cm, names, &path).unwrap();
        let size = plot::confusion_size(cm, names).unwrap();
        assert_eq!(png_size(&path), size, "case {i}");
        assert!(size.0 <= 4000 && size.1 <= 4000, "case {i}: {size:?}");
        if let Ok(out) = std::env::var("MVDRIVE_PLOT_OUT") {
            std::fs::create_dir_all(&out).unwrap();
            plot::plot_confusion(
                cm,
                names,
                &Path::new(&out).join(format!("confusion-{i}.png")),
            )
            .unwrap();
        }
    }
}

#[test]
fn plot_errors_name_the_file() {
    let rows = history();
    let e = plot::plot_metrics(&rows, Path::new("/nonexistent-dir/x/metrics.png")).unwrap_err();
    assert!(
        e.to_string().contains("/nonexistent-dir/x/metrics.png"),
        "{e}"
    );
}
