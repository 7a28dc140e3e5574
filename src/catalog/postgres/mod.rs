//! The PostgreSQL backend: one catalogue, change log and feedback log shared by several
//! replicas, each of which keeps its own vector index and follows the change log.

mod feedback;
mod writes;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::Row;

use super::repository::ItemReads;
use super::rows::{item_record, ItemRecordRow};
use super::store::{parse_attributes, StoredItem};
use super::{CatalogError, Item, ItemRecord};

/// The channel on which a write transaction notifies replicas of new changes at commit.
pub const CHANGES_CHANNEL: &str = "attnrec_changes";

/// Connections per replica: the API's reads and writes, the change follower and the listener.
const MAX_CONNECTIONS: u32 = 8;

#[derive(Clone)]
pub struct PostgresRepository {
    pool: PgPool,
}

impl PostgresRepository {
    /// Connects and applies the migrations in `migrations/postgres/`. sqlx holds an advisory
    /// lock while it migrates, so replicas that start together apply them once.
    pub async fn connect(url: &str) -> Result<Self, CatalogError> {
        let pool = PgPoolOptions::new().max_connections(MAX_CONNECTIONS).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Returns a listener subscribed to `CHANGES_CHANNEL`, on its own connection.
    pub async fn listen_for_changes(&self) -> Result<PgListener, CatalogError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Keys as PostgreSQL `BIGINT`s, for `= ANY($1)`.
fn key_array(keys: &[u64]) -> Vec<i64> {
    keys.iter().map(|key| *key as i64).collect()
}

impl ItemReads for PostgresRepository {
    async fn get_by_keys(&self, keys: &[u64]) -> Result<HashMap<u64, StoredItem>, CatalogError> {
        let rows = sqlx::query("SELECT key, id, title FROM items WHERE key = ANY($1)").bind(key_array(keys)).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let key = row.get::<i64, _>(0) as u64;
                (key, StoredItem { key, id: row.get(1), title: row.get(2) })
            })
            .collect())
    }

    async fn all_texts(&self) -> Result<Vec<(u64, String)>, CatalogError> {
        let rows = sqlx::query("SELECT key, text FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, row.get(1))).collect())
    }

    async fn all_items(&self) -> Result<Vec<Item>, CatalogError> {
        let rows = sqlx::query("SELECT id, title, text, attributes FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| Item { id: row.get(0), title: row.get(1), text: row.get(2), attributes: parse_attributes(&row.get::<String, _>(3)) })
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
        let row: Option<ItemRecordRow> = sqlx::query_as("SELECT key, id, title, text, attributes, seq, updated_at FROM items WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.map(item_record).transpose()
    }

    async fn texts_by_key(&self, keys: &[u64]) -> Result<HashMap<u64, String>, CatalogError> {
        let rows = sqlx::query("SELECT key, text FROM items WHERE key = ANY($1)").bind(key_array(keys)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, row.get(1))).collect())
    }

    async fn attributes_by_key(&self, keys: &[u64]) -> Result<HashMap<u64, Map<String, Value>>, CatalogError> {
        let rows = sqlx::query("SELECT key, attributes FROM items WHERE key = ANY($1)").bind(key_array(keys)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, parse_attributes(&row.get::<String, _>(1)))).collect())
    }

    async fn all_attributes(&self) -> Result<Vec<(u64, Map<String, Value>)>, CatalogError> {
        let rows = sqlx::query("SELECT key, attributes FROM items").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get::<i64, _>(0) as u64, parse_attributes(&row.get::<String, _>(1)))).collect())
    }

    async fn keys_of(&self, ids: &[&str]) -> Result<HashMap<String, u64>, CatalogError> {
        let rows = sqlx::query("SELECT id, key FROM items WHERE id = ANY($1)").bind(ids).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.get(0), row.get::<i64, _>(1) as u64)).collect())
    }

    async fn vectors_by_key(&self, keys: &[u64]) -> Result<HashMap<u64, Vec<f32>>, CatalogError> {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT key, vector FROM items WHERE key = ANY($1) AND vector IS NOT NULL").bind(key_array(keys)).fetch_all(&self.pool).await?;
        let vectors = rows
            .into_iter()
            .map(|(key, bytes)| {
                let values = bytes.chunks_exact(4).map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])).collect();
                (key as u64, values)
            })
            .collect();
        Ok(vectors)
    }

    async fn all_keys(&self) -> Result<Vec<u64>, CatalogError> {
        let keys: Vec<i64> = sqlx::query_scalar("SELECT key FROM items ORDER BY key").fetch_all(&self.pool).await?;
        Ok(keys.into_iter().map(|key| key as u64).collect())
    }
}
