//! The HTTP layer: routes, middleware, the OpenAPI document and the server loop.

mod error;
mod extract;
mod handlers;
mod middleware;
mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use handlers::OPENAPI_YAML;
pub use types::{Explanation, HealthResponse, ItemScore, ReadyResponse, RecommendRequest, RecommendResponse};

use crate::config::Settings;
use crate::service::Recommender;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub recommender: Arc<Recommender>,
    /// Permits for requests in flight. A request that finds none gets 429.
    pub admission: Arc<Semaphore>,
    pub default_k: usize,
    pub request_timeout: Duration,
}

impl AppState {
    pub fn new(recommender: Arc<Recommender>, settings: &Settings) -> Self {
        Self {
            recommender,
            admission: Arc::new(Semaphore::new(settings.batching.max_concurrent_requests)),
            default_k: settings.server.default_k,
            request_timeout: handlers::timeout_duration(settings.server.request_timeout_ms),
        }
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
    paths(handlers::recommend, handlers::health, handlers::ready, handlers::metrics, handlers::openapi),
    components(schemas(RecommendRequest, RecommendResponse, ItemScore, Explanation, crate::explain::WordWeight,
        HealthResponse, ReadyResponse, ErrorBody, ErrorDetail)),
    tags((name = "recommend", description = "Recommendations"), (name = "operations", description = "Health, readiness, metrics and this document"))
)]
pub struct ApiDoc;

/// Generates the OpenAPI document from the code, as YAML.
pub fn openapi_yaml() -> String {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document.to_yaml().expect("the OpenAPI document serializes")
}

/// Builds the router with its middleware.
pub fn router(state: AppState, body_limit_bytes: usize) -> Router {
    Router::new()
        .route("/recommend", post(handlers::recommend))
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
