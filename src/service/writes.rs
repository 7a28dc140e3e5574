//! Catalogue writes and feedback: validation of what clients send, and the write path that
//! embeds items, commits them to the database and updates the index before the response.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Recommender, ServiceError};
use crate::batcher::TextKind;
use crate::catalog::{unix_seconds, Item, ItemRecord, WriteOutcome};
use crate::feedback::{EventKind, FeedbackError, FeedbackEvent};
use crate::metrics::METRICS;

/// Longest accepted item or user id.
pub const MAX_ID_CHARS: usize = 128;
/// Attribute names per item, and values per attribute list.
pub const MAX_ATTRIBUTES: usize = 64;
/// Texts embedded at once while a batch is written or the index is repaired.
const EMBED_CHUNK: usize = 32;
/// Largest accepted feedback value, in either direction.
const MAX_FEEDBACK_VALUE: f64 = 1e6;
/// How far in the future a feedback timestamp may be (clock skew), in seconds.
const MAX_CLOCK_SKEW_SECONDS: f64 = 86_400.0;

/// An item as a client sends it.
#[derive(Debug, Clone)]
pub struct ItemInput {
    pub title: String,
    /// The embedded text; the title when absent.
    pub text: Option<String>,
    pub attributes: Map<String, Value>,
}

/// A feedback event as a client sends it.
#[derive(Debug, Clone)]
pub struct FeedbackInput {
    pub user_id: Option<String>,
    pub query: Option<String>,
    pub item_id: String,
    pub event: EventKind,
    pub value: Option<f64>,
    /// Unix seconds or an RFC 3339 date-time; now when absent.
    pub timestamp: Option<Value>,
}

/// Checks an item id: 1 to 128 characters, letters, digits and `. _ - : ~ @ + =`.
pub fn validate_id(id: &str, field: &str) -> Result<(), ServiceError> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(ServiceError::invalid(field, format!("must be 1 to {MAX_ID_CHARS} characters long")));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-:~@+=".contains(*c))) {
        return Err(ServiceError::invalid(
            field,
            format!("contains {bad:?}; ids may use letters, digits and . _ - : ~ @ + = only"),
        ));
    }
    Ok(())
}

/// Checks a free-text field: not blank, at most `max_chars`, no control characters other
/// than tab and line breaks.
pub(super) fn validate_text(text: &str, field: &str, max_chars: usize, required: bool) -> Result<(), ServiceError> {
    if required && text.trim().is_empty() {
        return Err(ServiceError::invalid(field, "must contain at least one non-whitespace character"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(ServiceError::invalid(field, format!("is {chars} characters long; the maximum is {max_chars}")));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(ServiceError::invalid(field, format!("contains the control character {bad:?}; remove it")));
    }
    Ok(())
}

/// Checks attribute values: strings, finite numbers, booleans, null, or lists of those.
fn validate_attributes(attributes: &Map<String, Value>, field: &str, max_chars: usize) -> Result<(), ServiceError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(ServiceError::invalid(field, format!("has {} names; the maximum is {MAX_ATTRIBUTES}", attributes.len())));
    }
    for (name, value) in attributes {
        let at = format!("{field}.{name}");
        validate_text(name, field, MAX_ID_CHARS, true)?;
        let scalar = |value: &Value, at: &str| match value {
            Value::String(text) => validate_text(text, at, max_chars, false),
            Value::Number(_) | Value::Bool(_) | Value::Null => Ok(()),
            _ => Err(ServiceError::invalid(at, "must be a string, number, boolean, null or a list of those")),
        };
        match value {
            Value::Array(values) if values.len() > MAX_ATTRIBUTES => {
                return Err(ServiceError::invalid(at, format!("has {} values; the maximum is {MAX_ATTRIBUTES}", values.len())))
            }
            Value::Array(values) => values.iter().enumerate().try_for_each(|(position, value)| scalar(value, &format!("{at}[{position}]")))?,
            value => scalar(value, &at)?,
        }
    }
    Ok(())
}

/// Turns a client's item into a catalogue item. `prefix` locates it in the request body
/// (`""` for a single item, `"items[3]."` in a batch), for error messages.
pub fn validate_item(id: &str, input: ItemInput, prefix: &str, max_text_chars: usize) -> Result<Item, ServiceError> {
    validate_id(id, &format!("{prefix}id"))?;
    validate_text(&input.title, &format!("{prefix}title"), max_text_chars, true)?;
    if let Some(text) = &input.text {
        validate_text(text, &format!("{prefix}text"), max_text_chars, true)?;
    }
    validate_attributes(&input.attributes, &format!("{prefix}attributes"), max_text_chars)?;
    let text = input.text.unwrap_or_else(|| input.title.clone());
    Ok(Item { id: id.to_string(), title: input.title, text, attributes: input.attributes })
}

/// Turns a client's feedback event into a stored event, with `now` in unix seconds. Events
/// older than `retention_days` (0: no limit) are rejected, since retention would delete them.
pub fn validate_feedback(input: FeedbackInput, prefix: &str, max_query_chars: usize, retention_days: u32, now: f64) -> Result<FeedbackEvent, ServiceError> {
    validate_id(&input.item_id, &format!("{prefix}item_id"))?;
    if let Some(user_id) = &input.user_id {
        validate_text(user_id, &format!("{prefix}user_id"), MAX_ID_CHARS, true)?;
    }
    if let Some(query) = &input.query {
        validate_text(query, &format!("{prefix}query"), max_query_chars, false)?;
    }
    let value = input.value.unwrap_or(1.0);
    if !value.is_finite() || value.abs() > MAX_FEEDBACK_VALUE {
        return Err(ServiceError::invalid(format!("{prefix}value"), format!("must be a finite number from -{MAX_FEEDBACK_VALUE} to {MAX_FEEDBACK_VALUE}")));
    }
    let field = format!("{prefix}timestamp");
    let occurred_at = match input.timestamp {
        None | Some(Value::Null) => now,
        Some(Value::Number(number)) => number.as_f64().filter(|seconds| seconds.is_finite()).ok_or_else(|| ServiceError::invalid(&field, "must be a finite number"))?,
        Some(Value::String(text)) => {
            let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map_err(|err| ServiceError::invalid(&field, format!("is not an RFC 3339 date-time such as 2026-12-05T10:00:00Z: {err}")))?;
            parsed.unix_timestamp_nanos() as f64 / 1e9
        }
        Some(_) => return Err(ServiceError::invalid(&field, "must be unix seconds (a number) or an RFC 3339 date-time (a string)")),
    };
    if occurred_at < 0.0 || occurred_at > now + MAX_CLOCK_SKEW_SECONDS {
        return Err(ServiceError::invalid(field, "must lie between 1970 and one day from now"));
    }
    if retention_days > 0 && occurred_at < now - f64::from(retention_days) * 86_400.0 {
        return Err(ServiceError::invalid(field, format!("is older than feedback.retention_days ({retention_days} days), so it would be deleted at once")));
    }
    Ok(FeedbackEvent { user_id: input.user_id, query: input.query, item_id: input.item_id, event: input.event, value, occurred_at })
}

impl Recommender {
    pub fn max_text_chars(&self) -> usize {
        self.max_text_chars
    }

    pub fn max_query_chars(&self) -> usize {
        self.max_query_chars
    }

    /// Embeds, stores and indexes items; when it returns, they are searchable. Ids must be
    /// distinct.
    pub async fn upsert_items(self: &Arc<Self>, items: Vec<Item>) -> Result<Vec<WriteOutcome>, ServiceError> {
        if !self.engine.is_ready() {
            return Err(ServiceError::NotReady);
        }
        let vectors = self.embed_texts(items.iter().map(|item| item.text.clone()).collect()).await?;

        // The commit and the index update run as their own task: a client that disconnects
        // or times out cannot stop them between the database and the index.
        let this = self.clone();
        let outcomes = tokio::spawn(async move {
            let mut applied = this.writer.lock().await;
            let outcomes = this.store.upsert_embedded(&items, &vectors).await?;
            this.update_side_tables(&outcomes, &items)?;
            let index = this.index.clone();
            let changes: Vec<(Option<u64>, Option<u64>, Vec<f32>)> =
                outcomes.iter().zip(vectors).map(|(outcome, vector)| (outcome.removed_key, outcome.added_key, vector)).collect();
            tokio::task::spawn_blocking(move || {
                for (removed, added, vector) in changes {
                    if let Some(key) = removed {
                        index.remove(key)?;
                    }
                    if let Some(key) = added {
                        index.add(key, &vector)?;
                    }
                }
                Ok::<_, ServiceError>(())
            })
            .await
            .map_err(|err| ServiceError::Internal(format!("index update failed: {err}")))??;
            // With a shared database the follower advances the applied sequence, because other
            // replicas' changes may come before this one.
            if !this.store.is_shared() {
                *applied = outcomes.iter().map(|outcome| outcome.seq).max().unwrap_or(*applied).max(*applied);
            }
            Ok::<_, ServiceError>(outcomes)
        })
        .await
        .map_err(|err| ServiceError::Internal(format!("write task failed: {err}")))??;

        METRICS.items_written.with_label_values(&["upsert"]).inc_by(outcomes.len() as u64);
        METRICS.index_items.set(self.index.len() as i64);
        self.rebuild_when_needed();
        Ok(outcomes)
    }

    /// Deletes an item from the database and the index; `NotFound` when no item has the id.
    pub async fn delete_item(self: &Arc<Self>, id: String) -> Result<WriteOutcome, ServiceError> {
        let this = self.clone();
        let outcome = tokio::spawn(async move {
            let mut applied = this.writer.lock().await;
            let Some(outcome) = this.store.delete(&id).await? else {
                return Err(ServiceError::NotFound { what: format!("item {id}") });
            };
            this.update_side_tables(std::slice::from_ref(&outcome), &[])?;
            if let Some(key) = outcome.removed_key {
                let index = this.index.clone();
                tokio::task::spawn_blocking(move || index.remove(key))
                    .await
                    .map_err(|err| ServiceError::Internal(format!("index update failed: {err}")))??;
            }
            if !this.store.is_shared() {
                *applied = outcome.seq.max(*applied);
            }
            Ok(outcome)
        })
        .await
        .map_err(|err| ServiceError::Internal(format!("write task failed: {err}")))??;

        METRICS.items_written.with_label_values(&["delete"]).inc();
        METRICS.index_items.set(self.index.len() as i64);
        self.rebuild_when_needed();
        Ok(outcome)
    }

    pub async fn get_item(&self, id: &str) -> Result<ItemRecord, ServiceError> {
        self.store.get_item(id).await?.ok_or_else(|| ServiceError::NotFound { what: format!("item {id}") })
    }

    /// Stores feedback events, all or none. An unknown item id is the caller's mistake and
    /// names the event's position with `field_of(index)`.
    pub async fn record_feedback(&self, events: Vec<FeedbackEvent>, field_of: impl Fn(usize) -> String) -> Result<(), ServiceError> {
        let count = events.len() as u64;
        // As with items, the transaction runs to its end even if the client goes away.
        let log = self.feedback.clone();
        let result = tokio::spawn(async move { log.record(&events).await }).await.map_err(|err| ServiceError::Internal(format!("feedback task failed: {err}")))?;
        match result {
            Ok(()) => {
                METRICS.feedback_events.inc_by(count);
                Ok(())
            }
            Err(FeedbackError::UnknownItem(unknown)) => Err(ServiceError::invalid(
                field_of(unknown.index),
                format!("item {} is not in the catalogue; add it with PUT /items/{{id}} first", unknown.item_id),
            )),
            Err(other) => Err(other.into()),
        }
    }

    /// Brings the attribute table and the BM25 index in line with committed writes. `items`
    /// are the upserted items in the order of `outcomes`, empty for a delete.
    fn update_side_tables(&self, outcomes: &[WriteOutcome], items: &[Item]) -> Result<(), ServiceError> {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for (position, outcome) in outcomes.iter().enumerate() {
            if let Some(key) = outcome.removed_key {
                self.attributes.remove(key);
                removed.push(key);
            }
            if let Some(item) = items.get(position) {
                self.attributes.set(outcome.key, item.attributes.clone());
                if let Some(key) = outcome.added_key {
                    added.push((key, item.text.as_str()));
                }
            }
        }
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.lexical.apply(&added, &removed).map_err(|err| ServiceError::Internal(err.to_string()))
    }

    pub fn now() -> f64 {
        unix_seconds() as f64
    }

    /// Embeds item texts through the batching engine, in order.
    pub(super) async fn embed_texts(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ServiceError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(EMBED_CHUNK) {
            let mut tasks = tokio::task::JoinSet::new();
            for (position, text) in chunk.iter().enumerate() {
                let engine = self.engine.clone();
                let text = text.clone();
                tasks.spawn(async move { (position, engine.embed(text, TextKind::Item).await) });
            }
            let mut chunk_vectors = vec![Vec::new(); chunk.len()];
            while let Some(done) = tasks.join_next().await {
                let (position, embedding) = done.map_err(|err| ServiceError::Internal(format!("embedding task failed: {err}")))?;
                chunk_vectors[position] = embedding?.vector;
            }
            vectors.extend(chunk_vectors);
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(title: &str) -> ItemInput {
        ItemInput { title: title.into(), text: None, attributes: Map::new() }
    }

    fn field_of(err: ServiceError) -> String {
        match err {
            ServiceError::InvalidInput { field, .. } => field,
            other => panic!("expected invalid input, got {other}"),
        }
    }

    #[test]
    fn invalid_ids_rejected() {
        for bad in ["a/b", "a b", "a\u{0}b", "", &"x".repeat(129), "é"] {
            assert_eq!(field_of(validate_id(bad, "id").unwrap_err()), "id", "{bad:?}");
        }
        validate_id("SKU-123_a.b:c~d@e+f=g", "id").unwrap();
    }

    #[test]
    fn item_errors_name_field() {
        assert_eq!(field_of(validate_item("a", input("  "), "items[2].", 100).unwrap_err()), "items[2].title");
        assert_eq!(field_of(validate_item("a", input(&"x".repeat(101)), "", 100).unwrap_err()), "title");
        let nested = ItemInput { attributes: serde_json::json!({"size": {"eu": 42}}).as_object().unwrap().clone(), ..input("Shoe") };
        assert_eq!(field_of(validate_item("a", nested, "", 100).unwrap_err()), "attributes.size");
        let control = ItemInput { text: Some("bad\u{7}text".into()), ..input("Shoe") };
        assert_eq!(field_of(validate_item("a", control, "", 100).unwrap_err()), "text");
    }

    #[test]
    fn text_defaults_to_title() {
        let item = validate_item("a", input("Nike running shoes"), "", 100).unwrap();
        assert_eq!(item.text, "Nike running shoes");
    }

    #[test]
    fn feedback_timestamp_formats() {
        let event = |timestamp: Option<Value>| FeedbackInput {
            user_id: Some("u1".into()),
            query: Some("kettle".into()),
            item_id: "a".into(),
            event: EventKind::Click,
            value: None,
            timestamp,
        };
        let now = 1_800_000_000.0;
        assert_eq!(validate_feedback(event(None), "", 100, 0, now).unwrap().occurred_at, now);
        assert_eq!(validate_feedback(event(Some(serde_json::json!(1_700_000_000))), "", 100, 0, now).unwrap().occurred_at, 1_700_000_000.0);
        let parsed = validate_feedback(event(Some(serde_json::json!("2023-11-14T22:13:20Z"))), "", 100, 0, now).unwrap();
        assert_eq!(parsed.occurred_at, 1_700_000_000.0);
        assert_eq!(field_of(validate_feedback(event(Some(serde_json::json!("yesterday"))), "", 100, 0, now).unwrap_err()), "timestamp");
        assert_eq!(field_of(validate_feedback(event(Some(serde_json::json!(now * 2.0))), "events[1].", 100, 0, now).unwrap_err()), "events[1].timestamp");
        let huge = FeedbackInput { value: Some(1e300), ..event(None) };
        assert_eq!(field_of(validate_feedback(huge, "", 100, 0, now).unwrap_err()), "value");
        let expired = event(Some(serde_json::json!(now - 40.0 * 86_400.0)));
        assert_eq!(field_of(validate_feedback(expired, "", 100, 30, now).unwrap_err()), "timestamp");
    }
}
