//! OTLP trace export: `attnrec serve` with `log.otlp_endpoint` set posts its request spans, in
//! the caller's trace, to a collector endpoint on loopback.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{ChildServer, Fixture};
use reqwest::Method;

/// The bodies and content types posted to the collector's /v1/traces.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Starts an HTTP endpoint that accepts OTLP/HTTP trace exports and keeps them.
async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let content_type = headers.get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
                sink.lock().unwrap().push((content_type, body.to_vec()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/v1/traces"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector() {
    let (endpoint, received) = collector().await;
    let fixture = Fixture::new();
    fixture.index().await;
    let server = ChildServer::start(&fixture, &[("ATTNREC_LOG__OTLP_ENDPOINT", &endpoint)]);
    server.wait_ready().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = server
        .client
        .post(server.url("/recommend"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"query": "red kettle"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    server.call(Method::GET, "/health", None).await;

    // Shutdown flushes the spans still in the batch.
    server.terminate();
    assert!(server.wait().success());

    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "the collector received no export");
    assert!(received.iter().all(|(content_type, _)| content_type == "application/x-protobuf"), "{:?}", received.iter().map(|(kind, _)| kind).collect::<Vec<_>>());
    let exported: Vec<u8> = received.iter().flat_map(|(_, body)| body.clone()).collect();
    let contains = |needle: &[u8]| exported.windows(needle.len()).any(|window| window == needle);
    assert!(contains(b"request"), "no request span was exported");
    assert!(contains(b"attnrec"), "the service name is missing");
    let trace_bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert!(contains(&trace_bytes), "the request span is not in the caller's trace");
    assert!(!contains(b"red kettle"), "query text was exported");
}
