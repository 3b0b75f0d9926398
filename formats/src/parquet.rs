//! The text column of a Parquet file (the form Hugging Face hub datasets are stored in), for
//! calibration data. Snappy, zstd and uncompressed column chunks are read (what the hub and
//! pyarrow write by default); other codecs are refused with their name.

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::Path;

/// Every row's string in column `column` of the Parquet file `path` (null rows skipped).
pub fn read_text_column(path: &Path, column: &str) -> Result<Vec<String>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let r = SerializedFileReader::new(f).map_err(|e| format!("not a Parquet file: {e}"))?;
    let meta = r.metadata();
    let cols: Vec<String> = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.path().string())
        .collect();
    if !cols.iter().any(|c| c == column) {
        return Err(format!(
            "no \"{column}\" column (it has {})",
            cols.join(", ")
        ));
    }
    for rg in meta.row_groups() {
        for c in rg.columns() {
            let codec = c.compression();
            use parquet::basic::Compression as C;
            if !matches!(codec, C::UNCOMPRESSED | C::SNAPPY | C::ZSTD(_)) {
                return Err(format!(
                    "column chunks compressed with {codec:?}; snappy, zstd or none are read (rewrite it, e.g. with pyarrow, or pass the text as .jsonl)"
                ));
            }
        }
    }
    let rows = r
        .get_row_iter(None)
        .map_err(|e| format!("reading rows: {e}"))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| format!("row {i}: {e}"))?;
        for (name, field) in row.get_column_iter() {
            if name != column {
                continue;
            }
            match field {
                Field::Str(s) => out.push(s.clone()),
                Field::Null => {}
                other => return Err(format!("row {i}: \"{column}\" is not a string ({other:?})")),
            }
        }
    }
    Ok(out)
}
