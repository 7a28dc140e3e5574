//! The HTTP layer: routes, middleware, the OpenAPI document and the server loop.

mod error;
mod extract;
mod feedback;
mod handlers;
mod items;
mod middleware;
mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use tokio::sync::OwnedSemaphorePermit;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use handlers::OPENAPI_YAML;
pub use types::{Explanation, HealthResponse, ItemScore, ReadyResponse, RecommendRequest, RecommendResponse};

use crate::auth::ApiKeys;
use crate::config::Settings;
use crate::service::{Recommender, ServiceError};

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub recommender: Arc<Recommender>,
    /// Permits for requests in flight. A request that finds none gets 429.
    pub admission: Arc<Semaphore>,
    pub default_k: usize,
    pub request_timeout: Duration,
    pub max_batch_items: usize,
    pub max_batch_events: usize,
    pub retention_days: u32,
    pub api_keys: Arc<ApiKeys>,
    pub protect_reads: bool,
    pub body_limit_bytes: usize,
    pub batch_body_limit_bytes: usize,
}

impl AppState {
    pub fn new(recommender: Arc<Recommender>, settings: &Settings) -> Self {
        Self {
            recommender,
            admission: Arc::new(Semaphore::new(settings.batching.max_concurrent_requests)),
            default_k: settings.server.default_k,
            request_timeout: handlers::timeout_duration(settings.server.request_timeout_ms),
            max_batch_items: settings.catalog.max_batch_items,
            max_batch_events: settings.feedback.max_batch_events,
            retention_days: settings.feedback.retention_days,
            api_keys: Arc::new(ApiKeys::new(&settings.auth.api_keys)),
            protect_reads: settings.auth.protect_reads,
            body_limit_bytes: settings.server.body_limit_bytes,
            batch_body_limit_bytes: settings.server.batch_body_limit_bytes,
        }
    }

    /// Takes a permit for a request in flight, or returns the 429 error.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.admission.clone().try_acquire_owned().map_err(|_| ApiError::overloaded("concurrency_limit"))
    }

    /// Runs a service call within `server.request_timeout_ms`, or returns the 503 timeout error.
    pub(crate) async fn within_timeout<T>(&self, call: impl Future<Output = Result<T, ServiceError>>) -> Result<T, ServiceError> {
        tokio::time::timeout(self.request_timeout, call).await.map_err(|_| ServiceError::TimedOut(self.request_timeout))?
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "attnrec",
        description = "Recommends catalogue items for a shopper's free text. Errors share one shape: \
            `{\"error\": {\"code\", \"message\", \"field\"}}`.",
        license(name = "Apache-2.0")
    ),
    paths(handlers::recommend, items::put_item, items::post_items, items::delete_item, items::get_item,
        feedback::post_feedback, feedback::post_feedback_batch,
        handlers::health, handlers::ready, handlers::metrics, handlers::openapi),
    components(schemas(RecommendRequest, types::ExampleItem, types::WeightedItem, crate::filter::FilterSpec, crate::service::SearchMode, RecommendResponse, ItemScore, Explanation, types::HistoryWeight, crate::explain::WordWeight,
        items::ItemBody, items::BatchItem, items::ItemBatchBody, items::ItemWriteResponse, items::ItemBatchResponse, items::ItemResponse,
        crate::catalog::WriteStatus, feedback::FeedbackBody, feedback::FeedbackBatchBody, feedback::FeedbackResponse, crate::feedback::EventKind,
        HealthResponse, ReadyResponse, ErrorBody, ErrorDetail)),
    modifiers(&BearerKey),
    tags((name = "recommend", description = "Recommendations"),
        (name = "catalogue", description = "Items: add, replace, delete and read, searchable as soon as the response arrives"),
        (name = "feedback", description = "What shoppers did with items, the training data of the pooling head"),
        (name = "operations", description = "Health, readiness, metrics and this document"))
)]
pub struct ApiDoc;

/// Declares the `Authorization: Bearer` API key that the write endpoints require.
struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = document.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("A key from `auth.api_keys` (or ATTNREC_AUTH__API_KEYS). Required by the write endpoints, and by the read endpoints when `auth.protect_reads` is on.".into());
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// Generates the OpenAPI document from the code, as YAML.
pub fn openapi_yaml() -> String {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document.to_yaml().expect("the OpenAPI document serializes")
}

/// Builds the router with its middleware.
pub fn router(state: AppState, body_limit_bytes: usize) -> Router {
    let write = axum::middleware::from_fn_with_state(middleware::Access { keys: state.api_keys.clone(), required: true }, middleware::require_key);
    let read = axum::middleware::from_fn_with_state(middleware::Access { keys: state.api_keys.clone(), required: state.protect_reads }, middleware::require_key);
    let batch_limit = DefaultBodyLimit::max(state.batch_body_limit_bytes);
    Router::new()
        .route("/recommend", post(handlers::recommend).route_layer(read.clone()))
        .route(
            "/items/{id}",
            get(items::get_item).route_layer(read).merge(put(items::put_item).delete(items::delete_item).route_layer(write.clone())),
        )
        .route("/items/batch", post(items::post_items).layer(batch_limit).route_layer(write.clone()))
        .route("/feedback", post(feedback::post_feedback).route_layer(write.clone()))
        .route("/feedback/batch", post(feedback::post_feedback_batch).layer(batch_limit).route_layer(write))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.yaml", get(handlers::openapi))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(CatchPanicLayer::custom(handlers::panic_response))
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}

/// Serves until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_openapi_matches_code() {
        let generated = super::openapi_yaml();
        assert!(
            generated == super::OPENAPI_YAML,
            "openapi.yaml is out of date; regenerate it with `cargo run -- openapi > openapi.yaml`"
        );
    }
}
