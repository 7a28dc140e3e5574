//! A snapshot directory shared by replicas (a volume that every replica mounts): replicas
//! publish their index snapshots there, and a new replica copies the latest one instead of
//! embedding the whole catalogue, then replays the change log after it.

use std::path::{Path, PathBuf};

use super::{CatalogError, SnapshotRecord, HEAD_FILE, INDEX_FILE, MANIFEST_FILE, SNAPSHOT_FILE};

#[derive(Debug, Clone)]
pub struct SharedSnapshots {
    dir: PathBuf,
}

impl SharedSnapshots {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Copies the data directory's snapshot into the shared directory unless the one there
    /// is as recent. Each file is written under a temporary name and renamed into place, the
    /// index before its record, so a reader that copies the record first never pairs a
    /// record with an older index. Returns whether it published.
    pub fn publish(&self, data_dir: &Path) -> Result<bool, CatalogError> {
        let local = SnapshotRecord::read(data_dir)?;
        if self.dir.join(SNAPSHOT_FILE).exists() && SnapshotRecord::read(&self.dir)?.seq >= local.seq {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        for name in [MANIFEST_FILE, HEAD_FILE, INDEX_FILE, SNAPSHOT_FILE] {
            let from = data_dir.join(name);
            if from.exists() {
                // The process id keeps replicas that publish at the same moment apart.
                let partial = self.dir.join(format!("{name}.{}.partial", std::process::id()));
                std::fs::copy(&from, &partial).map_err(io(&partial))?;
                std::fs::File::open(&partial).and_then(|file| file.sync_all()).map_err(io(&partial))?;
                std::fs::rename(&partial, self.dir.join(name)).map_err(io(&partial))?;
            }
        }
        Ok(true)
    }

    /// Copies the latest shared snapshot into a data directory that has no manifest (a new
    /// replica). Returns the restored record, or `None` when there is nothing to restore.
    pub fn restore_into(&self, data_dir: &Path) -> Result<Option<SnapshotRecord>, CatalogError> {
        if data_dir.join(MANIFEST_FILE).exists() || !self.dir.join(MANIFEST_FILE).exists() {
            return Ok(None);
        }
        // The record first: a newer index published meanwhile only means more replaying.
        let record = SnapshotRecord::read(&self.dir)?;
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        record.write(data_dir)?;
        for name in [HEAD_FILE, INDEX_FILE, MANIFEST_FILE] {
            let from = self.dir.join(name);
            if from.exists() {
                let partial = data_dir.join(format!("{name}.partial"));
                std::fs::copy(&from, &partial).map_err(io(&from))?;
                std::fs::rename(&partial, data_dir.join(name)).map_err(io(&partial))?;
            }
        }
        Ok(Some(record))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError {
    let path = path.to_path_buf();
    move |source| CatalogError::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir_with_snapshot(seq: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), "{}").unwrap();
        std::fs::write(dir.path().join(INDEX_FILE), format!("index at {seq}")).unwrap();
        SnapshotRecord { seq, items: 1, saved_at: 0 }.write(dir.path()).unwrap();
        dir
    }

    #[test]
    fn publish_keeps_newest_snapshot() {
        let shared = tempfile::tempdir().unwrap();
        let snapshots = SharedSnapshots::new(shared.path().join("snapshots"));
        assert!(snapshots.publish(data_dir_with_snapshot(5).path()).unwrap());
        assert!(!snapshots.publish(data_dir_with_snapshot(3).path()).unwrap(), "an older snapshot replaced a newer one");
        assert!(snapshots.publish(data_dir_with_snapshot(8).path()).unwrap());
        let index = std::fs::read_to_string(shared.path().join("snapshots").join(INDEX_FILE)).unwrap();
        assert_eq!(index, "index at 8");
    }

    #[test]
    fn restore_fills_new_data_dir_only() {
        let shared = tempfile::tempdir().unwrap();
        let snapshots = SharedSnapshots::new(shared.path());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(snapshots.restore_into(empty.path()).unwrap(), None, "nothing published yet");

        snapshots.publish(data_dir_with_snapshot(7).path()).unwrap();
        let restored = snapshots.restore_into(empty.path()).unwrap().unwrap();
        assert_eq!(restored.seq, 7);
        assert_eq!(SnapshotRecord::read(empty.path()).unwrap().seq, 7);
        assert_eq!(std::fs::read_to_string(empty.path().join(INDEX_FILE)).unwrap(), "index at 7");

        let existing = data_dir_with_snapshot(2);
        assert_eq!(snapshots.restore_into(existing.path()).unwrap(), None, "an indexed data directory was overwritten");
        assert_eq!(SnapshotRecord::read(existing.path()).unwrap().seq, 2);
    }
}
