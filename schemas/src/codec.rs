//! The codecs of records (`prep.compress`, the records table's `compression` column):
//! raw frames, per-frame zstd, per-frame JPEG (see FORMAT.md, "Records").

/// How frames are stored inside a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw frames: zero-copy reads.
    None,
    /// Per-frame zstd at the given level.
    Zstd(i32),
    /// Per-frame baseline JPEG at the given quality (RGB records only).
    Jpeg(u8),
}

impl Compression {
    /// Parse `none`, `zstd:N` (N in 1..=22; `zstd` alone means level 3) or `jpeg:Q` (Q in
    /// 1..=100; `jpeg` alone means quality 90).
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" => Some(Compression::None),
            "zstd" => Some(Compression::Zstd(3)),
            "jpeg" => Some(Compression::Jpeg(90)),
            _ => {
                if let Some(q) = s.strip_prefix("jpeg:") {
                    let q: u8 = q.parse().ok()?;
                    return (1..=100).contains(&q).then_some(Compression::Jpeg(q));
                }
                let level: i32 = s.strip_prefix("zstd:")?.parse().ok()?;
                (1..=22)
                    .contains(&level)
                    .then_some(Compression::Zstd(level))
            }
        }
    }

    /// Whether records of this codec end with a per-frame offset table (every codec but
    /// `none`, whose frames all have the same size).
    pub fn has_frame_table(self) -> bool {
        self != Compression::None
    }

    /// The value of the records table's `compression` column.
    pub fn column_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd(_) => "zstd",
            Compression::Jpeg(_) => "jpeg",
        }
    }

    /// Parse the records table's `compression` column.
    pub fn from_column(s: &str) -> Option<Compression> {
        match s {
            "none" => Some(Compression::None),
            "zstd" => Some(Compression::Zstd(0)),
            "jpeg" => Some(Compression::Jpeg(0)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            Compression::Jpeg(q) => write!(f, "jpeg:{q}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::tests::seed;
    use crate::shard::{RecordView, ShardWriter};

    #[test]
    fn jpeg_records_decode_close_to_their_frames_and_need_an_image_size() {
        let dir = tempfile::tempdir().unwrap();
        // Smooth 16 x 24 RGB gradients, which JPEG keeps well.
        let frame = |k: usize| -> Vec<u8> {
            (0..16 * 24 * 3)
                .map(|i| ((i / 3 % 24) * 8 + (i / 72) * 4 + k * 10) as u8)
                .collect()
        };
        let want: Vec<Vec<u8>> = (0..3).map(frame).collect();
        let mut w = ShardWriter::new(dir.path(), "rgb-t", 1 << 30, Compression::Jpeg(90))
            .with_image(16, 24);
        w.begin_record(want[0].len(), 3, seed()).unwrap();
        for f in &want {
            w.push_frame(f).unwrap();
        }
        let loc = w.end_record().unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(dir.path().join(&loc.shard)).unwrap();
        let rec = &bytes[loc.offset as usize..(loc.offset + loc.length) as usize];
        let view = RecordView::new(
            rec,
            3,
            want[0].len(),
            Compression::Jpeg(0),
            Some(seed()),
            dir.path(),
        )
        .unwrap();
        for (k, f) in want.iter().enumerate() {
            let got = view.frame(k, dir.path()).unwrap();
            let worst = got
                .iter()
                .zip(f)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 12, "frame {k}: a pixel off by {worst}");
        }
        // Without the image size (or with frames of another size) a jpeg writer refuses.
        let mut w = ShardWriter::new(dir.path(), "rgb-u", 1 << 30, Compression::Jpeg(90));
        w.begin_record(want[0].len(), 1, seed()).unwrap();
        let e = w.push_frame(&want[0]).unwrap_err().to_string();
        assert!(e.contains("jpeg"), "{e}");
        assert_eq!(Compression::parse("jpeg"), Some(Compression::Jpeg(90)));
        assert_eq!(Compression::parse("jpeg:101"), None);
        assert_eq!(Compression::parse("jpeg:0"), None);
    }
}
