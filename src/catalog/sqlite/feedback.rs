//! SQLite queries of the feedback log.

use super::SqliteRepository;
use crate::catalog::repository::FeedbackRepository;
use crate::catalog::CatalogError;
use crate::catalog::rows::{feedback_event, FeedbackRow};
use crate::feedback::FeedbackEvent;

impl FeedbackRepository for SqliteRepository {
    async fn insert_feedback(&self, events: &[FeedbackEvent], received_at: i64) -> Result<Option<usize>, CatalogError> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (index, event) in events.iter().enumerate() {
            let known: Option<i64> = sqlx::query_scalar("SELECT key FROM items WHERE id = ?").bind(&event.item_id).fetch_optional(&mut *transaction).await?;
            if known.is_none() {
                return Ok(Some(index));
            }
            sqlx::query(
                "INSERT INTO feedback (user_id, query, item_id, event, value, occurred_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&event.user_id)
            .bind(&event.query)
            .bind(&event.item_id)
            .bind(event.event.as_str())
            .bind(event.value)
            .bind(event.occurred_at)
            .bind(received_at)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(None)
    }

    async fn delete_feedback_before(&self, cutoff: f64) -> Result<u64, CatalogError> {
        let done = sqlx::query("DELETE FROM feedback WHERE occurred_at < ?").bind(cutoff).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn count_feedback(&self) -> Result<u64, CatalogError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM feedback").fetch_one(&self.pool).await?;
        Ok(count as u64)
    }

    async fn purchased_item_ids(&self, stored_user_id: &str) -> Result<Vec<String>, CatalogError> {
        let ids = sqlx::query_scalar("SELECT DISTINCT item_id FROM feedback WHERE user_id = ? AND event = 'purchase'")
            .bind(stored_user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }

    async fn feedback_with_query(&self) -> Result<Vec<FeedbackEvent>, CatalogError> {
        let sql = "SELECT user_id, query, item_id, event, value, occurred_at FROM feedback WHERE query IS NOT NULL AND query != '' ORDER BY occurred_at, id";
        let rows: Vec<FeedbackRow> = sqlx::query_as(sql).fetch_all(&self.pool).await?;
        rows.into_iter().map(feedback_event).collect()
    }

    async fn user_feedback(&self) -> Result<Vec<(String, String, f64, Option<String>)>, CatalogError> {
        let sql = "SELECT user_id, item_id, occurred_at, query FROM feedback WHERE user_id IS NOT NULL ORDER BY occurred_at, id";
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }

    async fn recent_item_ids(&self, stored_user_id: &str, limit: usize) -> Result<Vec<String>, CatalogError> {
        let sql = "SELECT item_id FROM feedback WHERE user_id = ? GROUP BY item_id ORDER BY MAX(occurred_at) DESC, MAX(id) DESC LIMIT ?";
        Ok(sqlx::query_scalar(sql).bind(stored_user_id).bind(limit as i64).fetch_all(&self.pool).await?)
    }
}
