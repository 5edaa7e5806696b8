//! OTLP sink: each batch goes out as one request (every resource in it),
//! encoded by [`super::proto`] (or [`super::otlp_json`]) and sent by
//! [`super::transport`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use super::config::OtlpConfig;
use super::proto::Encoder;
use super::queue::{BatchSink, after};
use super::ratelimit::{LOG_INTERVAL, RateLimitedLog};
use super::transport::Transport;
use super::{ExportError, ExportMetrics, otlp_json};
use crate::span::model::{Resource, Span};

pub(crate) struct OtlpSink {
    transport: Transport,
    encoder: Encoder,
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
            transport: Transport::new(config)?,
            encoder: Encoder::default(),
            batch_timeout,
            metrics,
            error_log: RateLimitedLog::new(LOG_INTERVAL),
            failing: false,
        })
    }

    fn record_failure(&mut self, spans: u64, error: &str) {
        self.metrics.export_errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.spans_failed.fetch_add(spans, Ordering::Relaxed);
        self.failing = true;
        if let Some(suppressed) = self.error_log.check() {
            warn!(error, spans_lost = spans, similar_errors_suppressed = suppressed, "OTLP export failed after retries");
        }
    }
}

/// The batch's spans grouped by resource (pid + start time), in order of
/// first appearance, as indexes: spans are large, and moving them into
/// per-resource vectors cost more than encoding them.
fn group_by_resource(batch: &[Span]) -> Vec<(Arc<Resource>, Vec<u32>)> {
    let mut groups: Vec<(Arc<Resource>, Vec<u32>)> = Vec::new();
    for (i, span) in batch.iter().enumerate() {
        // Few resources per batch: a linear lookup beats hashing.
        match groups.iter_mut().find(|(r, _)| r.key == span.resource.key) {
            Some((_, members)) => members.push(i as u32),
            None => groups.push((Arc::clone(&span.resource), vec![i as u32])),
        }
    }
    groups
}

impl BatchSink for OtlpSink {
    async fn export(&mut self, batch: Vec<Span>) {
        // One deadline for the whole batch, so a down collector costs at most
        // `batch_timeout` per batch.
        let deadline = after(self.batch_timeout);
        let count = batch.len() as u64;
        let groups = group_by_resource(&batch);
        let parts = groups.iter().map(|(resource, members)| (&**resource, members.iter().map(|&i| &batch[i as usize])));
        let body = if self.transport.wants_json() { otlp_json::request(parts) } else { self.encoder.request(parts) };
        self.metrics.export_requests.fetch_add(1, Ordering::Relaxed);
        match self.transport.send(body.into(), deadline).await {
            Ok(()) => {
                self.metrics.spans_exported.fetch_add(count, Ordering::Relaxed);
                if std::mem::take(&mut self.failing) {
                    info!("OTLP export recovered");
                }
            }
            Err(e) => self.record_failure(count, &e.to_string()),
        }
    }
}
