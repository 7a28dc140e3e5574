//! An exclusive lock on a data directory, so that two processes never write the same index
//! and database (a second `serve`, or `index` while a server runs).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CatalogError;

pub const LOCK_FILE: &str = "attnrec.lock";

/// How long to wait for a lock that another process holds, for example a server that is
/// still shutting down.
const WAIT: Duration = Duration::from_secs(5);

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (creating the directory if needed), waiting a few seconds
    /// for another holder to let go. The wait yields to the runtime, so a server in this
    /// process that is shutting down can finish and release the lock.
    pub async fn acquire(data_dir: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(data_dir).map_err(|source| CatalogError::Io { path: data_dir.to_path_buf(), source })?;
        let path = data_dir.join(LOCK_FILE);
        let io = |source| CatalogError::Io { path: path.clone(), source };
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if started.elapsed() < WAIT => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(TryLockError::WouldBlock) => return Err(in_use(data_dir, &path)),
                Err(TryLockError::Error(source)) => return Err(io(source)),
            }
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

fn in_use(data_dir: &Path, path: &PathBuf) -> CatalogError {
    let holder = std::fs::read_to_string(path).ok().map(|pid| pid.trim().to_string()).filter(|pid| !pid.is_empty());
    CatalogError::InUse {
        dir: data_dir.to_path_buf(),
        holder: holder.map(|pid| format!("process {pid}")).unwrap_or_else(|| "another process".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_holder_rejected_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).await.unwrap();
        let started = Instant::now();
        let err = DataDirLock::acquire(dir.path()).await.unwrap_err();
        assert!(started.elapsed() >= WAIT);
        assert!(err.to_string().contains(&format!("process {}", std::process::id())), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).await.unwrap();
    }
}
