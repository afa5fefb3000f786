//! The one reader of input tables: CSV (strict, or ragged for the importers' source
//! files) and Parquet, as text cells with line numbers so every message can name the file
//! and line.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Float32Array, Float64Array, Int32Array, Int64Array, LargeStringArray, StringArray,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A table of text cells read from CSV or Parquet, with line numbers for messages.
#[derive(Debug)]
pub struct TextTable {
    /// The file.
    pub path: PathBuf,
    /// Column names.
    pub headers: Vec<String>,
    /// Rows: (line number, cells). For Parquet the "line" is the row number + 1, so the
    /// first data row is 2 as in a CSV with a header.
    pub rows: Vec<(u64, Vec<String>)>,
}

impl TextTable {
    /// Read a canonical input (`manifest`, `segments`, keypoints): CSV (`.csv`, or anything
    /// not `.parquet`; `#` starts a comment line; every row has the header's width) or
    /// Parquet.
    pub fn read(path: &Path) -> Result<TextTable, String> {
        if !path.is_file() {
            return Err(format!("{}: file not found", path.display()));
        }
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
        {
            return read_parquet(path);
        }
        read_csv(path, false)
    }

    /// Read a dataset's own CSV leniently, as the importers do: ragged rows allowed
    /// (missing trailing cells read as empty), no comment lines, all-empty rows skipped,
    /// header cells trimmed.
    pub fn read_ragged(path: &Path) -> Result<TextTable, String> {
        read_csv(path, true)
    }

    /// Index of column `name` (exact match).
    pub fn col(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// Index of the first header that matches one of `names` after [`header_key`].
    pub fn col_any(&self, names: &[&str]) -> Option<usize> {
        let keys: Vec<String> = names.iter().map(|n| header_key(n)).collect();
        self.headers
            .iter()
            .position(|h| keys.contains(&header_key(h)))
    }
}

/// A header compared loosely: lower case, runs of spaces/underscores as one space.
pub fn header_key(h: &str) -> String {
    h.trim_start_matches('\u{feff}')
        .split(|c: char| c.is_whitespace() || c == '_')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn read_csv(path: &Path, ragged: bool) -> Result<TextTable, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(ragged)
        .trim(csv::Trim::All)
        .comment((!ragged).then_some(b'#'))
        .from_reader(bytes.as_slice());
    let header_at = if ragged { " line 1" } else { "" };
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| format!("{shown}{header_at}: malformed CSV header: {e}"))?
        .iter()
        .map(|h| {
            let h = h.trim_start_matches('\u{feff}');
            if ragged { h.trim() } else { h }.to_string()
        })
        .collect();
    check_unique(&headers, &format!("{shown}{header_at}"))?;
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            let what = match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => {
                    format!("{len} fields but the header has {expected_len}")
                }
                csv::ErrorKind::Utf8 { .. } => "text is not valid UTF-8".to_string(),
                _ => e.to_string(),
            };
            format!("{shown} line {line}: malformed CSV: {what}; fix the row")
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let mut cells: Vec<String> = rec.iter().map(String::from).collect();
        if ragged {
            if cells.iter().all(String::is_empty) {
                continue;
            }
            cells.resize(headers.len().max(cells.len()), String::new());
        }
        rows.push((line, cells));
    }
    Ok(TextTable {
        path: path.to_path_buf(),
        headers,
        rows,
    })
}

/// Two columns of one name would make every lookup pick the first silently: an error.
fn check_unique(headers: &[String], at: &str) -> Result<(), String> {
    for (i, h) in headers.iter().enumerate() {
        if !h.is_empty() && headers[..i].contains(h) {
            return Err(format!(
                "{at}: the column `{h}` appears twice in the header; rename or remove one"
            ));
        }
    }
    Ok(())
}

fn read_parquet(path: &Path) -> Result<TextTable, String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format!("{shown}: not a readable Parquet file: {e}"))?;
    let mut headers: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format!("{shown}: {e}"))?;
        headers = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let n = batch.num_rows();
        let mut cols: Vec<Vec<String>> = Vec::new();
        for (c, name) in batch.columns().iter().zip(&headers) {
            cols.push(text_column(c.as_ref()).ok_or_else(|| {
                format!(
                    "{shown}: column `{name}` has type {}, expected text or numbers",
                    c.data_type()
                )
            })?);
        }
        for i in 0..n {
            let line = rows.len() as u64 + 2;
            rows.push((line, cols.iter().map(|c| c[i].clone()).collect()));
        }
    }
    Ok(TextTable {
        path: path.to_path_buf(),
        headers,
        rows,
    })
}

fn text_column(a: &dyn Array) -> Option<Vec<String>> {
    fn conv<A: Array + 'static, T: ToString>(
        a: &dyn Array,
        f: impl Fn(&A, usize) -> T,
    ) -> Option<Vec<String>> {
        let a = a.as_any().downcast_ref::<A>()?;
        Some(
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        String::new()
                    } else {
                        f(a, i).to_string()
                    }
                })
                .collect(),
        )
    }
    conv::<StringArray, _>(a, |a, i| a.value(i).to_string())
        .or_else(|| conv::<LargeStringArray, _>(a, |a, i| a.value(i).to_string()))
        .or_else(|| conv::<Int64Array, _>(a, |a, i| a.value(i)))
        .or_else(|| conv::<Int32Array, _>(a, |a, i| a.value(i)))
        .or_else(|| conv::<Float64Array, _>(a, |a, i| a.value(i)))
        .or_else(|| conv::<Float32Array, _>(a, |a, i| a.value(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_compare_loosely() {
        assert_eq!(header_key("\u{feff} Label  (Primary) "), "label (primary)");
        assert_eq!(header_key("Camera_View"), "camera view");
    }

    #[test]
    fn a_column_named_twice_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "session,label,label\ns1,a,b\n").unwrap();
        for e in [
            TextTable::read(&p).unwrap_err(),
            TextTable::read_ragged(&p).unwrap_err(),
        ] {
            assert!(
                e.contains("t.csv") && e.contains("`label` appears twice"),
                "{e}"
            );
        }
    }

    #[test]
    fn strict_tables_refuse_ragged_rows_and_ragged_ones_pad_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "\u{feff}a,B c\n# note\n1\n,\n2,3,4\n").unwrap();
        let e = TextTable::read(&p).unwrap_err();
        assert!(
            e.contains("malformed CSV: 1 fields but the header has 2"),
            "{e}"
        );
        let t = TextTable::read_ragged(&p).unwrap();
        assert_eq!(t.headers, ["a", "B c"]);
        assert_eq!(t.col_any(&["b_c"]), Some(1));
        assert_eq!(t.col("b_c"), None);
        let cells: Vec<&Vec<String>> = t.rows.iter().map(|(_, c)| c).collect();
        assert_eq!(cells[0], &["# note", ""]);
        assert_eq!(cells[1], &["1", ""]);
        assert_eq!(cells[2], &["2", "3", "4"]);
        assert_eq!(t.rows[2].0, 5);
    }
}
