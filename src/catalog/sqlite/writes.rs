//! SQLite catalogue writes: each runs in a `BEGIN IMMEDIATE` transaction, which takes the
//! database's write lock at once, so writes commit in the order of their sequence numbers.

use sqlx::{Row, Sqlite, Transaction};

use super::SqliteRepository;
use crate::catalog::repository::{CatalogWrites, ChangeLog};
use crate::catalog::rows::{change, ChangeRow};
use crate::catalog::store::unix_seconds;
use crate::catalog::writes::{upsert_one, ExistingItem, RowWrites};
use crate::catalog::{CatalogError, Change, ChangeOp, Item, WriteOutcome, WriteStatus};

impl CatalogWrites for SqliteRepository {
    async fn insert_all(&self, items: &[Item]) -> Result<Vec<u64>, CatalogError> {
        let now = unix_seconds();
        let mut transaction = SqliteWriteTransaction(self.pool.begin().await?);
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            let attributes = serde_json::Value::Object(item.attributes.clone()).to_string();
            keys.push(transaction.insert_row(item, &attributes, None, now).await?);
        }
        transaction.0.commit().await?;
        Ok(keys)
    }

    async fn upsert_embedded(&self, items: &[Item], vectors: &[Vec<f32>]) -> Result<Vec<WriteOutcome>, CatalogError> {
        let now = unix_seconds();
        let mut transaction = SqliteWriteTransaction(self.pool.begin_with("BEGIN IMMEDIATE").await?);
        let mut outcomes = Vec::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            outcomes.push(upsert_one(&mut transaction, item, vectors.get(position).map(Vec::as_slice), now).await?);
        }
        transaction.0.commit().await?;
        Ok(outcomes)
    }

    async fn delete(&self, id: &str) -> Result<Option<WriteOutcome>, CatalogError> {
        let mut transaction = SqliteWriteTransaction(self.pool.begin_with("BEGIN IMMEDIATE").await?);
        let Some(row) = sqlx::query("DELETE FROM items WHERE id = ? RETURNING key").bind(id).fetch_optional(&mut *transaction.0).await? else {
            return Ok(None);
        };
        let key = row.get::<i64, _>(0) as u64;
        let seq = transaction.log_change(key, ChangeOp::Remove, unix_seconds()).await?;
        transaction.0.commit().await?;
        Ok(Some(WriteOutcome { id: id.to_string(), status: WriteStatus::Deleted, seq, key, added_key: None, removed_key: Some(key) }))
    }
}

impl ChangeLog for SqliteRepository {
    async fn changes_after(&self, seq: u64) -> Result<Vec<Change>, CatalogError> {
        let sql = "SELECT seq, item_key, op, CAST(changed_at AS REAL) FROM changes WHERE seq > ? ORDER BY seq";
        let rows: Vec<ChangeRow> = sqlx::query_as(sql).bind(seq as i64).fetch_all(&self.pool).await?;
        rows.into_iter().map(change).collect()
    }

    async fn last_seq(&self) -> Result<u64, CatalogError> {
        // sqlite_sequence keeps the largest sequence number even after the log is pruned.
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetch_optional(&self.pool).await?;
        Ok(seq.unwrap_or(0) as u64)
    }

    async fn prune_changes(&self, seq: u64) -> Result<u64, CatalogError> {
        let done = sqlx::query("DELETE FROM changes WHERE seq <= ?").bind(seq as i64).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn pending_changes(&self, seq: u64) -> Result<(u64, Option<f64>), CatalogError> {
        let row = sqlx::query("SELECT COUNT(*), MIN(changed_at) FROM changes WHERE seq > ?").bind(seq as i64).fetch_one(&self.pool).await?;
        Ok((row.get::<i64, _>(0) as u64, row.get::<Option<i64>, _>(1).map(|seconds| seconds as f64)))
    }
}


/// A write transaction; a type without lifetime parameters, which the compiler needs to prove
/// that the futures of `RowWrites` are `Send`.
struct SqliteWriteTransaction(Transaction<'static, Sqlite>);

impl RowWrites for SqliteWriteTransaction {
    async fn find_item(&mut self, id: &str) -> Result<Option<ExistingItem>, CatalogError> {
        let existing = sqlx::query("SELECT key, title, text, attributes FROM items WHERE id = ?").bind(id).fetch_optional(&mut *self.0).await?;
        Ok(existing.map(|row| ExistingItem { key: row.get::<i64, _>(0) as u64, title: row.get(1), text: row.get(2), attributes: row.get(3) }))
    }

    async fn delete_row(&mut self, key: u64) -> Result<(), CatalogError> {
        sqlx::query("DELETE FROM items WHERE key = ?").bind(key as i64).execute(&mut *self.0).await?;
        Ok(())
    }

    /// Inserts an item row. The vector is not stored, because the SQLite schema has no vector
    /// column and the data directory's index file is the only copy.
    async fn insert_row(&mut self, item: &Item, attributes: &str, _vector: Option<&[f32]>, now: i64) -> Result<u64, CatalogError> {
        let row = sqlx::query("INSERT INTO items (id, title, text, attributes, updated_at) VALUES (?, ?, ?, ?, ?) RETURNING key")
            .bind(&item.id)
            .bind(&item.title)
            .bind(&item.text)
            .bind(attributes)
            .bind(now)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(row.get::<i64, _>(0) as u64)
    }

    async fn update_row(&mut self, key: u64, item: &Item, attributes: &str, now: i64) -> Result<(), CatalogError> {
        sqlx::query("UPDATE items SET title = ?, attributes = ?, updated_at = ? WHERE key = ?")
            .bind(&item.title)
            .bind(attributes)
            .bind(now)
            .bind(key as i64)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn log_change(&mut self, key: u64, op: ChangeOp, now: i64) -> Result<u64, CatalogError> {
        let seq: i64 = sqlx::query_scalar("INSERT INTO changes (item_key, op, changed_at) VALUES (?, ?, ?) RETURNING seq")
            .bind(key as i64)
            .bind(op.as_str())
            .bind(now)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(seq as u64)
    }

    async fn set_seq(&mut self, key: u64, seq: u64) -> Result<(), CatalogError> {
        sqlx::query("UPDATE items SET seq = ? WHERE key = ?").bind(seq as i64).bind(key as i64).execute(&mut *self.0).await?;
        Ok(())
    }
}
