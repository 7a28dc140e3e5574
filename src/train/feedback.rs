//! Training data from the feedback log: each (query, item) pair that shoppers acted on
//! becomes a judgment graded by the strongest thing they did.

use std::collections::HashMap;

use super::TrainingData;
use crate::catalog::ItemStore;
use crate::config::Settings;
use crate::eval::Judgments;
use crate::feedback::{EventKind, FeedbackEvent, FeedbackLog};
use crate::service::ServiceError;

/// Returns the grade of one event: a click 1, an add-to-cart 2, a purchase 3, a rating its value.
pub fn event_grade(event: &FeedbackEvent) -> f64 {
    match event.event {
        EventKind::Click => 1.0,
        EventKind::AddToCart => 2.0,
        EventKind::Purchase => 3.0,
        EventKind::Rating => event.value,
    }
}

/// Reads the data directory's items and turns its feedback events that carry a query into
/// judgments. Pairs whose best grade is not positive (low ratings) are left out.
pub async fn feedback_training_data(settings: &Settings) -> Result<TrainingData, ServiceError> {
    let store = ItemStore::connect(&settings.storage, &settings.data_dir).await?;
    let items = store.all_items().await?;
    let events = FeedbackLog::new(store.clone(), &settings.feedback).events_with_query().await?;

    let mut order: Vec<String> = Vec::new();
    let mut grades: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for event in &events {
        let query = event.query.clone().unwrap_or_default();
        let per_item = grades.entry(query.clone()).or_insert_with(|| {
            order.push(query);
            HashMap::new()
        });
        let grade = per_item.entry(event.item_id.clone()).or_insert(f64::NEG_INFINITY);
        *grade = grade.max(event_grade(event));
    }
    let queries = order
        .into_iter()
        .filter_map(|query| {
            let judged: HashMap<String, f64> = grades.remove(&query)?.into_iter().filter(|(_, grade)| *grade > 0.0).collect();
            (!judged.is_empty()).then_some((query, judged))
        })
        .collect();
    tracing::info!(events = events.len(), items = items.len(), "training data read from the feedback log");
    Ok(TrainingData {
        items,
        judgments: Judgments { queries },
        irrelevant_grade: Some(0.0),
        source: format!("the feedback log in {}", settings.data_dir.display()),
    })
}
