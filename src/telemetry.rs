//! Log output (human-readable text or JSON lines, filtered by RUST_LOG or `log.level`) and,
//! when `log.otlp_endpoint` is set, export of the same spans as OpenTelemetry traces over
//! OTLP/HTTP.

use std::io::IsTerminal;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

/// Seconds an export of a batch of spans may take before it is dropped.
const EXPORT_TIMEOUT_SECONDS: u64 = 5;

/// Flushes and stops trace export when dropped; keep it alive for the life of the program.
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("attnrec: flushing traces to the OTLP endpoint failed: {err}");
            }
        }
    }
}

/// Installs the global subscriber. Logs go to stderr so that command output on stdout stays
/// clean for pipes. Calling it twice is harmless (the second call does nothing).
pub fn init(settings: &LogSettings) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let ansi = std::io::stderr().is_terminal();
    let output = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(std::io::stderr).boxed(),
    };

    let (provider, traces) = match trace_provider(settings) {
        Ok(Some(provider)) => {
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("attnrec"));
            (Some(provider), Some(layer))
        }
        Ok(None) => (None, None),
        Err(message) => {
            eprintln!("attnrec: trace export is off: {message}");
            (None, None)
        }
    };
    let _ = tracing_subscriber::registry().with(filter).with(output).with(traces).try_init();
    if provider.is_some() {
        tracing::info!(endpoint = %settings.otlp_endpoint, sample_ratio = settings.otlp_sample_ratio, "exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// Builds the span exporter and provider when an endpoint is configured.
fn trace_provider(settings: &LogSettings) -> Result<Option<SdkTracerProvider>, String> {
    if settings.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.otlp_endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(EXPORT_TIMEOUT_SECONDS))
        .with_headers(Default::default())
        .build()
        .map_err(|err| format!("the OTLP exporter for {} failed to start: {err}", settings.otlp_endpoint))?;
    // Incoming `traceparent` headers continue the caller's trace.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.otlp_sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("attnrec").build();
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_sampler(sampler).with_resource(resource).build()))
}

/// Reads W3C trace context (`traceparent`, `tracestate`) from request headers.
pub struct HeaderContext<'a>(pub &'a axum::http::HeaderMap);

impl Extractor for HeaderContext<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Makes `span` a child of the trace named in the request headers, when there is one and
/// trace export is on.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderContext(headers)));
    let _ = span.set_parent(parent);
}
