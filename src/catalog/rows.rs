//! Row shapes that both backends read with `query_as`, and their conversion into catalogue and
//! feedback types, so the two backends differ only in SQL.

use super::{CatalogError, Change, ChangeOp, ItemRecord};
use crate::feedback::{EventKind, FeedbackEvent};

/// `SELECT key, id, title, text, attributes, seq, updated_at FROM items`.
pub(super) type ItemRecordRow = (i64, String, String, String, String, i64, i64);

/// `SELECT seq, item_key, op, changed_at FROM changes`, with `changed_at` as a float.
pub(super) type ChangeRow = (i64, i64, String, f64);

/// `SELECT user_id, query, item_id, event, value, occurred_at FROM feedback`.
pub(super) type FeedbackRow = (Option<String>, Option<String>, String, String, f64, f64);

pub(super) fn item_record((key, id, title, text, attributes, seq, updated_at): ItemRecordRow) -> Result<ItemRecord, CatalogError> {
    let attributes = match serde_json::from_str(&attributes) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(CatalogError::Index(format!("item {id} has malformed stored attributes"))),
    };
    Ok(ItemRecord { key: key as u64, id, title, text, attributes, seq: seq as u64, updated_at })
}

pub(super) fn change((seq, key, op, changed_at): ChangeRow) -> Result<Change, CatalogError> {
    Ok(Change { seq: seq as u64, key: key as u64, op: ChangeOp::parse(&op)?, changed_at })
}

pub(super) fn feedback_event((user_id, query, item_id, event, value, occurred_at): FeedbackRow) -> Result<FeedbackEvent, CatalogError> {
    let event = EventKind::parse(&event).ok_or_else(|| CatalogError::Index(format!("unknown feedback event {event:?}")))?;
    Ok(FeedbackEvent { user_id, query, item_id, event, value, occurred_at })
}
