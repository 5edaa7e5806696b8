//! Export stage: finished spans go out over OTLP (gRPC or HTTP) and/or are
//! printed on stdout. Nothing here may block the pipeline: every consumer sits
//! behind a bounded queue that drops, and counts, when full.

pub mod config;
mod headers;
mod otlp;
mod otlp_json;
pub mod proto;
mod tls;
mod transport;
mod printer;
mod queue;
mod ratelimit;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod test_receiver;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod test_pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

pub use config::ExportConfig;

use crate::span::model::Span;
use queue::Lane;

/// How spans are shown on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrintMode {
    /// Text when no OTLP endpoint is configured, nothing otherwise.
    Auto,
    /// One readable line per span.
    Text,
    /// One JSON object per line.
    Json,
    /// No printing.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidEnv {
        var: String,
        value: String,
        reason: String,
    },
    #[error("the exporter must be started inside a tokio runtime")]
    NoRuntime,
    #[error("cannot start the span printer thread: {0}")]
    PrinterThread(#[source] std::io::Error),
}

/// Counters of the export stage, shared with whoever reports agent health.
#[derive(Debug, Default)]
pub struct ExportMetrics {
    /// Spans the collector acknowledged.
    pub spans_exported: AtomicU64,
    /// Spans dropped at `submit` because a queue was full. The OTLP and the
    /// printer queue count separately, so with both on a span may count twice.
    pub spans_dropped_queue_full: AtomicU64,
    /// Spans given up on after retries or the batch timeout.
    pub spans_failed: AtomicU64,
    /// OTLP export calls (one per resource per batch; retries inside a call not counted).
    pub export_requests: AtomicU64,
    /// Export calls that failed for good.
    pub export_errors: AtomicU64,
}

struct Printer {
    lane: Lane,
    stopped: Arc<AtomicBool>,
    done: oneshot::Receiver<()>,
}

/// What the printer shows, if anything: explicit modes always print, `Auto`
/// only stands in for a missing OTLP endpoint.
fn print_format(mode: PrintMode, exporting: bool) -> Option<printer::Format> {
    match (mode, exporting) {
        (PrintMode::Text, _) | (PrintMode::Auto, false) => Some(printer::Format::Text),
        (PrintMode::Json, _) => Some(printer::Format::Json),
        (PrintMode::None, _) | (PrintMode::Auto, true) => None,
    }
}

/// Handle of the running export stage.
pub struct Exporter {
    otlp: Option<(Lane, JoinHandle<()>)>,
    printer: Option<Printer>,
    flush_timeout: Duration,
}

impl Exporter {
    /// Starts the background export task on the current tokio runtime.
    pub fn start(config: ExportConfig, metrics: Arc<ExportMetrics>) -> Result<Self, ExportError> {
        tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let print = print_format(config.print, config.otlp.is_some());
        let otlp = match &config.otlp {
            Some(otlp_config) => {
                let sink =
                    otlp::OtlpSink::new(otlp_config, config.export_timeout, Arc::clone(&metrics))?;
                let (lane, rx) = Lane::new(config.max_queue_size, Arc::clone(&metrics));
                let task = tokio::spawn(queue::run_batches(
                    rx,
                    sink,
                    config.max_export_batch_size,
                    config.schedule_delay,
                ));
                Some((lane, task))
            }
            None => None,
        };
        let printer = match print {
            Some(format) => {
                let (lane, rx) = Lane::new(config.max_queue_size, metrics);
                let stopped = Arc::new(AtomicBool::new(false));
                let done = printer::spawn(format, rx, Arc::clone(&stopped))
                    .map_err(ExportError::PrinterThread)?;
                Some(Printer {
                    lane,
                    stopped,
                    done,
                })
            }
            None => None,
        };
        Ok(Self {
            otlp,
            printer,
            flush_timeout: config.export_timeout,
        })
    }

    /// Never blocks: enqueue, or drop and count when the bounded queue is full.
    pub fn submit(&self, span: Span) {
        let printer = self
            .printer
            .as_ref()
            .filter(|p| !p.stopped.load(Ordering::Relaxed));
        match (&self.otlp, printer) {
            (Some((otlp, _)), Some(p)) => {
                p.lane.offer(span.clone());
                otlp.offer(span);
            }
            (Some((otlp, _)), None) => otlp.offer(span),
            (None, Some(p)) => p.lane.offer(span),
            // Neither exporting nor printing (`--print none` without an
            // endpoint): spans are discarded on purpose.
            (None, None) => {}
        }
    }

    /// Every queue is at most a quarter full: export keeps up with spans.
    pub fn has_slack(&self) -> bool {
        self.otlp.as_ref().is_none_or(|(lane, _)| lane.has_slack())
            && self.printer.as_ref().is_none_or(|p| p.lane.has_slack())
    }

    /// Flush what is queued (bounded by the export timeout) and stop.
    pub async fn shutdown(self) {
        let deadline = queue::after(self.flush_timeout);
        // Dropping the senders is the stop signal: each consumer drains what
        // is queued, exports it, and ends. Both are awaited together so a
        // slow terminal does not eat into the OTLP flush, or the reverse.
        let printer_done = self.printer.map(|p| p.done);
        let otlp_task = self.otlp.map(|(_, task)| task);
        let printer = async {
            if let Some(done) = printer_done
                && tokio::time::timeout_at(deadline, done).await.is_err()
            {
                warn!("span printer did not finish before the export timeout");
            }
        };
        let otlp = async {
            if let Some(mut task) = otlp_task
                && tokio::time::timeout_at(deadline, &mut task).await.is_err()
            {
                task.abort();
                warn!("OTLP flush did not finish before the export timeout; queued spans lost");
            }
        };
        tokio::join!(printer, otlp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prints_text_only_without_an_endpoint() {
        use printer::Format::{Json, Text};
        assert_eq!(print_format(PrintMode::Auto, false), Some(Text));
        assert_eq!(print_format(PrintMode::Auto, true), None);
        assert_eq!(print_format(PrintMode::Text, true), Some(Text));
        assert_eq!(print_format(PrintMode::Json, false), Some(Json));
        assert_eq!(print_format(PrintMode::None, false), None);
    }

    #[test]
    fn exporter_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Exporter>();
        shareable::<ExportMetrics>();
        shareable::<ExportError>();
    }
}
