//! The feedback log: what shoppers did with items (clicks, carts, purchases, ratings), stored
//! in the catalogue database before the API acknowledges it, and read back for training.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::catalog::{CatalogError, ItemStore};
use crate::config::FeedbackSettings;

/// Kind of shopper action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Click,
    AddToCart,
    Purchase,
    Rating,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
            EventKind::Rating => "rating",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [EventKind::Click, EventKind::AddToCart, EventKind::Purchase, EventKind::Rating].into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A validated event, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackEvent {
    pub user_id: Option<String>,
    pub query: Option<String>,
    pub item_id: String,
    pub event: EventKind,
    pub value: f64,
    /// Unix seconds.
    pub occurred_at: f64,
}

/// An event whose item id names no item; `index` is its position in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownItem {
    pub index: usize,
    pub item_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("item {} is not in the catalogue", .0.item_id)]
    UnknownItem(UnknownItem),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<sqlx::Error> for FeedbackError {
    fn from(err: sqlx::Error) -> Self {
        FeedbackError::Catalog(CatalogError::Database(err))
    }
}

/// Stores and reads feedback events in the catalogue database.
#[derive(Clone)]
pub struct FeedbackLog {
    store: ItemStore,
    /// HMAC key for user ids, when they are hashed at rest.
    user_id_key: Option<Vec<u8>>,
    retention_days: u32,
}

impl FeedbackLog {
    pub fn new(store: ItemStore, settings: &FeedbackSettings) -> Self {
        let user_id_key = settings.hash_user_ids.then(|| settings.user_id_salt.as_bytes().to_vec());
        Self { store, user_id_key, retention_days: settings.retention_days }
    }

    /// Returns the user id as stored: a keyed hash when hashing is on, the id itself otherwise.
    /// Reading a user's history hashes the requested id the same way.
    pub fn stored_user_id(&self, user_id: &str) -> String {
        match &self.user_id_key {
            None => user_id.to_string(),
            Some(key) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
                mac.update(user_id.as_bytes());
                format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
            }
        }
    }

    /// Stores every event in one transaction, or none when one names an unknown item.
    pub async fn record(&self, events: &[FeedbackEvent]) -> Result<(), FeedbackError> {
        let received_at = crate::catalog::unix_seconds();
        let stored: Vec<FeedbackEvent> =
            events.iter().map(|event| FeedbackEvent { user_id: event.user_id.as_deref().map(|id| self.stored_user_id(id)), ..event.clone() }).collect();
        match self.store.insert_feedback(&stored, received_at).await? {
            Some(index) => Err(FeedbackError::UnknownItem(UnknownItem { index, item_id: events[index].item_id.clone() })),
            None => Ok(()),
        }
    }

    /// Deletes events older than `feedback.retention_days`; returns how many.
    pub async fn apply_retention(&self, now: f64) -> Result<u64, FeedbackError> {
        if self.retention_days == 0 {
            return Ok(0);
        }
        let cutoff = now - f64::from(self.retention_days) * 86_400.0;
        Ok(self.store.delete_feedback_before(cutoff).await?)
    }

    pub async fn count(&self) -> Result<u64, FeedbackError> {
        Ok(self.store.count_feedback().await?)
    }

    /// Ids of the items a user has bought (events `purchase`).
    pub async fn purchased_items(&self, user_id: &str) -> Result<Vec<String>, FeedbackError> {
        Ok(self.store.purchased_item_ids(&self.stored_user_id(user_id)).await?)
    }

    /// Returns every stored event that carries a query, oldest first, for training.
    pub async fn events_with_query(&self) -> Result<Vec<FeedbackEvent>, FeedbackError> {
        Ok(self.store.feedback_with_query().await?)
    }

    /// Returns every event with a user id as history events (stored user id, item, time,
    /// query), oldest first, for training the history attention.
    pub async fn user_events(&self) -> Result<Vec<crate::train::HistoryEvent>, FeedbackError> {
        let rows = self.store.user_feedback().await?;
        Ok(rows.into_iter().map(|(user, item_id, time, query)| crate::train::HistoryEvent { user, item_id, time, query }).collect())
    }

    /// Returns the last `limit` distinct items a user acted on, most recent first.
    pub async fn recent_items(&self, user_id: &str, limit: usize) -> Result<Vec<String>, FeedbackError> {
        Ok(self.store.recent_item_ids(&self.stored_user_id(user_id), limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Item;

    async fn log(settings: FeedbackSettings) -> (tempfile::TempDir, FeedbackLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = ItemStore::open(&dir.path().join("catalog.db")).await.unwrap();
        store.upsert(&[Item { id: "a".into(), title: "Kettle".into(), text: "Kettle".into(), attributes: Default::default() }]).await.unwrap();
        (dir, FeedbackLog::new(store, &settings))
    }

    fn click(item_id: &str, occurred_at: f64) -> FeedbackEvent {
        FeedbackEvent { user_id: Some("shopper-1".into()), query: Some("kettle".into()), item_id: item_id.into(), event: EventKind::Click, value: 1.0, occurred_at }
    }

    #[tokio::test]
    async fn unknown_item_rejects_batch() {
        let (_dir, log) = log(FeedbackSettings::default()).await;
        let err = log.record(&[click("a", 1.0), click("missing", 1.0)]).await.unwrap_err();
        assert!(matches!(err, FeedbackError::UnknownItem(UnknownItem { index: 1, .. })), "{err}");
        assert_eq!(log.count().await.unwrap(), 0);
        log.record(&[click("a", 1.0)]).await.unwrap();
        assert_eq!(log.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn user_ids_stored_hashed() {
        let salted = FeedbackSettings { user_id_salt: "secret".into(), ..FeedbackSettings::default() };
        let (_dir, log) = log(salted).await;
        log.record(&[click("a", 1.0)]).await.unwrap();
        let stored = log.events_with_query().await.unwrap().remove(0).user_id.unwrap();
        assert!(stored.starts_with("hmac-sha256:"), "{stored}");
        assert!(!stored.contains("shopper-1"), "{stored}");
        assert_eq!(stored, log.stored_user_id("shopper-1"));

        let (_other_dir, other_salt) = self::log(FeedbackSettings { user_id_salt: "other".into(), ..FeedbackSettings::default() }).await;
        assert_ne!(other_salt.stored_user_id("shopper-1"), stored);
        let (_plain_dir, plain) = self::log(FeedbackSettings { hash_user_ids: false, ..FeedbackSettings::default() }).await;
        assert_eq!(plain.stored_user_id("shopper-1"), "shopper-1");
    }

    #[tokio::test]
    async fn recent_items_are_distinct_and_newest_first() {
        let (_dir, log) = log(FeedbackSettings::default()).await;
        let store = log.store.clone();
        for id in ["b", "c"] {
            store.upsert(&[Item { id: id.into(), title: id.into(), text: id.into(), attributes: Default::default() }]).await.unwrap();
        }
        log.record(&[click("a", 1.0), click("b", 2.0), click("a", 3.0), click("c", 4.0)]).await.unwrap();
        assert_eq!(log.recent_items("shopper-1", 10).await.unwrap(), vec!["c", "a", "b"]);
        assert_eq!(log.recent_items("shopper-1", 2).await.unwrap(), vec!["c", "a"]);
        assert!(log.recent_items("someone-else", 10).await.unwrap().is_empty());
        assert_eq!(log.user_events().await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn retention_deletes_old_events() {
        let (_dir, log) = log(FeedbackSettings { retention_days: 30, ..FeedbackSettings::default() }).await;
        let now = 1_800_000_000.0;
        log.record(&[click("a", now - 31.0 * 86_400.0), click("a", now - 29.0 * 86_400.0)]).await.unwrap();
        assert_eq!(log.apply_retention(now).await.unwrap(), 1);
        assert_eq!(log.count().await.unwrap(), 1);
    }
}
