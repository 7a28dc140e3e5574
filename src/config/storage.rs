//! The `[storage]` section: where the catalogue and the feedback log live.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The database that contains the catalogue, its change log and the feedback log. `Debug` hides
/// the URL's password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Empty or `sqlite://`: the SQLite file `catalog.db` in the data directory, for one
    /// process. `postgres://user:password@host:port/database`: a PostgreSQL database shared by
    /// several replicas.
    pub url: String,
    /// Milliseconds between reads of the change log when no PostgreSQL notification arrives,
    /// the fallback that keeps a replica following when a notification is lost.
    pub poll_interval_ms: u64,
    /// A directory that every replica mounts (empty: none). Replicas publish their index
    /// snapshots there, and a replica whose data directory is empty starts from the latest one.
    pub snapshot_dir: String,
}

/// The backend that `storage.url` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Sqlite,
    Postgres,
}

impl StorageSettings {
    pub fn backend(&self) -> Result<StorageBackend, ConfigError> {
        let url = self.url.trim();
        if url.is_empty() || url == "sqlite://" || url == "sqlite:" {
            return Ok(StorageBackend::Sqlite);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StorageBackend::Postgres);
        }
        let problem = if url.starts_with("sqlite:") {
            "takes no path: the SQLite database is always catalog.db in the data directory; set storage.url to \"\" or \"sqlite://\"".to_string()
        } else {
            format!("has the unsupported scheme of {}; use \"\" (SQLite) or postgres://user:password@host:port/database", redact(url))
        };
        Err(ConfigError::OutOfRange { field: "storage.url", problem })
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self { url: String::new(), poll_interval_ms: 1000, snapshot_dir: String::new() }
    }
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("StorageSettings").field("url", &redact(&self.url)).field("poll_interval_ms", &self.poll_interval_ms)
            .field("snapshot_dir", &self.snapshot_dir)
            .finish()
    }
}

/// Returns the URL with the password between `user:` and `@` replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> StorageSettings {
        StorageSettings { url: url.into(), ..StorageSettings::default() }
    }

    #[test]
    fn url_selects_backend() {
        assert_eq!(settings("").backend().unwrap(), StorageBackend::Sqlite);
        assert_eq!(settings("sqlite://").backend().unwrap(), StorageBackend::Sqlite);
        assert_eq!(settings("postgres://app@127.0.0.1:5432/shop").backend().unwrap(), StorageBackend::Postgres);
        assert_eq!(settings("postgresql://app@127.0.0.1/shop").backend().unwrap(), StorageBackend::Postgres);
    }

    #[test]
    fn invalid_urls_rejected() {
        assert!(settings("sqlite:///tmp/other.db").backend().unwrap_err().to_string().contains("takes no path"));
        let err = settings("mysql://app:hunter2@db/shop").backend().unwrap_err().to_string();
        assert!(err.contains("unsupported scheme"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_hides_password() {
        let shown = format!("{:?}", settings("postgres://app:hunter2@127.0.0.1:5432/shop"));
        assert!(shown.contains("app:[redacted]@127.0.0.1:5432/shop"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
