//! The repository traits: every query of the catalogue, its change log and the feedback log,
//! implemented once per database (`sqlite`, `postgres`). `ItemStore` dispatches each method
//! to the backend that `storage.url` selected.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::store::{Backend, ItemStore, StoredItem};
use super::{CatalogError, Change, Item, ItemRecord, WriteOutcome};
use crate::feedback::FeedbackEvent;

/// Declares a repository trait and, for each of its methods, an `ItemStore` method of the same
/// signature that calls the selected backend's implementation.
macro_rules! repository_trait {
    ($(#[$trait_doc:meta])* trait $trait:ident { $($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $type:ty)*) -> $output:ty;)* }) => {
        $(#[$trait_doc])*
        // The backends are always called through `ItemStore` on concrete types, so the
        // compiler can prove that each future is `Send` without a bound in the trait.
        #[allow(async_fn_in_trait)]
        pub trait $trait {
            $($(#[$doc])* async fn $name(&self $(, $arg: $type)*) -> Result<$output, CatalogError>;)*
        }

        impl ItemStore {
            $($(#[$doc])* pub async fn $name(&self $(, $arg: $type)*) -> Result<$output, CatalogError> {
                match &self.backend {
                    Backend::Sqlite(repository) => $trait::$name(repository $(, $arg)*).await,
                    Backend::Postgres(repository) => $trait::$name(repository $(, $arg)*).await,
                }
            })*
        }
    };
}

repository_trait! {
    /// Reads of catalogue items.
    trait ItemReads {
        /// Looks up items by index key; keys with no item are left out of the map.
        fn get_by_keys(&self, keys: &[u64]) -> HashMap<u64, StoredItem>;
        /// Returns every item's key and text, for building the index.
        fn all_texts(&self) -> Vec<(u64, String)>;
        /// Returns every item, in key order.
        fn all_items(&self) -> Vec<Item>;
        /// Returns every item's key and id.
        fn all_ids(&self) -> Vec<(u64, String)>;
        fn count(&self) -> u64;
        fn get_item(&self, id: &str) -> Option<ItemRecord>;
        /// Returns the texts of the items with these keys; keys with no item are left out.
        fn texts_by_key(&self, keys: &[u64]) -> HashMap<u64, String>;
        /// Returns the attributes of the items with these keys; keys with no item are left out.
        fn attributes_by_key(&self, keys: &[u64]) -> HashMap<u64, Map<String, Value>>;
        /// Returns every item's key and attributes.
        fn all_attributes(&self) -> Vec<(u64, Map<String, Value>)>;
        /// Returns the keys of the items with these ids. Unknown ids are left out.
        fn keys_of(&self, ids: &[&str]) -> HashMap<String, u64>;
        /// Returns every item's key, in key order.
        fn all_keys(&self) -> Vec<u64>;
        /// Returns the stored embeddings of the items with these keys. Keys with no item or no
        /// stored embedding are left out, and SQLite stores none.
        fn vectors_by_key(&self, keys: &[u64]) -> HashMap<u64, Vec<f32>>;
    }
}

repository_trait! {
    /// Catalogue writes. Each write appends its index operations to the change log in the
    /// same transaction, and writes commit in the order of their sequence numbers.
    trait CatalogWrites {
        /// Inserts items in one transaction and returns their keys, in input order. Used by
        /// `attnrec index` on an empty catalogue; it writes no change log.
        fn insert_all(&self, items: &[Item]) -> Vec<u64>;
        /// Inserts or replaces items in one transaction. An item whose text changed gets a new
        /// key, so its old vector is removed and the new one added. An item whose text is the
        /// same keeps its key and vector. Ids must be distinct within the call. `vectors`, empty
        /// or one per item, are the items' embeddings, stored where the backend keeps them.
        fn upsert_embedded(&self, items: &[Item], vectors: &[Vec<f32>]) -> Vec<WriteOutcome>;
        /// Deletes an item; `None` when no item has this id.
        fn delete(&self, id: &str) -> Option<WriteOutcome>;
    }
}

impl ItemStore {
    /// Inserts or replaces items without their embeddings; see `upsert_embedded`.
    pub async fn upsert(&self, items: &[Item]) -> Result<Vec<WriteOutcome>, CatalogError> {
        self.upsert_embedded(items, &[]).await
    }
}

repository_trait! {
    /// The change log that the vector index follows.
    trait ChangeLog {
        /// Returns the change log after `seq`, oldest first.
        fn changes_after(&self, seq: u64) -> Vec<Change>;
        /// Returns the sequence number of the latest change, 0 when there is none. Survives
        /// pruning of the log.
        fn last_seq(&self) -> u64;
        /// Drops changes up to and including `seq`, once a snapshot contains them.
        fn prune_changes(&self, seq: u64) -> u64;
        /// Returns how many changes follow `seq` and the time of the oldest of them (unix
        /// seconds), for the replication lag.
        fn pending_changes(&self, seq: u64) -> (u64, Option<f64>);
    }
}

repository_trait! {
    /// The feedback log. User ids arrive already hashed when hashing is on.
    trait FeedbackRepository {
        /// Stores every event in one transaction. Returns the position of the first event whose
        /// item id names no item, and then stores nothing.
        fn insert_feedback(&self, events: &[FeedbackEvent], received_at: i64) -> Option<usize>;
        /// Deletes events that occurred before `cutoff` (unix seconds); returns how many.
        fn delete_feedback_before(&self, cutoff: f64) -> u64;
        fn count_feedback(&self) -> u64;
        /// Returns the distinct item ids of a stored user id's `purchase` events.
        fn purchased_item_ids(&self, stored_user_id: &str) -> Vec<String>;
        /// Returns every event that carries a query, oldest first.
        fn feedback_with_query(&self) -> Vec<FeedbackEvent>;
        /// Returns every event with a user id as `(stored user id, item id, occurred_at, query)`,
        /// oldest first.
        fn user_feedback(&self) -> Vec<(String, String, f64, Option<String>)>;
        /// Returns the last `limit` distinct item ids that a stored user id acted on, most
        /// recent first.
        fn recent_item_ids(&self, stored_user_id: &str, limit: usize) -> Vec<String>;
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::Item;
    use crate::feedback::{EventKind, FeedbackEvent};
    use crate::testing::test_stores;

    fn event(item_id: &str, kind: EventKind, occurred_at: f64) -> FeedbackEvent {
        FeedbackEvent { user_id: Some("hashed-user".into()), query: Some("kettle".into()), item_id: item_id.into(), event: kind, value: 1.0, occurred_at }
    }

    #[tokio::test]
    async fn recent_items_distinct_newest_first() {
        for test in test_stores().await {
            let store = &test.store;
            let items: Vec<Item> = ["a", "b", "c"].iter().map(|id| Item { id: id.to_string(), title: id.to_string(), text: id.to_string(), attributes: Default::default() }).collect();
            store.upsert(&items).await.unwrap();
            let events = [event("a", EventKind::Click, 1.0), event("b", EventKind::Click, 2.0), event("a", EventKind::Click, 3.0), event("c", EventKind::Click, 4.0)];
            store.insert_feedback(&events, 100).await.unwrap();

            assert_eq!(store.recent_item_ids("hashed-user", 10).await.unwrap(), vec!["c", "a", "b"], "{}", test.backend);
            assert_eq!(store.recent_item_ids("hashed-user", 2).await.unwrap(), vec!["c", "a"]);
            assert!(store.recent_item_ids("someone-else", 10).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn feedback_round_trip() {
        for test in test_stores().await {
            let store = &test.store;
            store.upsert(&[Item { id: "a".into(), title: "Kettle".into(), text: "Kettle".into(), attributes: Default::default() }]).await.unwrap();

            let unknown = store.insert_feedback(&[event("a", EventKind::Click, 10.0), event("missing", EventKind::Click, 10.0)], 100).await.unwrap();
            assert_eq!(unknown, Some(1), "{}", test.backend);
            assert_eq!(store.count_feedback().await.unwrap(), 0, "{}", test.backend);

            let events = [event("a", EventKind::Purchase, 20.0), event("a", EventKind::Click, 10.0)];
            assert_eq!(store.insert_feedback(&events, 100).await.unwrap(), None);
            assert_eq!(store.count_feedback().await.unwrap(), 2);
            assert_eq!(store.purchased_item_ids("hashed-user").await.unwrap(), vec!["a".to_string()]);
            assert!(store.purchased_item_ids("someone-else").await.unwrap().is_empty());
            let read = store.feedback_with_query().await.unwrap();
            assert_eq!(read, vec![events[1].clone(), events[0].clone()], "oldest first ({})", test.backend);

            let by_user = store.user_feedback().await.unwrap();
            assert_eq!(by_user.len(), 2, "{}", test.backend);
            assert_eq!(by_user[0], ("hashed-user".to_string(), "a".to_string(), 10.0, Some("kettle".to_string())));

            assert_eq!(store.delete_feedback_before(15.0).await.unwrap(), 1);
            assert_eq!(store.count_feedback().await.unwrap(), 1);
        }
    }
}
