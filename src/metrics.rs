//! Prometheus metrics, registered once per process and rendered by `GET /metrics`.

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Returns the buckets of the replication delay in seconds, 0.1 s apart between 0.1 and 1 s,
/// so a p99 can be compared with a one-second target.
fn replication_buckets() -> Vec<f64> {
    vec![0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0, 5.0, 10.0]
}

/// Latency buckets from 0.5 ms to about 16 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
}

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub batch_size: Histogram,
    pub batch_padded_tokens: Histogram,
    pub forward_seconds: Histogram,
    pub tokenize_seconds: Histogram,
    pub queue_wait_seconds: Histogram,
    pub search_seconds: Histogram,
    pub queue_depth: IntGauge,
    pub queue_depth_observed: Histogram,
    pub rejected: IntCounterVec,
    pub index_items: IntGauge,
    pub items_written: IntCounterVec,
    pub feedback_events: IntCounter,
    pub index_rebuilds: IntCounter,
    pub snapshot_seconds: Histogram,
    pub replication_lag_changes: IntGauge,
    pub replication_lag_seconds: Gauge,
    pub replication_delay_seconds: Histogram,
    pub replication_applied_seq: IntGauge,
    pub replication_errors: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid counter");
    registry.register(Box::new(counter.clone())).expect("metric registered once");
    counter
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid gauge");
    registry.register(Box::new(gauge.clone())).expect("metric registered once");
    gauge
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::new(name, help).expect("valid gauge");
    registry.register(Box::new(gauge.clone())).expect("metric registered once");
    gauge
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram");
    registry.register(Box::new(histogram.clone())).expect("metric registered once");
    histogram
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();

        let http_requests = IntCounterVec::new(
            Opts::new("attnrec_http_requests_total", "HTTP requests by route, method and status code"),
            &["route", "method", "status"],
        )
        .expect("valid counter");
        registry.register(Box::new(http_requests.clone())).expect("metric registered once");

        let http_duration = HistogramVec::new(
            HistogramOpts::new("attnrec_http_request_duration_seconds", "HTTP request latency by route, method and status code")
                .buckets(latency_buckets()),
            &["route", "method", "status"],
        )
        .expect("valid histogram");
        registry.register(Box::new(http_duration.clone())).expect("metric registered once");

        let rejected = IntCounterVec::new(
            Opts::new("attnrec_rejected_requests_total", "Requests refused before encoding, by reason"),
            &["reason"],
        )
        .expect("valid counter");
        registry.register(Box::new(rejected.clone())).expect("metric registered once");

        let queue_depth = IntGauge::new("attnrec_encoder_queue_depth", "Texts waiting for a forward pass").expect("valid gauge");
        registry.register(Box::new(queue_depth.clone())).expect("metric registered once");
        let index_items = IntGauge::new("attnrec_index_items", "Vectors in the search index").expect("valid gauge");
        registry.register(Box::new(index_items.clone())).expect("metric registered once");

        let items_written = IntCounterVec::new(Opts::new("attnrec_items_written_total", "Catalogue items written through the API, by operation"), &["op"])
            .expect("valid counter");
        registry.register(Box::new(items_written.clone())).expect("metric registered once");

        let sizes = exponential_buckets(1.0, 2.0, 10).expect("valid buckets");
        let tokens = exponential_buckets(16.0, 2.0, 12).expect("valid buckets");
        Self {
            batch_size: histogram(&registry, "attnrec_encoder_batch_size", "Texts per forward pass", sizes.clone()),
            batch_padded_tokens: histogram(
                &registry,
                "attnrec_encoder_batch_padded_tokens",
                "Padded tokens per forward pass (texts times the longest text)",
                tokens,
            ),
            forward_seconds: histogram(&registry, "attnrec_encoder_forward_seconds", "Time of one forward pass and pooling", latency_buckets()),
            tokenize_seconds: histogram(&registry, "attnrec_tokenize_seconds", "Time to tokenize one text", latency_buckets()),
            queue_wait_seconds: histogram(
                &registry,
                "attnrec_queue_wait_seconds",
                "Time a text waited between tokenization and its forward pass",
                latency_buckets(),
            ),
            search_seconds: histogram(&registry, "attnrec_search_seconds", "Time of one index search", latency_buckets()),
            queue_depth_observed: histogram(
                &registry,
                "attnrec_encoder_queue_depth_observed",
                "Texts waiting when a batch is formed",
                sizes,
            ),
            feedback_events: counter(&registry, "attnrec_feedback_events_total", "Feedback events stored"),
            index_rebuilds: counter(&registry, "attnrec_index_rebuilds_total", "Background rebuilds of the index after removals"),
            snapshot_seconds: histogram(&registry, "attnrec_snapshot_seconds", "Time to save an index snapshot", latency_buckets()),
            replication_lag_changes: int_gauge(&registry, "attnrec_replication_lag_changes", "Changes in the shared change log that this replica has not applied yet"),
            replication_lag_seconds: gauge(
                &registry,
                "attnrec_replication_lag_seconds",
                "Age of the oldest change in the shared change log that this replica has not applied yet (0 when caught up)",
            ),
            replication_delay_seconds: histogram(
                &registry,
                "attnrec_replication_delay_seconds",
                "Time from a change's commit to its application on this replica",
                replication_buckets(),
            ),
            replication_applied_seq: int_gauge(&registry, "attnrec_replication_applied_seq", "Sequence number of the last change this replica applied"),
            replication_errors: counter(&registry, "attnrec_replication_errors_total", "Failed passes over the shared change log"),
            items_written,
            registry,
            http_requests,
            http_duration,
            queue_depth,
            rejected,
            index_items,
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("Prometheus text is UTF-8")
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
