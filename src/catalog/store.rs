//! `ItemStore`: the handle to the catalogue database, the source of truth that the vector
//! index is built from. It contains one backend, chosen by `storage.url`, and forwards the
//! repository methods (see `repository.rs`) to it.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::postgres::PostgresRepository;
use super::sqlite::SqliteRepository;
use super::{CatalogError, DATABASE_FILE};
use crate::config::{StorageBackend, StorageSettings};

/// The fields of an item that a recommendation shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub key: u64,
    pub id: String,
    pub title: String,
}

#[derive(Clone)]
pub(super) enum Backend {
    Sqlite(SqliteRepository),
    Postgres(PostgresRepository),
}

#[derive(Clone)]
pub struct ItemStore {
    pub(super) backend: Backend,
}

impl ItemStore {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode with synchronous
    /// commits and applies the migrations in `migrations/sqlite/`.
    pub async fn open(path: &Path) -> Result<Self, CatalogError> {
        Ok(Self { backend: Backend::Sqlite(SqliteRepository::open(path).await?) })
    }

    /// Opens the database that `storage.url` names: the data directory's SQLite file, or a
    /// PostgreSQL database whose migrations in `migrations/postgres/` are applied first.
    pub async fn connect(storage: &StorageSettings, data_dir: &Path) -> Result<Self, CatalogError> {
        let backend = storage.backend().map_err(|err| CatalogError::Storage(err.to_string()))?;
        match backend {
            StorageBackend::Sqlite => Self::open(&data_dir.join(DATABASE_FILE)).await,
            StorageBackend::Postgres => Ok(Self { backend: Backend::Postgres(PostgresRepository::connect(&storage.url).await?) }),
        }
    }

    /// True when other processes may write the same catalogue (PostgreSQL), so the index must
    /// follow the change log rather than only this process's writes.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Returns the PostgreSQL backend, for following its change notifications, or `None` with SQLite.
    pub fn postgres(&self) -> Option<&PostgresRepository> {
        match &self.backend {
            Backend::Postgres(repository) => Some(repository),
            Backend::Sqlite(_) => None,
        }
    }

    /// Returns the SQLite backend, or `None` with PostgreSQL.
    pub(crate) fn sqlite(&self) -> Option<&SqliteRepository> {
        match &self.backend {
            Backend::Sqlite(repository) => Some(repository),
            Backend::Postgres(_) => None,
        }
    }

    /// Copies SQLite's write-ahead log into the database file. PostgreSQL needs nothing.
    pub async fn checkpoint(&self) -> Result<(), CatalogError> {
        match &self.backend {
            Backend::Sqlite(repository) => repository.checkpoint().await,
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Closes the connections; with SQLite, after a checkpoint, so the database file alone
    /// contains every committed row.
    pub async fn close(self) -> Result<(), CatalogError> {
        match self.backend {
            Backend::Sqlite(repository) => repository.close().await,
            Backend::Postgres(repository) => {
                repository.close().await;
                Ok(())
            }
        }
    }
}

/// Parses an item's stored attributes (a JSON object as text); anything else reads as none.
pub(super) fn parse_attributes(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

pub fn unix_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::catalog::Item;
    use crate::testing::test_stores;

    fn item(id: &str, title: &str) -> Item {
        Item { id: id.into(), title: title.into(), text: title.into(), attributes: Default::default() }
    }

    #[tokio::test]
    async fn insert_and_lookup_by_key() {
        for test in test_stores().await {
            let store = &test.store;
            let keys = store.insert_all(&[item("a", "Red kettle"), item("b", "Blue mug")]).await.unwrap();
            assert_eq!(keys.len(), 2);
            assert_ne!(keys[0], keys[1]);

            let found = store.get_by_keys(&[keys[1], 9999]).await.unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(found[&keys[1]].id, "b");
            assert_eq!(found[&keys[1]].title, "Blue mug");
            assert_eq!(store.count().await.unwrap(), 2);
        }
    }

    #[tokio::test]
    async fn duplicate_id_fails_and_inserts_nothing() {
        for test in test_stores().await {
            assert!(test.store.insert_all(&[item("a", "x"), item("a", "y")]).await.is_err(), "{}", test.backend);
            assert_eq!(test.store.count().await.unwrap(), 0, "{}", test.backend);
        }
    }

    #[tokio::test]
    async fn reopening_keeps_items() {
        for test in test_stores().await {
            test.store.insert_all(&[item("a", "x")]).await.unwrap();
            test.store.clone().close().await.unwrap();
            assert_eq!(test.reopen().await.count().await.unwrap(), 1, "{}", test.backend);
        }
    }

    #[tokio::test]
    async fn reads_by_key_and_id() {
        for test in test_stores().await {
            let store = &test.store;
            let mut kettle = item("a", "Red kettle");
            kettle.attributes.insert("brand".into(), "Acme".into());
            let keys = store.insert_all(&[kettle, item("b", "Blue mug")]).await.unwrap();

            assert_eq!(store.all_keys().await.unwrap(), keys);
            assert_eq!(store.texts_by_key(&[keys[0], 9999]).await.unwrap()[&keys[0]], "Red kettle");
            let attributes = store.attributes_by_key(&keys).await.unwrap();
            assert_eq!(attributes[&keys[0]]["brand"], "Acme", "{}", test.backend);
            assert!(attributes[&keys[1]].is_empty());
            let ids = store.keys_of(&["b", "missing"]).await.unwrap();
            assert_eq!(ids.len(), 1);
            assert_eq!(ids["b"], keys[1]);
            assert_eq!(store.all_items().await.unwrap()[0].attributes["brand"], "Acme");
        }
    }
}
