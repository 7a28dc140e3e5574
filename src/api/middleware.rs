//! Request ids, one log line per request and the HTTP metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::METRICS;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Maximum length of a client-supplied request id. Longer or non-printable ids are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Takes the request id from `X-Request-Id` (or makes one), runs the request inside a span
/// that carries it, returns it in the response, and records the route's count and latency.
/// The query text is never logged here: shopper text is personal data.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    // Methods outside the standard set share one label, so clients cannot create series.
    let method = match *request.method() {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD | Method::OPTIONS | Method::PATCH => request.method().to_string(),
        _ => "other".to_string(),
    };

    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    crate::telemetry::continue_trace(&span, request.headers());
    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let elapsed = started.elapsed().as_secs_f64();
    let labels = [route.as_str(), method.as_str(), status.as_str()];
    METRICS.http_requests.with_label_values(&labels).inc();
    METRICS.http_duration.with_label_values(&labels).observe(elapsed);
    span.in_scope(|| tracing::info!(status = status.as_u16(), latency_ms = elapsed * 1000.0, "request finished"));

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Access rule of an endpoint.
#[derive(Clone)]
pub struct Access {
    pub keys: std::sync::Arc<crate::auth::ApiKeys>,
    /// Whether this endpoint needs a key: always for writes, by `auth.protect_reads` for reads.
    pub required: bool,
}

/// Refuses a request without a configured API key in `Authorization: Bearer`. The header's
/// value is never logged.
pub async fn require_key(axum::extract::State(access): axum::extract::State<Access>, request: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    use crate::auth::KeyCheck;

    if !access.required {
        return next.run(request).await;
    }
    let header = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    match access.keys.check(header) {
        KeyCheck::Accepted => next.run(request).await,
        KeyCheck::NoKeysConfigured => super::error::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "writes_disabled",
            "this endpoint needs an API key and none is configured; set auth.api_keys or ATTNREC_AUTH__API_KEYS",
        )
        .into_response(),
        KeyCheck::Missing | KeyCheck::Rejected => {
            METRICS.rejected.with_label_values(&["unauthorized"]).inc();
            super::error::ApiError::unauthorized().into_response()
        }
    }
}
