//! OTLP sink: sends each batch, one request per resource, through
//! `opentelemetry-otlp` (gRPC via tonic, HTTP via reqwest).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{
    Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::trace::SpanExporter as _;
use tracing::{info, warn};

use super::config::{OtlpConfig, OtlpProtocol};
use super::convert::{group_by_resource, instrumentation_scope, to_sdk_resource, to_span_data};
use super::queue::{BatchSink, after};
use super::ratelimit::{LOG_INTERVAL, RateLimitedLog};
use super::{ExportError, ExportMetrics};
use crate::span::model::Span;

/// Retry schedule inside one export call: 100 ms doubling to 5 s (plus up to
/// 100 ms jitter). The exporter stops retrying once the OTLP timeout is spent,
/// so the attempt count is only a backstop. Retrying inside the crate rather
/// than around it keeps its error classification: 4xx / `InvalidArgument`
/// fail at once, 429 / `Unavailable` and refused connections are retried,
/// and server `Retry-After` hints are honoured.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::recommended()
        .with_initial_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_retries(16)
}

pub(crate) struct OtlpSink {
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    batch_timeout: Duration,
    metrics: Arc<ExportMetrics>,
    error_log: RateLimitedLog,
    failing: bool,
}

impl OtlpSink {
    /// Needs a tokio runtime: the gRPC channel is created (lazily connected) here.
    pub(crate) fn new(
        config: &OtlpConfig,
        batch_timeout: Duration,
        metrics: Arc<ExportMetrics>,
    ) -> Result<Self, ExportError> {
        Ok(Self {
            exporter: build_exporter(config)?,
            scope: instrumentation_scope(),
            batch_timeout,
            metrics,
            error_log: RateLimitedLog::new(LOG_INTERVAL),
            failing: false,
        })
    }

    fn record_failure(&mut self, spans: u64, error: &str) {
        self.metrics.export_errors.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .spans_failed
            .fetch_add(spans, Ordering::Relaxed);
        self.failing = true;
        if let Some(suppressed) = self.error_log.check() {
            warn!(
                error,
                spans_lost = spans,
                similar_errors_suppressed = suppressed,
                "OTLP export failed after retries"
            );
        }
    }
}

impl BatchSink for OtlpSink {
    async fn export(&mut self, batch: Vec<Span>) {
        // One deadline for the whole batch, so a down collector costs at most
        // `batch_timeout` per batch however many processes the batch holds.
        let deadline = after(self.batch_timeout);
        for group in group_by_resource(batch) {
            let count = group.spans.len() as u64;
            self.exporter
                .set_resource(&to_sdk_resource(&group.resource));
            let data = group
                .spans
                .into_iter()
                .map(|s| to_span_data(s, &self.scope))
                .collect();
            self.metrics.export_requests.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout_at(deadline, self.exporter.export(data)).await {
                Ok(Ok(())) => {
                    self.metrics
                        .spans_exported
                        .fetch_add(count, Ordering::Relaxed);
                    if std::mem::take(&mut self.failing) {
                        info!("OTLP export recovered");
                    }
                }
                Ok(Err(e)) => self.record_failure(count, &e.to_string()),
                Err(_) => self.record_failure(
                    count,
                    "batch export timeout (OTEL_BSP_EXPORT_TIMEOUT) exceeded",
                ),
            }
        }
    }
}

fn build_exporter(config: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => builder
            .with_tonic()
            .with_endpoint(&config.endpoint)
            .with_timeout(config.timeout)
            .with_metadata(metadata(&config.headers)?)
            .with_retry_policy(retry_policy())
            .build()?,
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            // `with_headers` URL-decodes values again; ours are decoded
            // already, so protect their `%` from a second pass.
            let headers: HashMap<String, String> = config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.replace('%', "%25")))
                .collect();
            let protocol = match config.protocol {
                OtlpProtocol::HttpJson => Protocol::HttpJson,
                _ => Protocol::HttpBinary,
            };
            builder
                .with_http()
                .with_endpoint(&config.endpoint)
                .with_protocol(protocol)
                .with_timeout(config.timeout)
                .with_headers(headers)
                .with_retry_policy(retry_policy())
                .build()?
        }
    };
    Ok(exporter)
}

fn metadata(headers: &[(String, String)]) -> Result<MetadataMap, ExportError> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let bad = |reason: String| ExportError::InvalidEnv {
            var: "OTEL_EXPORTER_OTLP_[TRACES_]HEADERS".into(),
            value: "<not shown>".into(),
            reason,
        };
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| bad(format!("{k:?} is not a valid gRPC metadata key")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| bad(format!("value of {k:?} is not valid gRPC metadata")))?;
        map.insert(name, value);
    }
    Ok(MetadataMap::from_headers(map))
}
