//! The SQLite backend: the catalogue, its change log and the feedback log in one file of the
//! data directory, for a single process.

mod feedback;
mod writes;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::repository::ItemReads;
use super::rows::{item_record, ItemRecordRow};
use super::store::StoredItem;
use serde_json::{Map, Value};

use super::store::parse_attributes;
use super::{CatalogError, Item, ItemRecord};

/// SQLite's default limit on bound parameters per statement is 32,766; lookups by key are
/// chunked well below it.
pub(super) const KEYS_PER_QUERY: usize = 500;

/// The embedded single-process backend.
#[derive(Clone)]
pub struct SqliteRepository {
    pool: SqlitePool,
}

impl SqliteRepository {
    /// Opens (creating if needed) the database in WAL mode with synchronous commits and
    /// applies the migrations in `migrations/sqlite/`.
    pub async fn open(path: &Path) -> Result<Self, CatalogError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Copies every feedback event of another catalogue database (an earlier build of the
    /// same data directory) into this one; returns how many. Events keep their item ids, so
    /// they still refer to the items that the new catalogue keeps.
    pub async fn copy_feedback_from(&self, previous: &Path) -> Result<u64, CatalogError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("ATTACH DATABASE ? AS previous").bind(previous.display().to_string()).execute(&mut *connection).await?;
        let copied = sqlx::query(
            "INSERT INTO feedback (user_id, query, item_id, event, value, occurred_at, received_at) \
             SELECT user_id, query, item_id, event, value, occurred_at, received_at FROM previous.feedback ORDER BY id",
        )
        .execute(&mut *connection)
        .await;
        sqlx::query("DETACH DATABASE previous").execute(&mut *connection).await?;
        Ok(copied?.rows_affected())
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

impl ItemReads for SqliteRepository {
    async fn get_by_keys(&self, keys: &[u64]) -> Result<HashMap<u64, StoredItem>, CatalogError> {
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

    async fn all_texts(&self) -> Result<Vec<(u64, String)>, CatalogError> {
        let rows = sqlx::query("SELECT key, text FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, row.get(1))).collect())
    }

    async fn all_items(&self) -> Result<Vec<Item>, CatalogError> {
        let rows = sqlx::query("SELECT id, title, text, attributes FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                Item { id: row.get(0), title: row.get(1), text: row.get(2), attributes: parse_attributes(&row.get::<String, _>(3)) }
            })
            .collect())
    }

    async fn all_ids(&self) -> Result<Vec<(u64, String)>, CatalogError> {
        let rows = sqlx::query("SELECT key, id FROM items").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, row.get(1))).collect())
    }

    async fn count(&self) -> Result<u64, CatalogError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items").fetch_one(&self.pool).await?;
        Ok(count as u64)
    }

    async fn get_item(&self, id: &str) -> Result<Option<ItemRecord>, CatalogError> {
        let row: Option<ItemRecordRow> = sqlx::query_as("SELECT key, id, title, text, attributes, seq, updated_at FROM items WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        row.map(item_record).transpose()
    }

    async fn texts_by_key(&self, keys: &[u64]) -> Result<HashMap<u64, String>, CatalogError> {
        let mut texts = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT key, text FROM items WHERE key IN ({placeholders})");
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(*key as i64);
            }
            for row in query.fetch_all(&self.pool).await? {
                texts.insert(row.get::<i64, _>(0) as u64, row.get(1));
            }
        }
        Ok(texts)
    }

    async fn attributes_by_key(&self, keys: &[u64]) -> Result<HashMap<u64, Map<String, Value>>, CatalogError> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT key, attributes FROM items WHERE key IN ({placeholders})");
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(*key as i64);
            }
            for row in query.fetch_all(&self.pool).await? {
                found.insert(row.get::<i64, _>(0) as u64, parse_attributes(&row.get::<String, _>(1)));
            }
        }
        Ok(found)
    }

    async fn all_attributes(&self) -> Result<Vec<(u64, serde_json::Map<String, serde_json::Value>)>, CatalogError> {
        let rows = sqlx::query("SELECT key, attributes FROM items").fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get::<i64, _>(0) as u64, parse_attributes(&row.get::<String, _>(1))))
            .collect())
    }

    async fn keys_of(&self, ids: &[&str]) -> Result<HashMap<String, u64>, CatalogError> {
        let mut keys = HashMap::with_capacity(ids.len());
        for id in ids {
            let key: Option<i64> = sqlx::query_scalar("SELECT key FROM items WHERE id = ?").bind(*id).fetch_optional(&self.pool).await?;
            if let Some(key) = key {
                keys.insert(id.to_string(), key as u64);
            }
        }
        Ok(keys)
    }

    async fn vectors_by_key(&self, _keys: &[u64]) -> Result<HashMap<u64, Vec<f32>>, CatalogError> {
        Ok(HashMap::new())
    }

    async fn all_keys(&self) -> Result<Vec<u64>, CatalogError> {
        let keys: Vec<i64> = sqlx::query_scalar("SELECT key FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(keys.into_iter().map(|key| key as u64).collect())
    }
}
