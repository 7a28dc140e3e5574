//! Reading a catalogue file (CSV with a header row, or JSON Lines) into items.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Map, Value};

use super::{CatalogError, Item};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogFormat {
    Csv,
    JsonLines,
}

impl CatalogFormat {
    /// Chooses the format from the file extension.
    pub fn from_path(path: &Path) -> Result<Self, CatalogError> {
        match path.extension().and_then(|ext| ext.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("jsonl" | "ndjson") => Ok(Self::JsonLines),
            _ => Err(CatalogError::UnknownFormat { path: path.to_path_buf() }),
        }
    }
}

/// Names of the id field and the text fields.
#[derive(Debug, Clone)]
pub struct FieldSelection {
    pub id_field: String,
    pub text_fields: Vec<String>,
}

/// Reads every item of a catalogue file. Rows with an empty id or empty text, and ids that
/// appear twice, are rejected with their line number so nothing is silently dropped.
pub fn read_catalog(path: &Path, fields: &FieldSelection) -> Result<Vec<Item>, CatalogError> {
    let rows = match CatalogFormat::from_path(path)? {
        CatalogFormat::Csv => read_csv_rows(path)?,
        CatalogFormat::JsonLines => read_json_lines(path)?,
    };

    let mut seen = HashSet::with_capacity(rows.len());
    let mut items = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let invalid = |message: String| CatalogError::InvalidCatalog { path: path.to_path_buf(), line, message };
        let item = row_to_item(row, fields).map_err(invalid)?;
        if !seen.insert(item.id.clone()) {
            return Err(invalid(format!("id {:?} appears more than once; ids must be unique", item.id)));
        }
        items.push(item);
    }
    Ok(items)
}

fn row_to_item(mut row: Map<String, Value>, fields: &FieldSelection) -> Result<Item, String> {
    let id = match row.remove(&fields.id_field) {
        Some(value) => scalar_text(&value),
        None => return Err(format!("missing id field {:?}; set --id-field to the column that holds ids", fields.id_field)),
    };
    let id = id.trim().to_string();
    if id.is_empty() {
        return Err(format!("empty id in field {:?}", fields.id_field));
    }

    let mut parts = Vec::with_capacity(fields.text_fields.len());
    for field in &fields.text_fields {
        match row.get(field) {
            Some(value) => {
                let text = scalar_text(value);
                if !text.trim().is_empty() {
                    parts.push(text.trim().to_string());
                }
            }
            None => {
                let available: Vec<&str> = row.keys().map(String::as_str).collect();
                return Err(format!("missing text field {field:?}; available fields: {}", available.join(", ")));
            }
        }
    }
    if parts.is_empty() {
        return Err(format!("item {id:?} has no text in {}", fields.text_fields.join(", ")));
    }

    let title = row.get("title").map(scalar_text).filter(|title| !title.trim().is_empty()).unwrap_or_else(|| parts[0].clone());
    Ok(Item { id, title: title.trim().to_string(), text: parts.join(". "), attributes: row })
}

/// Renders a JSON value as text: strings as they are, numbers and booleans as written.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn read_csv_rows(path: &Path) -> Result<Vec<(u64, Map<String, Value>)>, CatalogError> {
    let io_error = |err: csv::Error| match err.kind() {
        csv::ErrorKind::Io(_) => CatalogError::Io { path: path.to_path_buf(), source: std::io::Error::other(err.to_string()) },
        _ => CatalogError::InvalidCatalog {
            path: path.to_path_buf(),
            line: err.position().map(|position| position.line()).unwrap_or(0),
            message: err.to_string(),
        },
    };
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_path(path).map_err(io_error)?;
    let headers = reader.headers().map_err(io_error)?.clone();

    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(io_error)?;
        let line = record.position().map(|position| position.line()).unwrap_or(0);
        let row = headers.iter().zip(record.iter()).map(|(name, value)| (name.to_string(), Value::String(value.to_string()))).collect();
        rows.push((line, row));
    }
    Ok(rows)
}

fn read_json_lines(path: &Path) -> Result<Vec<(u64, Map<String, Value>)>, CatalogError> {
    let content = std::fs::read_to_string(path).map_err(|source| CatalogError::Io { path: path.to_path_buf(), source })?;
    let mut rows = Vec::new();
    for (index, text) in content.lines().enumerate() {
        let line = index as u64 + 1;
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(row)) => rows.push((line, row)),
            Ok(_) => return Err(CatalogError::InvalidCatalog { path: path.to_path_buf(), line, message: "expected a JSON object".into() }),
            Err(err) => return Err(CatalogError::InvalidCatalog { path: path.to_path_buf(), line, message: err.to_string() }),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text_fields: &[&str]) -> FieldSelection {
        FieldSelection { id_field: "id".into(), text_fields: text_fields.iter().map(|f| f.to_string()).collect() }
    }

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn csv_rows_become_items_with_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "books.csv", "id,title,authors,year\n7,The Hobbit,J.R.R. Tolkien,1937\n");
        let items = read_catalog(&path, &fields(&["title", "authors"])).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, "7");
        assert_eq!(items[0].title, "The Hobbit");
        assert_eq!(items[0].text, "The Hobbit. J.R.R. Tolkien");
        assert_eq!(items[0].attributes["year"], "1937");
    }

    #[test]
    fn json_lines_accept_numeric_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "items.jsonl", "{\"id\": 12, \"title\": \"Red kettle\", \"price\": 19.5}\n\n");
        let items = read_catalog(&path, &fields(&["title"])).unwrap();
        assert_eq!(items[0].id, "12");
        assert_eq!(items[0].attributes["price"], 19.5);
    }

    #[test]
    fn duplicate_id_is_rejected_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "items.csv", "id,title\n1,a\n1,b\n");
        let err = read_catalog(&path, &fields(&["title"])).unwrap_err();
        assert!(matches!(err, CatalogError::InvalidCatalog { line: 3, .. }), "{err}");
    }

    #[test]
    fn missing_text_field_lists_available_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "items.csv", "id,name\n1,a\n");
        let err = read_catalog(&path, &fields(&["title"])).unwrap_err().to_string();
        assert!(err.contains("available fields: name"), "{err}");
    }

    #[test]
    fn empty_text_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "items.csv", "id,title\n1,  \n");
        assert!(read_catalog(&path, &fields(&["title"])).is_err());
    }

    #[test]
    fn unknown_extension_is_rejected() {
        let err = read_catalog(Path::new("items.xml"), &fields(&["title"])).unwrap_err();
        assert!(matches!(err, CatalogError::UnknownFormat { .. }));
    }
}
