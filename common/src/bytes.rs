//! Byte sizes: the one parser and the one formatter of the workspace. Units are binary
//! everywhere: `1K` = `1KiB` = `1KB` = 2^10 bytes, `1G` = `1GiB` = `1GB` = 2^30 bytes.

/// A text that is not a byte size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a byte size (examples: 512M, 8G, 8GiB, 1.5G, or plain bytes)")]
pub struct ByteSizeError {
    /// The text as given.
    pub text: String,
}

/// Parse a byte size: a positive number, optionally fractional, and an optional binary
/// suffix `K`, `M`, `G` or `T` (case-insensitive, with or without `B` or `iB`; spaces
/// allowed before it), e.g. `512M`, `8G`, `8GiB`, `1.5G`, `300 MiB`, `64K`, `123456`.
/// `1G` = `1GiB` = `1GB` = 2^30 bytes. Sizes under one byte, negative sizes and unknown
/// suffixes are errors; fractional results are rounded to whole bytes.
pub fn parse_bytes(text: &str) -> Result<u64, ByteSizeError> {
    let bad = || ByteSizeError {
        text: text.to_string(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// Format a byte count for people, in binary units with three significant digits:
/// `12 B`, `1.50 KiB`, `50.0 MiB`, `812 MiB`, `1.88 GiB`.
pub fn format_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    // Up a unit from 999.5, so that no figure prints with four digits (`1020 MiB`).
    while v >= 999.5 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    match (u, v) {
        (0, _) => format!("{n} B"),
        (_, v) if v < 9.995 => format!("{v:.2} {}", units[u]),
        (_, v) if v < 99.95 => format!("{v:.1} {}", units[u]),
        (_, v) => format!("{v:.0} {}", units[u]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_binary_with_or_without_b_or_ib() {
        let g = 1u64 << 30;
        assert_eq!(parse_bytes("8G"), Ok(8 * g));
        assert_eq!(parse_bytes("8GiB"), Ok(8 * g));
        assert_eq!(parse_bytes("8gb"), Ok(8 * g));
        assert_eq!(parse_bytes("1G"), Ok(g));
        assert_eq!(parse_bytes("1GB"), Ok(g));
        assert_eq!(parse_bytes("1.5G"), Ok(3 * g / 2));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("500MB"), Ok(500 << 20));
        assert_eq!(parse_bytes("300 MiB"), Ok(300 << 20));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert_eq!(parse_bytes("123456"), Ok(123456));
        assert_eq!(parse_bytes(" 12b "), Ok(12));
    }

    #[test]
    fn bad_sizes_are_errors_that_quote_the_text() {
        for bad in [
            "",
            "G",
            "8X",
            "-1G",
            "1.2.3G",
            "0",
            "0.1",
            "eight",
            "12 parsecs",
            "1e3",
            "NaN",
        ] {
            let e = parse_bytes(bad).unwrap_err();
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn format_uses_binary_units_and_round_trips_whole_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(1023), "1.00 KiB");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
        assert_eq!(format_bytes(5 << 40), "5.00 TiB");
        assert_eq!(format_bytes(50 << 20), "50.0 MiB");
        assert_eq!(format_bytes(812 << 20), "812 MiB");
        assert_eq!(format_bytes((1 << 30) - 1), "1.00 GiB");
        assert_eq!(parse_bytes(&format_bytes(3 << 29)), Ok(3 << 29));
    }
}
