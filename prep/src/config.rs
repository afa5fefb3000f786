//! Prep settings: the `data.*` and `prep.*` keys of `configs/config.yaml`, set from a YAML
//! file (`--config`) and Hydra-style `key.sub=value` overrides.

use std::path::Path;

pub use crate::keypoints::KptNormalize;
use mvdrive_common::bytes::parse_bytes;
use mvdrive_schemas::meta::PrepParams;
use mvdrive_schemas::settings;
use mvdrive_schemas::shard::Compression;

/// Keys `prep` reads, with a one-line description (shown in errors and `--help`).
pub const PREP_KEYS: &[(&str, &str)] = &[
    (
        "data.img_size",
        "frame size: N (square) or HxW, default 224",
    ),
    (
        "data.max_video_frames",
        "timeline frames per record (chunk), default 500",
    ),
    (
        "data.num_io_threads",
        "videos decoded at once, 0 = one per core (default)",
    ),
    (
        "prep.fps",
        "timeline rate: a number or `source` (first view's rate, default)",
    ),
    ("prep.resize", "stretch (default) | letterbox | center_crop"),
    ("prep.scaler", "bilinear (default) | bicubic | area"),
    (
        "prep.compress",
        "none (default) | zstd:N (per-frame, lossless, N in 1..22) | jpeg:Q (per-frame baseline JPEG of RGB frames, Q in 1..100; jpeg = jpeg:90; keypoints stay float32)",
    ),
    (
        "prep.shard_size",
        "shard size cap, e.g. 1GiB (default), 256MiB",
    ),
    (
        "prep.max_decode_errors",
        "damaged packets tolerated per video, default 0",
    ),
    (
        "prep.kpt_normalize",
        "keypoints: none (default, source pixels) | image ([0,1]) | center_scale",
    ),
];

/// Keys that belong to `train`; `prep` accepts them in a config file and ignores them.
pub use mvdrive_schemas::settings::TRAIN_KEY_NAMES as TRAIN_KEYS;

/// How frames are fitted into `data.img_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Scale to exactly the target size (aspect ratio not kept).
    Stretch,
    /// Keep aspect ratio, fit inside, pad with black.
    Letterbox,
    /// Keep aspect ratio, cover the target, crop the centre.
    CenterCrop,
}

/// swscale interpolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaler {
    /// SWS_BILINEAR (`flags=bilinear` in the ffmpeg CLI).
    Bilinear,
    /// SWS_BICUBIC.
    Bicubic,
    /// SWS_AREA.
    Area,
}

/// Timeline rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fps {
    /// Each session's first view's frame rate.
    Source,
    /// A fixed rate.
    Fixed(f64),
}

/// Every setting of `prep build`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepConfig {
    /// Output frame height.
    pub img_height: u32,
    /// Output frame width.
    pub img_width: u32,
    /// Timeline frames per record.
    pub max_video_frames: u32,
    /// Parallel decoders (0 = cores).
    pub num_io_threads: usize,
    /// Timeline rate.
    pub fps: Fps,
    /// Resize mode.
    pub resize: ResizeMode,
    /// Interpolation.
    pub scaler: Scaler,
    /// Record compression.
    pub compress: Compression,
    /// Shard size cap in bytes.
    pub shard_size: u64,
    /// Damaged packets tolerated per video.
    pub max_decode_errors: u64,
    /// Keypoint normalisation.
    pub kpt_normalize: KptNormalize,
}

impl Default for PrepConfig {
    fn default() -> Self {
        PrepConfig {
            img_height: 224,
            img_width: 224,
            max_video_frames: 500,
            num_io_threads: 0,
            fps: Fps::Source,
            resize: ResizeMode::Stretch,
            scaler: Scaler::Bilinear,
            compress: Compression::None,
            shard_size: 1 << 30,
            max_decode_errors: 0,
            kpt_normalize: KptNormalize::None,
        }
    }
}

pub use mvdrive_schemas::settings::ConfigError;

fn bad(key: &str, value: &str, want: &str) -> ConfigError {
    ConfigError(format!("config key `{key}`: `{value}` is not {want}"))
}

/// The closest known key to `key`, for "did you mean" hints.
pub fn nearest_key(key: &str) -> Option<&'static str> {
    mvdrive_schemas::settings::nearest(
        key,
        PREP_KEYS
            .iter()
            .map(|(k, _)| *k)
            .chain(TRAIN_KEYS.iter().copied()),
    )
}

impl PrepConfig {
    /// Set one key from its text value. Train keys are accepted and ignored only when
    /// `allow_train_keys` (config files); on the command line they are an error.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        allow_train_keys: bool,
    ) -> Result<(), ConfigError> {
        let v = value.trim();
        let int = |want: &str| v.parse::<u64>().map_err(|_| bad(key, v, want));
        match key {
            "data.img_size" => {
                let (h, w) = match v.split_once(['x', 'X']) {
                    Some((h, w)) => (h.trim().parse::<u32>(), w.trim().parse::<u32>()),
                    None => (v.parse::<u32>(), v.parse::<u32>()),
                };
                match (h, w) {
                    (Ok(h), Ok(w)) if (2..=8192).contains(&h) && (2..=8192).contains(&w) => {
                        self.img_height = h;
                        self.img_width = w;
                    }
                    _ => return Err(bad(key, v, "a size N or HxW between 2 and 8192")),
                }
            }
            "data.max_video_frames" => {
                let n = int("a positive whole number")?;
                if n == 0 || n > u32::MAX as u64 {
                    return Err(bad(key, v, "a positive whole number"));
                }
                self.max_video_frames = n as u32;
            }
            "data.num_io_threads" => {
                self.num_io_threads = int("a whole number (0 = one per core)")? as usize
            }
            "prep.fps" => {
                self.fps = if v == "source" {
                    Fps::Source
                } else {
                    match v.parse::<f64>() {
                        Ok(f) if f.is_finite() && f > 0.0 && f <= 1000.0 => Fps::Fixed(f),
                        _ => return Err(bad(key, v, "`source` or a frame rate in (0, 1000]")),
                    }
                }
            }
            "prep.resize" => {
                self.resize = match v {
                    "stretch" => ResizeMode::Stretch,
                    "letterbox" => ResizeMode::Letterbox,
                    "center_crop" => ResizeMode::CenterCrop,
                    _ => return Err(bad(key, v, "one of stretch, letterbox, center_crop")),
                }
            }
            "prep.scaler" => {
                self.scaler = match v {
                    "bilinear" => Scaler::Bilinear,
                    "bicubic" => Scaler::Bicubic,
                    "area" => Scaler::Area,
                    _ => return Err(bad(key, v, "one of bilinear, bicubic, area")),
                }
            }
            "prep.compress" => {
                self.compress = Compression::parse(v).ok_or_else(|| {
                    bad(
                        key,
                        v,
                        "`none`, `zstd:N` with N in 1..22, or `jpeg:Q` with Q in 1..100",
                    )
                })?
            }
            "prep.shard_size" => {
                let n = parse_bytes(v).map_err(|_| bad(key, v, "a size such as 1GiB or 256MiB"))?;
                if n < 1 << 20 {
                    return Err(bad(key, v, "at least 1MiB"));
                }
                self.shard_size = n;
            }
            "prep.max_decode_errors" => self.max_decode_errors = int("a whole number")?,
            "prep.kpt_normalize" => {
                self.kpt_normalize = match v {
                    "none" => KptNormalize::None,
                    "image" => KptNormalize::Image,
                    "center_scale" => KptNormalize::CenterScale,
                    _ => return Err(bad(key, v, "one of none, image, center_scale")),
                }
            }
            k if TRAIN_KEYS.contains(&k) && !PREP_KEYS.iter().any(|(p, _)| *p == k) => {
                if !allow_train_keys {
                    return Err(ConfigError(format!(
                        "config key `{k}` is a `train` setting; `prep build` does not use it (pass it to `train fit`)"
                    )));
                }
            }
            k => {
                let hint = match nearest_key(k) {
                    Some(n) => format!("; did you mean `{n}`?"),
                    None => String::new(),
                };
                return Err(ConfigError(format!(
                    "unknown config key `{k}`{hint} (prep keys: {})",
                    PREP_KEYS
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Apply `key=value` overrides from the command line.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<(), ConfigError> {
        settings::apply_overrides(overrides, "data.img_size=112", |k, v, f| self.set(k, v, f))
    }

    /// Apply a YAML config file (the layout of `configs/config.yaml`).
    pub fn apply_yaml_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        settings::apply_yaml_file(path, |k, v, f| self.set(k, v, f))
    }

    /// The parameters recorded in `meta.json`.
    pub fn params(&self) -> PrepParams {
        PrepParams {
            fps: match self.fps {
                Fps::Source => "source".into(),
                Fps::Fixed(f) => format!("{f}"),
            },
            img_height: self.img_height,
            img_width: self.img_width,
            resize: match self.resize {
                ResizeMode::Stretch => "stretch",
                ResizeMode::Letterbox => "letterbox",
                ResizeMode::CenterCrop => "center_crop",
            }
            .into(),
            scaler: match self.scaler {
                Scaler::Bilinear => "bilinear",
                Scaler::Bicubic => "bicubic",
                Scaler::Area => "area",
            }
            .into(),
            compress: self.compress.to_string(),
            max_video_frames: self.max_video_frames,
            shard_size: self.shard_size,
            kpt_normalize: match self.kpt_normalize {
                KptNormalize::None => "none",
                KptNormalize::Image => "image",
                KptNormalize::CenterScale => "center_scale",
            }
            .into(),
        }
    }

    /// Decoder threads to run at once.
    pub fn threads(&self) -> usize {
        if self.num_io_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.num_io_threads
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_set_typed_values() {
        let mut c = PrepConfig::default();
        c.apply_overrides(&[
            "data.img_size=96x128".into(),
            "prep.fps=7.5".into(),
            "prep.compress=zstd:5".into(),
            "prep.shard_size=64MiB".into(),
        ])
        .unwrap();
        assert_eq!((c.img_height, c.img_width), (96, 128));
        assert_eq!(c.fps, Fps::Fixed(7.5));
        assert_eq!(c.compress, Compression::Zstd(5));
        for (v, ok) in [
            ("jpeg", Some(90)),
            ("jpeg:75", Some(75)),
            ("jpeg:0", None),
            ("jpeg:101", None),
        ] {
            let mut c = PrepConfig::default();
            let r = c.apply_overrides(&[format!("prep.compress={v}")]);
            match ok {
                Some(q) => assert_eq!((r.is_ok(), c.compress), (true, Compression::Jpeg(q))),
                None => assert!(r.unwrap_err().to_string().contains("prep.compress"), "{v}"),
            }
        }
        assert_eq!(c.shard_size, 64 << 20);
    }

    #[test]
    fn unknown_keys_suggest_the_nearest_one() {
        let err = PrepConfig::default()
            .apply_overrides(&["data.img_szie=3".into()])
            .unwrap_err();
        assert!(err.0.contains("did you mean `data.img_size`"), "{err}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let err = PrepConfig::default()
            .apply_overrides(&["data.max_video_frames=abc".into()])
            .unwrap_err();
        assert!(
            err.0.contains("data.max_video_frames") && err.0.contains("abc"),
            "{err}"
        );
    }

    #[test]
    fn train_keys_are_refused_on_the_command_line_but_ignored_in_files() {
        let mut c = PrepConfig::default();
        assert!(c.apply_overrides(&["data.batch_size=4".into()]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "data:\n  batch_size: 4\n  img_size: 112\nprep:\n  scaler: area\n",
        )
        .unwrap();
        c.apply_yaml_file(&f).unwrap();
        assert_eq!((c.img_height, c.scaler), (112, Scaler::Area));
        std::fs::write(&f, "data:\n  img_sise: 112\n").unwrap();
        assert!(c
            .apply_yaml_file(&f)
            .unwrap_err()
            .0
            .contains("did you mean `data.img_size`"));
    }

    #[test]
    fn byte_sizes_parse() {
        // Binary units everywhere (mvdrive_common::bytes): 500MB is 500 MiB, not 500e6.
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("500MB"), Ok(500 << 20));
        assert_eq!(parse_bytes("12"), Ok(12));
        assert!(parse_bytes("12 parsecs").is_err());
    }
}

#[cfg(test)]
mod shipped_config {
    use super::*;

    #[test]
    fn the_shared_key_list_matches_this_table() {
        let mine: Vec<&str> = PREP_KEYS.iter().map(|(k, _)| *k).collect();
        assert_eq!(mine, mvdrive_schemas::settings::PREP_KEY_NAMES);
    }

    #[test]
    fn configs_config_yaml_documents_exactly_the_code_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/config.yaml");
        let mut c = PrepConfig::default();
        c.apply_yaml_file(&path).unwrap();
        assert_eq!(c, PrepConfig::default());
        let text = std::fs::read_to_string(&path).unwrap();
        for (key, _) in PREP_KEYS {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{leaf}:")),
                "configs/config.yaml lacks {key}"
            );
        }
    }
}
