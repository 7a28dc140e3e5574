//! PostgreSQL catalogue writes. Every write transaction first takes one advisory lock, so
//! writes from all replicas run one at a time and commit in the order of their sequence
//! numbers: a replica that has applied every change up to `seq` can never meet an earlier
//! change later. At commit the transaction notifies `CHANGES_CHANNEL`.

use sqlx::{Postgres, Row, Transaction};

use super::{PostgresRepository, CHANGES_CHANNEL};
use crate::catalog::repository::{CatalogWrites, ChangeLog};
use crate::catalog::rows::{change, ChangeRow};
use crate::catalog::store::unix_seconds;
use crate::catalog::writes::{upsert_one, ExistingItem, RowWrites};
use crate::catalog::{CatalogError, Change, ChangeOp, Item, WriteOutcome, WriteStatus};

/// The advisory lock key of catalogue writes (the bytes of "attnrec" as a number).
const CATALOG_WRITE_LOCK: i64 = 0x0061_7474_6e72_6563;

impl PostgresRepository {
    /// Begins a transaction that holds the catalogue write lock until it ends.
    async fn begin_write(&self) -> Result<PostgresWriteTransaction, CatalogError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CATALOG_WRITE_LOCK).execute(&mut *transaction).await?;
        Ok(PostgresWriteTransaction(transaction))
    }
}

/// Queues a notification that change `seq` exists; PostgreSQL delivers it at commit.
async fn notify_change(transaction: &mut PostgresWriteTransaction, seq: u64) -> Result<(), CatalogError> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(seq.to_string()).execute(&mut *transaction.0).await?;
    Ok(())
}

impl CatalogWrites for PostgresRepository {
    async fn insert_all(&self, items: &[Item]) -> Result<Vec<u64>, CatalogError> {
        let now = unix_seconds();
        let mut transaction = self.begin_write().await?;
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
        let mut transaction = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            outcomes.push(upsert_one(&mut transaction, item, vectors.get(position).map(Vec::as_slice), now).await?);
        }
        if let Some(last) = outcomes.iter().map(|outcome| outcome.seq).max() {
            notify_change(&mut transaction, last).await?;
        }
        transaction.0.commit().await?;
        Ok(outcomes)
    }

    async fn delete(&self, id: &str) -> Result<Option<WriteOutcome>, CatalogError> {
        let mut transaction = self.begin_write().await?;
        let Some(row) = sqlx::query("DELETE FROM items WHERE id = $1 RETURNING key").bind(id).fetch_optional(&mut *transaction.0).await? else {
            return Ok(None);
        };
        let key = row.get::<i64, _>(0) as u64;
        let seq = transaction.log_change(key, ChangeOp::Remove, unix_seconds()).await?;
        notify_change(&mut transaction, seq).await?;
        transaction.0.commit().await?;
        Ok(Some(WriteOutcome { id: id.to_string(), status: WriteStatus::Deleted, seq, key, added_key: None, removed_key: Some(key) }))
    }
}

impl ChangeLog for PostgresRepository {
    async fn changes_after(&self, seq: u64) -> Result<Vec<Change>, CatalogError> {
        let sql = "SELECT seq, item_key, op, changed_at FROM changes WHERE seq > $1 ORDER BY seq";
        let rows: Vec<ChangeRow> = sqlx::query_as(sql).bind(seq as i64).fetch_all(&self.pool).await?;
        rows.into_iter().map(change).collect()
    }

    async fn last_seq(&self) -> Result<u64, CatalogError> {
        // The identity sequence keeps the largest number drawn even after the log is pruned.
        // It also counts numbers drawn by transactions that rolled back or are still open.
        let seq: Option<i64> = sqlx::query_scalar("SELECT pg_sequence_last_value(pg_get_serial_sequence('changes', 'seq'))").fetch_one(&self.pool).await?;
        Ok(seq.unwrap_or(0) as u64)
    }

    async fn prune_changes(&self, seq: u64) -> Result<u64, CatalogError> {
        let done = sqlx::query("DELETE FROM changes WHERE seq <= $1").bind(seq as i64).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn pending_changes(&self, seq: u64) -> Result<(u64, Option<f64>), CatalogError> {
        let row = sqlx::query("SELECT COUNT(*), MIN(changed_at) FROM changes WHERE seq > $1").bind(seq as i64).fetch_one(&self.pool).await?;
        Ok((row.get::<i64, _>(0) as u64, row.get(1)))
    }
}

/// A write transaction; a type without lifetime parameters, which the compiler needs to prove
/// that the futures of `RowWrites` are `Send`.
struct PostgresWriteTransaction(Transaction<'static, Postgres>);

impl RowWrites for PostgresWriteTransaction {
    async fn find_item(&mut self, id: &str) -> Result<Option<ExistingItem>, CatalogError> {
        let existing = sqlx::query("SELECT key, title, text, attributes FROM items WHERE id = $1").bind(id).fetch_optional(&mut *self.0).await?;
        Ok(existing.map(|row| ExistingItem { key: row.get::<i64, _>(0) as u64, title: row.get(1), text: row.get(2), attributes: row.get(3) }))
    }

    async fn delete_row(&mut self, key: u64) -> Result<(), CatalogError> {
        sqlx::query("DELETE FROM items WHERE key = $1").bind(key as i64).execute(&mut *self.0).await?;
        Ok(())
    }

    async fn insert_row(&mut self, item: &Item, attributes: &str, vector: Option<&[f32]>, now: i64) -> Result<u64, CatalogError> {
        let vector: Option<Vec<u8>> = vector.map(|values| values.iter().flat_map(|value| value.to_le_bytes()).collect());
        let key: i64 = sqlx::query_scalar("INSERT INTO items (id, title, text, attributes, updated_at, vector) VALUES ($1, $2, $3, $4, $5, $6) RETURNING key")
            .bind(&item.id)
            .bind(&item.title)
            .bind(&item.text)
            .bind(attributes)
            .bind(now)
            .bind(vector)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(key as u64)
    }

    async fn update_row(&mut self, key: u64, item: &Item, attributes: &str, now: i64) -> Result<(), CatalogError> {
        sqlx::query("UPDATE items SET title = $1, attributes = $2, updated_at = $3 WHERE key = $4")
            .bind(&item.title)
            .bind(attributes)
            .bind(now)
            .bind(key as i64)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Logs the change with the database server's clock; `now` is unused here.
    async fn log_change(&mut self, key: u64, op: ChangeOp, _now: i64) -> Result<u64, CatalogError> {
        let seq: i64 = sqlx::query_scalar("INSERT INTO changes (item_key, op) VALUES ($1, $2) RETURNING seq").bind(key as i64).bind(op.as_str()).fetch_one(&mut *self.0).await?;
        Ok(seq as u64)
    }

    async fn set_seq(&mut self, key: u64, seq: u64) -> Result<(), CatalogError> {
        sqlx::query("UPDATE items SET seq = $1 WHERE key = $2").bind(seq as i64).bind(key as i64).execute(&mut *self.0).await?;
        Ok(())
    }
}
