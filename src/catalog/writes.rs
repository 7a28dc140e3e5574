//! What catalogue writes through the API return, and the change log entries that replay them
//! into the vector index. The queries are in the `sqlite` and `postgres` backends.

use super::{CatalogError, Item};

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

impl ChangeOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Add => "add",
            ChangeOp::Remove => "remove",
            ChangeOp::Update => "update",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, CatalogError> {
        match text {
            "add" => Ok(ChangeOp::Add),
            "remove" => Ok(ChangeOp::Remove),
            "update" => Ok(ChangeOp::Update),
            other => Err(CatalogError::Index(format!("unknown change operation {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub seq: u64,
    pub key: u64,
    pub op: ChangeOp,
    /// Unix seconds when the change was logged: whole seconds with SQLite, the database
    /// server's clock with a fraction with PostgreSQL.
    pub changed_at: f64,
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

/// An item's row as an upsert finds it. `attributes` is the stored JSON text.
pub(super) struct ExistingItem {
    pub key: u64,
    pub title: String,
    pub text: String,
    pub attributes: String,
}

/// The row operations of an upsert inside one write transaction, one implementation per
/// backend, so both backends decide keys, statuses and change log entries the same way.
#[allow(async_fn_in_trait)]
pub(super) trait RowWrites {
    async fn find_item(&mut self, id: &str) -> Result<Option<ExistingItem>, CatalogError>;
    async fn delete_row(&mut self, key: u64) -> Result<(), CatalogError>;
    /// Inserts a row under a new key and returns the key. `vector` is the item's embedding,
    /// when the caller has one and the backend stores it.
    async fn insert_row(&mut self, item: &Item, attributes: &str, vector: Option<&[f32]>, now: i64) -> Result<u64, CatalogError>;
    /// Replaces the title and attributes of the row with this key.
    async fn update_row(&mut self, key: u64, item: &Item, attributes: &str, now: i64) -> Result<(), CatalogError>;
    /// Appends to the change log and returns the change's sequence number.
    async fn log_change(&mut self, key: u64, op: ChangeOp, now: i64) -> Result<u64, CatalogError>;
    async fn set_seq(&mut self, key: u64, seq: u64) -> Result<(), CatalogError>;
}

/// Inserts or replaces one item inside a write transaction.
pub(super) async fn upsert_one(transaction: &mut impl RowWrites, item: &Item, vector: Option<&[f32]>, now: i64) -> Result<WriteOutcome, CatalogError> {
    let attributes = serde_json::Value::Object(item.attributes.clone()).to_string();
    let existing = transaction.find_item(&item.id).await?;
    let outcome = |status, seq, key, added_key, removed_key| WriteOutcome { id: item.id.clone(), status, seq, key, added_key, removed_key };

    let Some(existing) = existing else {
        let key = transaction.insert_row(item, &attributes, vector, now).await?;
        let seq = transaction.log_change(key, ChangeOp::Add, now).await?;
        transaction.set_seq(key, seq).await?;
        return Ok(outcome(WriteStatus::Created, seq, key, Some(key), None));
    };

    let old_key = existing.key;
    if existing.text != item.text {
        // A new text is a new vector under a new key: the old key's vector is then stale
        // wherever it still is, and keys are never reused, so no search can mistake it.
        transaction.delete_row(old_key).await?;
        transaction.log_change(old_key, ChangeOp::Remove, now).await?;
        let key = transaction.insert_row(item, &attributes, vector, now).await?;
        let seq = transaction.log_change(key, ChangeOp::Add, now).await?;
        transaction.set_seq(key, seq).await?;
        return Ok(outcome(WriteStatus::Updated, seq, key, Some(key), Some(old_key)));
    }

    let same = existing.title == item.title && existing.attributes == attributes;
    transaction.update_row(old_key, item, &attributes, now).await?;
    let seq = transaction.log_change(old_key, ChangeOp::Update, now).await?;
    transaction.set_seq(old_key, seq).await?;
    let status = if same { WriteStatus::Unchanged } else { WriteStatus::Updated };
    Ok(outcome(status, seq, old_key, None, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Item;
    use crate::testing::test_stores;

    fn item(id: &str, text: &str) -> Item {
        Item { id: id.into(), title: text.into(), text: text.into(), attributes: Default::default() }
    }

    #[tokio::test]
    async fn upsert_after_delete_new_key() {
        for test in test_stores().await {
            let store = &test.store;
            let created = store.upsert(&[item("a", "Red kettle")]).await.unwrap().remove(0);
            assert_eq!(created.status, WriteStatus::Created);
            let first_key = created.added_key.unwrap();

            let deleted = store.delete("a").await.unwrap().unwrap();
            assert_eq!(deleted.removed_key, Some(first_key));
            assert!(store.get_item("a").await.unwrap().is_none());
            assert!(store.delete("a").await.unwrap().is_none());

            let again = store.upsert(&[item("a", "Blue kettle")]).await.unwrap().remove(0);
            assert_eq!(again.status, WriteStatus::Created);
            assert_ne!(again.added_key, Some(first_key), "keys are never reused ({})", test.backend);
            let stored = store.get_item("a").await.unwrap().unwrap();
            assert_eq!(stored.text, "Blue kettle");
            assert_eq!(stored.seq, again.seq);
            assert!(again.seq > deleted.seq);
            assert!(deleted.seq > created.seq);
        }
    }

    #[tokio::test]
    async fn new_text_gets_new_key() {
        for test in test_stores().await {
            let store = &test.store;
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
    }

    #[tokio::test]
    async fn change_log_order_and_prune() {
        for test in test_stores().await {
            let store = &test.store;
            store.upsert(&[item("a", "x"), item("b", "y")]).await.unwrap();
            store.delete("a").await.unwrap();
            let changes = store.changes_after(0).await.unwrap();
            let ops: Vec<ChangeOp> = changes.iter().map(|change| change.op).collect();
            assert_eq!(ops, vec![ChangeOp::Add, ChangeOp::Add, ChangeOp::Remove], "{}", test.backend);
            assert!(changes.windows(2).all(|pair| pair[0].seq < pair[1].seq));
            assert!(changes.iter().all(|change| change.changed_at > 1.0e9), "{changes:?}");
            assert_eq!(store.last_seq().await.unwrap(), changes[2].seq);
            let (pending, oldest) = store.pending_changes(changes[0].seq).await.unwrap();
            assert_eq!(pending, 2);
            assert_eq!(oldest, Some(changes[1].changed_at));

            store.prune_changes(changes[2].seq).await.unwrap();
            assert!(store.changes_after(0).await.unwrap().is_empty());
            assert_eq!(store.last_seq().await.unwrap(), changes[2].seq, "the sequence survives pruning ({})", test.backend);
            assert_eq!(store.pending_changes(changes[2].seq).await.unwrap(), (0, None));
        }
    }

    #[tokio::test]
    async fn embeddings_stored_with_postgres() {
        for test in test_stores().await {
            let vector = vec![0.25_f32, -1.5, 3.0];
            let written = test.store.upsert_embedded(&[item("a", "Red kettle")], std::slice::from_ref(&vector)).await.unwrap().remove(0);
            let key = written.added_key.unwrap();
            let stored = test.store.vectors_by_key(&[key, 9999]).await.unwrap();
            match test.backend {
                "sqlite" => assert!(stored.is_empty(), "SQLite keeps vectors only in the index file"),
                _ => assert_eq!(stored.get(&key), Some(&vector)),
            }
            let without = test.store.upsert(&[item("b", "Blue mug")]).await.unwrap().remove(0);
            assert!(test.store.vectors_by_key(&[without.key]).await.unwrap().is_empty(), "{}", test.backend);
        }
    }

    #[tokio::test]
    async fn failed_batch_writes_nothing() {
        for test in test_stores().await {
            let store = &test.store;
            store.upsert(&[item("a", "x")]).await.unwrap();
            let before = store.last_seq().await.unwrap();
            // A trigger that rejects id "c" simulates a storage error in the middle of a batch.
            let bad = Item { id: "b".into(), title: "t".into(), text: "t".into(), attributes: Default::default() };
            match test.backend {
                "sqlite" => {
                    test.execute("CREATE TRIGGER fail_b BEFORE INSERT ON items WHEN NEW.id = 'c' BEGIN SELECT RAISE(ABORT, 'rejected'); END").await;
                }
                _ => {
                    test.execute("CREATE FUNCTION reject_c() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'rejected'; END $$ LANGUAGE plpgsql").await;
                    test.execute("CREATE TRIGGER fail_b BEFORE INSERT ON items FOR EACH ROW WHEN (NEW.id = 'c') EXECUTE FUNCTION reject_c()").await;
                }
            }
            assert!(store.upsert(&[bad, item("c", "z")]).await.is_err(), "{}", test.backend);
            assert!(store.get_item("b").await.unwrap().is_none());
            assert!(store.changes_after(before).await.unwrap().is_empty(), "{}", test.backend);
        }
    }
}
