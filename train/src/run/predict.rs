//! `train predict`: a trained model over whole recordings. Sliding windows over each
//! session's timeline (the model's own T frames, spread over the window as in training,
//! its size and views, fused as in training), window probabilities spread to the frames
//! they cover ([`crate::report::timeline`]), then segments, pictures and files.
//!
//! Memory stays flat in recording length: windows are read from the cache a batch at a
//! time; what grows with the recording is only its per-frame scores (frames x classes
//! floats).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mvdrive_schemas::checksum::safe_component;
use mvdrive_schemas::index::SessionRow;

use tch::nn::VarStore;
use tch::{Device, Kind};

use crate::config::TrainConfig;
use crate::data::sampler::eval_clip_frames;
use crate::error::{IoAt, Result, TrainError};
use crate::model::MultiViewModel;
use crate::report::aicity::AiCityIds;
use crate::report::localisation::{score, LocalisationReport};
use crate::report::plot::timeline::{plot_timeline, Span, TimelinePlot};
use crate::report::segments::{write_segments, Segment};
use crate::report::timeline::{segments, window_starts, Accumulator, Scores, SegmentRules};
use crate::run::checkpoint::{self, TrainerState};
use crate::run::recordings;
use crate::run::session::Session;

/// Run a trained model over whole recordings: per-frame class scores
/// (`scores/<session>.npy`, float32 [frames, classes], with `predict.json`), segments
/// (`segments.csv`: session,start_s,end_s,label,score, which `prep build` reads back as
/// labels; `aicity.txt` with --aicity-ids) and a picture per session
/// (`timeline/<session>.png`). Windows, smoothing and segment rules are the `predict.*`
/// keys (`train keys`).
#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// Checkpoint (`.safetensors`).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Cache whose sessions to run over (with or without labelled segments).
    #[arg(long, required_unless_present = "manifest")]
    pub cache: Option<PathBuf>,
    /// Raw videos: a manifest (segments not needed). They go through the `prep` binary into
    /// a temporary cache in the output folder, built like the training cache, removed
    /// afterwards.
    #[arg(long, conflicts_with = "cache")]
    pub manifest: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Only these sessions (comma-separated; default: every session of the cache).
    #[arg(long, value_delimiter = ',')]
    pub sessions: Vec<String>,
    /// auto | cpu | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// AI City ids: a CSV `kind,name,id` with kind `session` (name: session, id: video
    /// id) or `class` (name: label, id: activity id); writes aicity.txt.
    #[arg(long)]
    pub aicity_ids: Option<PathBuf>,
    /// Settings over the checkpoint's, e.g. predict.stride_s=1 data.batch_size=16.
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// What `train predict` did.
#[derive(Debug)]
pub struct PredictSummary {
    /// Sessions run over.
    pub sessions: usize,
    /// Windows scored.
    pub windows: usize,
    /// Window and stride, seconds.
    pub window_s: (f64, f64),
    /// Segments written.
    pub segments: Vec<Segment>,
    /// Scores against the cache's labelled segments of those sessions, when it has some.
    pub against_truth: Option<LocalisationReport>,
    /// Seconds of recording per second of wall time.
    pub realtime: f64,
    /// Share of the wall time spent in the model's forward pass (the rest: reading,
    /// batching, scores, segments, pictures).
    pub forward_share: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss: u64,
}

/// The checkpoint's settings (its clip shape included) with `args`' over them, as a
/// session on `cache` reading the model's views in the model's order.
fn open(args: &PredictArgs, cache: &Path) -> Result<(Session, TrainerState)> {
    let (st, mut settings) = checkpoint::load_with_settings(&args.ckpt)?;
    settings.set("trainer.device", &args.device, false)?;
    settings.set("data.aug.enabled", "false", false)?;
    // The model's input as it was built, whatever size the cache holds.
    settings.set(
        "data.img_size",
        &format!("{}x{}", st.clip.h, st.clip.w),
        false,
    )?;
    let t = st.clip.t.to_string();
    settings.set("data.uniform_temporal_subsample_num", &t, false)?;
    for o in &args.overrides {
        let (k, v) = o.split_once('=').ok_or_else(|| {
            format!("`{o}` is not a setting; write key=value, e.g. predict.stride_s=1")
        })?;
        settings.set(k.trim(), v, false)?;
    }
    let config = TrainConfig::new(&settings)?;
    let mut s = Session::open_with_classes(cache, config, Some(st.classes.clone()))?;
    let have = &s.cache.meta.views;
    if let Some(v) = st.views.iter().find(|v| !have.contains(v)) {
        return Err(TrainError::Other(format!(
            "{}: the model reads view `{v}`, which {} does not have (views: {}); predict on recordings of the model's cameras ({})",
            args.ckpt.display(),
            cache.display(),
            have.join(", "),
            st.views.join(", ")
        )));
    }
    // By name, in the model's order: another camera order or an extra camera is fine.
    s.views = st.views.clone();
    s.model.num_views = s.views.len() as i64;
    Ok((s, st))
}

/// Window and stride lengths, seconds, checked against each other.
fn window_seconds(s: &Session, st: &TrainerState) -> Result<(f64, f64)> {
    let p = &s.config.predict;
    let window_s = p.window_s.or(st.segment_s).ok_or_else(|| {
        "the checkpoint does not say how long its training segments were (it predates train predict); set predict.window_s".to_string()
    })?;
    let stride_s = p.stride_s.unwrap_or(window_s / 2.0);
    if stride_s > window_s {
        return Err(TrainError::Other(format!(
            "predict.stride_s={stride_s} is longer than the window ({window_s} s): frames between windows would get no score; use predict.stride_s <= predict.window_s"
        )));
    }
    Ok((window_s, stride_s))
}

/// Window and stride in frames at a session's `fps`, checked against the model's clip.
fn window_frames(s: &Session, (window_s, stride_s): (f64, f64), fps: f64) -> Result<(u64, u64)> {
    let w = (window_s * fps).round() as u64;
    let t = s.clip().t as u64;
    if w < t {
        return Err(TrainError::Other(format!(
            "predict.window_s={window_s} is {w} frames at the cache's {fps} fps, fewer than the model's {t} frames per clip; use predict.window_s >= {:.2}",
            t as f64 / fps
        )));
    }
    Ok((w, ((stride_s * fps).round() as u64).clamp(1, w)))
}

/// The sessions of `--sessions` (all when empty), each with frames.
fn sessions<'a>(s: &'a Session, names: &[String], cache: &Path) -> Result<Vec<&'a SessionRow>> {
    let rows: Vec<&SessionRow> = if names.is_empty() {
        s.cache.sessions.iter().collect()
    } else {
        names
            .iter()
            .map(|name| {
                s.cache
                    .sessions
                    .iter()
                    .find(|r| &r.session == name)
                    .ok_or_else(|| {
                        TrainError::Other(format!(
                            "--sessions: `{name}` is not a session of {}",
                            cache.display()
                        ))
                    })
            })
            .collect::<Result<_>>()?
    };
    if let Some(r) = rows.iter().find(|r| r.timeline_frames == 0) {
        return Err(TrainError::Other(format!(
            "session `{}` of {} has no frames (an empty recording); leave it out with --sessions",
            r.session,
            cache.display()
        )));
    }
    Ok(rows)
}

/// What one run over sessions shares.
struct Predictor<'a> {
    s: &'a Session,
    model: MultiViewModel,
    loader: std::sync::Arc<crate::data::loader::Loader>,
    seconds: (f64, f64),
    rules: SegmentRules,
    out: &'a Path,
    pb: indicatif::ProgressBar,
    forward_s: f64,
}

/// One session's results.
struct SessionResult {
    found: Vec<Segment>,
    known: Vec<Segment>,
    windows: usize,
    json: serde_json::Value,
}

impl Predictor<'_> {
    /// Per-frame scores of `row`: its windows, batch by batch.
    fn scores(&mut self, row: &SessionRow, (w, stride): (u64, u64)) -> Result<(Scores, usize)> {
        let s = self.s;
        let n = row.timeline_frames;
        let starts = window_starts(n, w, stride);
        let mut acc = Accumulator::new(n as usize, s.classes.len());
        let t = s.clip().t as usize;
        for (bi, chunk) in starts.chunks(s.config.data.batch_size.max(1)).enumerate() {
            let frames: Vec<Vec<u64>> = chunk
                .iter()
                .map(|&a| eval_clip_frames(a, (a + w).min(n), t, 0, 1))
                .collect();
            let batch = self.loader.load_windows(bi, &row.session, &frames)?;
            let x = s.input(&batch)?;
            let t0 = std::time::Instant::now();
            let probs = tch::no_grad(|| self.model.forward_t(&x, false))
                .softmax(-1, Kind::Double)
                .to_device(Device::Cpu);
            self.forward_s += t0.elapsed().as_secs_f64();
            let probs: Vec<f64> = Vec::try_from(probs.flatten(0, -1))?;
            for (&a, p) in chunk.iter().zip(probs.chunks_exact(s.classes.len())) {
                acc.add(a as usize, (a + w) as usize, p);
            }
            self.pb.inc(chunk.len() as u64);
        }
        Ok((acc.finish(), starts.len()))
    }

    /// Score, segment, write and draw one session.
    fn session(&mut self, row: &SessionRow) -> Result<SessionResult> {
        let s = self.s;
        let frames_of = |sec: f64| (sec * row.fps).round() as usize;
        let (w, stride) = window_frames(s, self.seconds, row.fps)?;
        let (raw, windows) = self.scores(row, (w, stride))?;
        let stem = safe_component(&row.session);
        let npy = format!("scores/{stem}.npy");
        raw.write_npy(&self.out.join(&npy))?;
        // An odd number of frames, centred.
        let smooth = raw.smoothed(frames_of(s.config.predict.smooth_s) | 1);
        let rules = SegmentRules {
            min_gap: frames_of(s.config.predict.min_gap_s),
            min_len: frames_of(s.config.predict.min_len_s),
            ..self.rules.clone()
        };
        let time = |f: usize| row.timeline_start_s + f as f64 / row.fps;
        let found: Vec<Segment> = segments(&smooth, &rules)
            .into_iter()
            .map(|(c, a, b, sc)| Segment {
                session: row.session.clone(),
                start: time(a),
                end: time(b),
                label: s.classes[c].clone(),
                score: sc,
            })
            .collect();
        let known: Vec<Segment> = s
            .cache
            .segments
            .iter()
            .filter(|g| g.session == row.session)
            .map(|g| Segment {
                session: g.session.clone(),
                start: g.start_s,
                end: g.end_s,
                label: g.label.clone(),
                score: 1.0,
            })
            .collect();
        let class_of = |l: &str| s.classes.iter().position(|c| c == l);
        let spans = |v: &[Segment]| -> Vec<Span> {
            v.iter()
                .filter_map(|g| Some((class_of(&g.label)?, g.start, g.end)))
                .collect()
        };
        let (pred_spans, true_spans) = (spans(&found), spans(&known));
        let png = format!("timeline/{stem}.png");
        let picture = TimelinePlot {
            session: &row.session,
            classes: &s.classes,
            scores: &smooth,
            fps: row.fps,
            start_s: row.timeline_start_s,
            predicted: &pred_spans,
            truth: (!known.is_empty()).then_some(&true_spans[..]),
        };
        plot_timeline(&picture, &self.out.join(&png))?;
        let json = serde_json::json!({
            "session": row.session, "frames": row.timeline_frames, "fps": row.fps,
            "timeline_start_s": row.timeline_start_s, "windows": windows,
            "window_frames": w, "stride_frames": stride, "scores": npy, "timeline": png,
        });
        Ok(SessionResult {
            found,
            known,
            windows,
            json,
        })
    }
}

/// Runs `train predict` (see [`PredictArgs`]).
pub fn predict(args: &PredictArgs, quiet: bool) -> Result<PredictSummary> {
    let ids = args
        .aicity_ids
        .as_deref()
        .map(AiCityIds::read)
        .transpose()?;
    // Raw videos: a temporary cache, removed when `_temp` drops (error or not).
    let _temp;
    let cache: &Path = match (&args.cache, &args.manifest) {
        (Some(c), _) => c,
        (None, Some(m)) => {
            let st = checkpoint::load_state(&args.ckpt)?;
            let params = st.cache_params.as_ref().ok_or_else(|| {
                format!("{}: the checkpoint predates train predict --manifest (it does not record how its cache was built); build a cache of the videos with prep build and pass --cache", args.ckpt.display())
            })?;
            std::fs::create_dir_all(&args.out).at(&args.out)?;
            let dir = args.out.join(".predict-cache");
            _temp = recordings::build_cache(m, &st.views, params, dir, quiet)?;
            &_temp.dir
        }
        (None, None) => return Err("train predict needs --cache or --manifest".into()),
    };
    let (s, st) = open(args, cache)?;
    let seconds = window_seconds(&s, &st)?;
    let rows = sessions(&s, &args.sessions, cache)?;
    let bg = background(&s)?;
    if let Some(ids) = &ids {
        let classes = (0..s.classes.len()).filter(|&c| Some(c) != bg);
        ids.check(
            rows.iter().map(|r| r.session.as_str()),
            classes.map(|c| s.classes[c].as_str()),
        )?;
    }
    let mut total = 0;
    for r in &rows {
        let (w, stride) = window_frames(&s, seconds, r.fps)?;
        total += window_starts(r.timeline_frames, w, stride).len() as u64;
    }
    for dir in ["scores", "timeline"] {
        std::fs::create_dir_all(args.out.join(dir)).at(&args.out.join(dir))?;
    }
    let mut vs = VarStore::new(s.device);
    let model = MultiViewModel::new(&vs.root(), s.model.clone())?;
    checkpoint::load_weights(&args.ckpt, &mut vs)?;
    let mut p = Predictor {
        s: &s,
        model,
        loader: s.loader()?,
        seconds,
        rules: SegmentRules {
            min_gap: 0,
            min_len: 0,
            background: bg,
            threshold: s.config.predict.threshold.map(|t| t as f32),
        },
        out: &args.out,
        pb: mvdrive_common::progress::bar(total, "windows", quiet),
        forward_s: 0.0,
    };
    let started = std::time::Instant::now();
    let (mut all, mut truth, mut windows, mut recorded) = (Vec::new(), Vec::new(), 0, 0.0);
    let mut sessions_json = Vec::new();
    for row in &rows {
        let r = p.session(row)?;
        windows += r.windows;
        recorded += row.timeline_frames as f64 / row.fps;
        sessions_json.push(r.json);
        all.extend(r.found);
        truth.extend(r.known);
    }
    p.pb.finish_and_clear();
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    write_segments(&args.out.join("segments.csv"), &all)?;
    if let Some(ids) = &ids {
        crate::report::write_whole(&args.out.join("aicity.txt"), ids.lines(&all).as_bytes())?;
    }
    let against_truth = (!truth.is_empty()).then(|| score(&all, &truth, &[0.3, 0.5, 0.7]));
    if !truth.is_empty() {
        write_segments(&args.out.join("truth.csv"), &truth)?;
    }
    let json = serde_json::json!({
        "checkpoint": args.ckpt.display().to_string(),
        "cache": cache.display().to_string(),
        "classes": s.classes,
        "background": bg.map(|b| s.classes[b].clone()),
        "window_s": seconds.0, "stride_s": seconds.1, "frames_per_clip": s.clip().t,
        "predict": predict_keys(&s),
        "sessions": sessions_json,
        "against_truth": against_truth,
    });
    crate::report::write_whole(
        &args.out.join("predict.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(PredictSummary {
        sessions: rows.len(),
        windows,
        window_s: seconds,
        segments: all,
        against_truth,
        realtime: recorded / wall,
        forward_share: p.forward_s / wall,
        peak_rss: mvdrive_common::sys::peak_rss_bytes(),
    })
}

/// The `predict.*` settings as given (text), for predict.json.
fn predict_keys(s: &Session) -> BTreeMap<&'static str, String> {
    crate::config::KEYS
        .iter()
        .filter(|k| k.name.starts_with("predict."))
        .map(|k| (k.name, s.config.settings().raw(k.name).to_string()))
        .collect()
}

/// `predict.background`, or a class named `background`.
fn background(s: &Session) -> Result<Option<usize>> {
    match &s.config.predict.background {
        Some(name) => s
            .classes
            .iter()
            .position(|c| c == name)
            .map(Some)
            .ok_or_else(|| {
                TrainError::Other(format!(
                    "predict.background=`{name}` is not one of the model's classes ({})",
                    s.classes.join(", ")
                ))
            }),
        None => Ok(s.classes.iter().position(|c| c == "background")),
    }
}

/// Runs `train predict` and says where its outputs went.
pub fn run(args: &PredictArgs, quiet: bool) -> Result<()> {
    let r = predict(args, quiet)?;
    println!(
        "train predict: {} sessions, {} windows of {:.2} s every {:.2} s ({:.1}x real time, model forward {:.0}% of it, peak RSS {:.0} MiB): {} segments -> {}",
        r.sessions,
        r.windows,
        r.window_s.0,
        r.window_s.1,
        r.realtime,
        r.forward_share * 100.0,
        r.peak_rss as f64 / 1048576.0,
        r.segments.len(),
        args.out.join("segments.csv").display()
    );
    if let Some(t) = &r.against_truth {
        print!(
            "against the cache's labelled segments:\n{}",
            crate::run::score::table(t)
        );
    }
    Ok(())
}
