//! Catalogue writes through the API: upserts and deletes of items, each recorded in the change
//! log in the same transaction, and the reads that replay that log into the vector index.

use std::collections::HashMap;

use sqlx::{Row, Sqlite, Transaction};

use super::store::unix_seconds;
use super::{CatalogError, Item, ItemStore};

/// Result of a write for the stored item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteStatus {
    /// The id was new.
    Created,
    /// The id existed; its text or its title and attributes changed.
    Updated,
    /// The id existed with the same title, text and attributes.
    Unchanged,
    /// The item was deleted.
    Deleted,
}

/// One applied write and the index operations it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub id: String,
    pub status: WriteStatus,
    /// Sequence number of the write's last change; later writes have larger numbers.
    pub seq: u64,
    /// The item's key after the write (for a delete, the key it had).
    pub key: u64,
    /// The key whose vector must be added to the index (a new item or a new text).
    pub added_key: Option<u64>,
    /// The key whose vector must leave the index (a deleted item or an old text).
    pub removed_key: Option<u64>,
}

/// One operation of the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Add,
    Remove,
    Update,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub key: u64,
    pub op: ChangeOp,
}

/// A stored item with everything the API shows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRecord {
    pub key: u64,
    pub id: String,
    pub title: String,
    pub text: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub seq: u64,
    pub updated_at: i64,
}

impl ItemStore {
    /// Inserts or replaces items in one transaction. An item whose text changed gets a new
    /// key, so its old vector is removed and the new one added. An item whose text is the same
    /// keeps its key and vector. Ids must be distinct within the call.
    pub async fn upsert(&self, items: &[Item]) -> Result<Vec<WriteOutcome>, CatalogError> {
        let now = unix_seconds();
        let mut transaction = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            outcomes.push(upsert_one(&mut transaction, item, now).await?);
        }
        transaction.commit().await?;
        Ok(outcomes)
    }

    /// Deletes an item; `None` when no item has this id.
    pub async fn delete(&self, id: &str) -> Result<Option<WriteOutcome>, CatalogError> {
        let mut transaction = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query("DELETE FROM items WHERE id = ? RETURNING key").bind(id).fetch_optional(&mut *transaction).await? else {
            return Ok(None);
        };
        let key = row.get::<i64, _>(0) as u64;
        let seq = log_change(&mut transaction, key, "remove", unix_seconds()).await?;
        transaction.commit().await?;
        Ok(Some(WriteOutcome { id: id.to_string(), status: WriteStatus::Deleted, seq, key, added_key: None, removed_key: Some(key) }))
    }

    pub async fn get_item(&self, id: &str) -> Result<Option<ItemRecord>, CatalogError> {
        let row = sqlx::query("SELECT key, id, title, text, attributes, seq, updated_at FROM items WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            let attributes: String = row.get(4);
            let attributes = match serde_json::from_str(&attributes) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => return Err(CatalogError::Index(format!("item {id} has malformed stored attributes"))),
            };
            Ok(ItemRecord {
                key: row.get::<i64, _>(0) as u64,
                id: row.get(1),
                title: row.get(2),
                text: row.get(3),
                attributes,
                seq: row.get::<i64, _>(5) as u64,
                updated_at: row.get(6),
            })
        })
        .transpose()
    }

    /// Returns the change log after `seq`, oldest first.
    pub async fn changes_after(&self, seq: u64) -> Result<Vec<Change>, CatalogError> {
        let rows = sqlx::query("SELECT seq, item_key, op FROM changes WHERE seq > ? ORDER BY seq").bind(seq as i64).fetch_all(self.pool()).await?;
        rows.into_iter()
            .map(|row| {
                let op = match row.get::<String, _>(2).as_str() {
                    "add" => ChangeOp::Add,
                    "remove" => ChangeOp::Remove,
                    "update" => ChangeOp::Update,
                    other => return Err(CatalogError::Index(format!("unknown change operation {other:?}"))),
                };
                Ok(Change { seq: row.get::<i64, _>(0) as u64, key: row.get::<i64, _>(1) as u64, op })
            })
            .collect()
    }

    /// Returns the sequence number of the latest change, 0 when there is none.
    pub async fn last_seq(&self) -> Result<u64, CatalogError> {
        // sqlite_sequence keeps the largest sequence number even after the log is pruned.
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetch_optional(self.pool()).await?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Drops changes up to and including `seq`, once a snapshot contains them.
    pub async fn prune_changes(&self, seq: u64) -> Result<u64, CatalogError> {
        let done = sqlx::query("DELETE FROM changes WHERE seq <= ?").bind(seq as i64).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// Returns the texts of the items with these keys; keys with no item are left out.
    pub async fn texts_by_key(&self, keys: &[u64]) -> Result<HashMap<u64, String>, CatalogError> {
        let mut texts = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(super::store::KEYS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT key, text FROM items WHERE key IN ({placeholders})");
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(*key as i64);
            }
            for row in query.fetch_all(self.pool()).await? {
                texts.insert(row.get::<i64, _>(0) as u64, row.get(1));
            }
        }
        Ok(texts)
    }

    /// Returns every item's key and attributes.
    pub async fn all_attributes(&self) -> Result<Vec<(u64, serde_json::Map<String, serde_json::Value>)>, CatalogError> {
        let rows = sqlx::query("SELECT key, attributes FROM items").fetch_all(self.pool()).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let attributes = serde_json::from_str::<serde_json::Value>(&row.get::<String, _>(1)).ok().and_then(|value| value.as_object().cloned());
                (row.get::<i64, _>(0) as u64, attributes.unwrap_or_default())
            })
            .collect())
    }

    /// Returns the keys of the items with these ids. Unknown ids are left out.
    pub async fn keys_of(&self, ids: &[&str]) -> Result<HashMap<String, u64>, CatalogError> {
        let mut keys = HashMap::with_capacity(ids.len());
        for id in ids {
            let key: Option<i64> = sqlx::query_scalar("SELECT key FROM items WHERE id = ?").bind(*id).fetch_optional(self.pool()).await?;
            if let Some(key) = key {
                keys.insert(id.to_string(), key as u64);
            }
        }
        Ok(keys)
    }

    /// Returns every item's key.
    pub async fn all_keys(&self) -> Result<Vec<u64>, CatalogError> {
        let keys: Vec<i64> = sqlx::query_scalar("SELECT key FROM items ORDER BY key").fetch_all(self.pool()).await?;
        Ok(keys.into_iter().map(|key| key as u64).collect())
    }
}

async fn upsert_one(transaction: &mut Transaction<'_, Sqlite>, item: &Item, now: i64) -> Result<WriteOutcome, CatalogError> {
    let attributes = serde_json::Value::Object(item.attributes.clone()).to_string();
    let existing = sqlx::query("SELECT key, title, text, attributes FROM items WHERE id = ?").bind(&item.id).fetch_optional(&mut **transaction).await?;
    let outcome = |status, seq, key, added_key, removed_key| WriteOutcome { id: item.id.clone(), status, seq, key, added_key, removed_key };

    let Some(existing) = existing else {
        let key = insert_row(transaction, item, &attributes, now).await?;
        let seq = log_change(transaction, key, "add", now).await?;
        set_seq(transaction, key, seq).await?;
        return Ok(outcome(WriteStatus::Created, seq, key, Some(key), None));
    };

    let old_key = existing.get::<i64, _>(0) as u64;
    if existing.get::<String, _>(2) != item.text {
        // A new text is a new vector under a new key: the old key's vector is then stale
        // wherever it still is, and keys are never reused, so no search can mistake it.
        sqlx::query("DELETE FROM items WHERE key = ?").bind(old_key as i64).execute(&mut **transaction).await?;
        log_change(transaction, old_key, "remove", now).await?;
        let key = insert_row(transaction, item, &attributes, now).await?;
        let seq = log_change(transaction, key, "add", now).await?;
        set_seq(transaction, key, seq).await?;
        return Ok(outcome(WriteStatus::Updated, seq, key, Some(key), Some(old_key)));
    }

    let same = existing.get::<String, _>(1) == item.title && existing.get::<String, _>(3) == attributes;
    sqlx::query("UPDATE items SET title = ?, attributes = ?, updated_at = ? WHERE key = ?")
        .bind(&item.title)
        .bind(&attributes)
        .bind(now)
        .bind(old_key as i64)
        .execute(&mut **transaction)
        .await?;
    let seq = log_change(transaction, old_key, "update", now).await?;
    set_seq(transaction, old_key, seq).await?;
    let status = if same { WriteStatus::Unchanged } else { WriteStatus::Updated };
    Ok(outcome(status, seq, old_key, None, None))
}

async fn insert_row(transaction: &mut Transaction<'_, Sqlite>, item: &Item, attributes: &str, now: i64) -> Result<u64, CatalogError> {
    let row = sqlx::query("INSERT INTO items (id, title, text, attributes, updated_at) VALUES (?, ?, ?, ?, ?) RETURNING key")
        .bind(&item.id)
        .bind(&item.title)
        .bind(&item.text)
        .bind(attributes)
        .bind(now)
        .fetch_one(&mut **transaction)
        .await?;
    Ok(row.get::<i64, _>(0) as u64)
}

async fn log_change(transaction: &mut Transaction<'_, Sqlite>, key: u64, op: &str, now: i64) -> Result<u64, CatalogError> {
    let seq: i64 = sqlx::query_scalar("INSERT INTO changes (item_key, op, changed_at) VALUES (?, ?, ?) RETURNING seq")
        .bind(key as i64)
        .bind(op)
        .bind(now)
        .fetch_one(&mut **transaction)
        .await?;
    Ok(seq as u64)
}

async fn set_seq(transaction: &mut Transaction<'_, Sqlite>, key: u64, seq: u64) -> Result<(), CatalogError> {
    sqlx::query("UPDATE items SET seq = ? WHERE key = ?").bind(seq as i64).bind(key as i64).execute(&mut **transaction).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, text: &str) -> Item {
        Item { id: id.into(), title: text.into(), text: text.into(), attributes: Default::default() }
    }

    async fn store() -> (tempfile::TempDir, ItemStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ItemStore::open(&dir.path().join("catalog.db")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn upsert_after_delete_new_key() {
        let (_dir, store) = store().await;
        let created = store.upsert(&[item("a", "Red kettle")]).await.unwrap().remove(0);
        assert_eq!(created.status, WriteStatus::Created);
        let first_key = created.added_key.unwrap();

        let deleted = store.delete("a").await.unwrap().unwrap();
        assert_eq!(deleted.removed_key, Some(first_key));
        assert!(store.get_item("a").await.unwrap().is_none());
        assert!(store.delete("a").await.unwrap().is_none());

        let again = store.upsert(&[item("a", "Blue kettle")]).await.unwrap().remove(0);
        assert_eq!(again.status, WriteStatus::Created);
        assert_ne!(again.added_key, Some(first_key), "keys are never reused");
        let stored = store.get_item("a").await.unwrap().unwrap();
        assert_eq!(stored.text, "Blue kettle");
        assert_eq!(stored.seq, again.seq);
        assert!(again.seq > deleted.seq);
        assert!(deleted.seq > created.seq);
    }

    #[tokio::test]
    async fn new_text_gets_new_key() {
        let (_dir, store) = store().await;
        let key = store.upsert(&[item("a", "Red kettle")]).await.unwrap()[0].added_key.unwrap();

        let renamed = Item { title: "Kettle, red".into(), ..item("a", "Red kettle") };
        let outcome = store.upsert(&[renamed]).await.unwrap().remove(0);
        assert_eq!((outcome.status, outcome.added_key, outcome.removed_key), (WriteStatus::Updated, None, None));
        let same = store.upsert(&[Item { title: "Kettle, red".into(), ..item("a", "Red kettle") }]).await.unwrap().remove(0);
        assert_eq!(same.status, WriteStatus::Unchanged);

        let retexted = store.upsert(&[item("a", "Green kettle")]).await.unwrap().remove(0);
        assert_eq!(retexted.removed_key, Some(key));
        assert!(retexted.added_key.unwrap() > key);
        assert_eq!(store.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn change_log_order_and_prune() {
        let (_dir, store) = store().await;
        store.upsert(&[item("a", "x"), item("b", "y")]).await.unwrap();
        store.delete("a").await.unwrap();
        let changes = store.changes_after(0).await.unwrap();
        let ops: Vec<ChangeOp> = changes.iter().map(|change| change.op).collect();
        assert_eq!(ops, vec![ChangeOp::Add, ChangeOp::Add, ChangeOp::Remove]);
        assert!(changes.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        assert_eq!(store.last_seq().await.unwrap(), changes[2].seq);

        store.prune_changes(changes[2].seq).await.unwrap();
        assert!(store.changes_after(0).await.unwrap().is_empty());
        assert_eq!(store.last_seq().await.unwrap(), changes[2].seq, "the sequence survives pruning");
    }

    #[tokio::test]
    async fn failed_batch_writes_nothing() {
        let (_dir, store) = store().await;
        store.upsert(&[item("a", "x")]).await.unwrap();
        let before = store.last_seq().await.unwrap();
        // A trigger that rejects id "c" simulates a storage error in the middle of a batch.
        let bad = Item { id: "b".into(), title: "t".into(), text: "t".into(), attributes: Default::default() };
        let mut transaction_breaker = store.pool().begin().await.unwrap();
        sqlx::query("CREATE TRIGGER fail_b BEFORE INSERT ON items WHEN NEW.id = 'c' BEGIN SELECT RAISE(ABORT, 'rejected'); END")
            .execute(&mut *transaction_breaker)
            .await
            .unwrap();
        transaction_breaker.commit().await.unwrap();
        assert!(store.upsert(&[bad, item("c", "z")]).await.is_err());
        assert!(store.get_item("b").await.unwrap().is_none());
        assert_eq!(store.last_seq().await.unwrap(), before);
    }
}
