//! `snapshot.json`: which catalogue change the saved index file contains.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CatalogError;

pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// Written after the index file. A crash between the two leaves a record older than the
/// file, which is safe: replaying a change the index already contains changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The last change the index file contains.
    pub seq: u64,
    /// Vectors in the index file.
    pub items: u64,
    /// Unix seconds.
    pub saved_at: u64,
}

impl SnapshotRecord {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(SNAPSHOT_FILE)
    }

    /// Reads the record; a data directory indexed before snapshots existed has none, which
    /// means "no change applied".
    pub fn read(data_dir: &Path) -> Result<Self, CatalogError> {
        let path = Self::path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|err| CatalogError::InvalidManifest { path, message: err.to_string() }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self { seq: 0, items: 0, saved_at: 0 }),
            Err(source) => Err(CatalogError::Io { path, source }),
        }
    }

    /// Writes the record atomically: a flushed temporary file renamed into place.
    pub fn write(&self, data_dir: &Path) -> Result<(), CatalogError> {
        let path = Self::path(data_dir);
        let partial = path.with_extension("json.partial");
        let text = serde_json::to_string_pretty(self).expect("snapshot record serializes");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CatalogError::Io { path, source }
        };
        std::fs::write(&partial, text).map_err(io(&partial))?;
        std::fs::File::open(&partial).and_then(|file| file.sync_all()).map_err(io(&partial))?;
        std::fs::rename(&partial, &path).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_record_is_seq_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SnapshotRecord::read(dir.path()).unwrap().seq, 0);
    }

    #[test]
    fn write_and_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let record = SnapshotRecord { seq: 42, items: 7, saved_at: 1_700_000_000 };
        record.write(dir.path()).unwrap();
        assert_eq!(SnapshotRecord::read(dir.path()).unwrap(), record);
        assert!(!dir.path().join("snapshot.json.partial").exists());
    }
}
