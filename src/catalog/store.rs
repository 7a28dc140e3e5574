//! SQLite storage of catalogue items, the source of truth that the vector index is built from.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{CatalogError, Item};

/// SQLite's default limit on bound parameters per statement is 32,766; lookups by key are
/// chunked well below it.
pub(super) const KEYS_PER_QUERY: usize = 500;

/// The fields of an item that a recommendation shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub key: u64,
    pub id: String,
    pub title: String,
}

#[derive(Clone)]
pub struct ItemStore {
    pool: SqlitePool,
}

impl ItemStore {
    /// Opens (creating if needed) the database in WAL mode with synchronous commits and
    /// applies the migrations in `migrations/`.
    pub async fn open(path: &Path) -> Result<Self, CatalogError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Inserts items in one transaction and returns their keys, in input order.
    pub async fn insert_all(&self, items: &[Item]) -> Result<Vec<u64>, CatalogError> {
        let now = unix_seconds();
        let mut transaction = self.pool.begin().await?;
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            let attributes = serde_json::Value::Object(item.attributes.clone()).to_string();
            let row = sqlx::query(
                "INSERT INTO items (id, title, text, attributes, updated_at) VALUES (?, ?, ?, ?, ?) RETURNING key",
            )
            .bind(&item.id)
            .bind(&item.title)
            .bind(&item.text)
            .bind(attributes)
            .bind(now)
            .fetch_one(&mut *transaction)
            .await?;
            keys.push(row.get::<i64, _>(0) as u64);
        }
        transaction.commit().await?;
        Ok(keys)
    }

    /// Looks up items by index key; keys with no item are left out of the map.
    pub async fn get_by_keys(&self, keys: &[u64]) -> Result<HashMap<u64, StoredItem>, CatalogError> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT key, id, title FROM items WHERE key IN ({placeholders})");
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(*key as i64);
            }
            for row in query.fetch_all(&self.pool).await? {
                let key = row.get::<i64, _>(0) as u64;
                found.insert(key, StoredItem { key, id: row.get(1), title: row.get(2) });
            }
        }
        Ok(found)
    }

    /// Returns every item's key and text, for building the index.
    pub async fn all_texts(&self) -> Result<Vec<(u64, String)>, CatalogError> {
        let rows = sqlx::query("SELECT key, text FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, row.get(1))).collect())
    }

    /// Returns every item, in key order.
    pub async fn all_items(&self) -> Result<Vec<Item>, CatalogError> {
        let rows = sqlx::query("SELECT id, title, text, attributes FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let attributes = serde_json::from_str::<serde_json::Value>(&row.get::<String, _>(3)).ok().and_then(|value| value.as_object().cloned()).unwrap_or_default();
                Item { id: row.get(0), title: row.get(1), text: row.get(2), attributes }
            })
            .collect())
    }

    /// Returns every item's key and id.
    pub async fn all_ids(&self) -> Result<Vec<(u64, String)>, CatalogError> {
        let rows = sqlx::query("SELECT key, id FROM items").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, row.get(1))).collect())
    }

    pub async fn count(&self) -> Result<u64, CatalogError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items").fetch_one(&self.pool).await?;
        Ok(count as u64)
    }

    /// Copies the write-ahead log into the database file.
    pub async fn checkpoint(&self) -> Result<(), CatalogError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await?;
        Ok(())
    }

    /// Copies the write-ahead log into the database file and closes the connections, so the
    /// database file alone contains every committed row.
    pub async fn close(self) -> Result<(), CatalogError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await?;
        self.pool.close().await;
        Ok(())
    }
}

pub fn unix_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, title: &str) -> Item {
        Item { id: id.into(), title: title.into(), text: title.into(), attributes: Default::default() }
    }

    #[tokio::test]
    async fn insert_and_lookup_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = ItemStore::open(&dir.path().join("catalog.db")).await.unwrap();
        let keys = store.insert_all(&[item("a", "Red kettle"), item("b", "Blue mug")]).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);

        let found = store.get_by_keys(&[keys[1], 9999]).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[&keys[1]].id, "b");
        assert_eq!(found[&keys[1]].title, "Blue mug");
        assert_eq!(store.count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn duplicate_id_fails_and_inserts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ItemStore::open(&dir.path().join("catalog.db")).await.unwrap();
        assert!(store.insert_all(&[item("a", "x"), item("a", "y")]).await.is_err());
        assert_eq!(store.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn reopening_keeps_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let store = ItemStore::open(&path).await.unwrap();
        store.insert_all(&[item("a", "x")]).await.unwrap();
        store.close().await.unwrap();
        assert_eq!(ItemStore::open(&path).await.unwrap().count().await.unwrap(), 1);
    }
}
