//! The bounded queue between the pipeline and a consumer, and the batching
//! loop that drains it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use super::ExportMetrics;
use super::ratelimit::{LOG_INTERVAL, RateLimitedLog};
use crate::span::model::Span;

/// Consumer of span batches. Each call must finish in bounded time: while it
/// runs, the queue only fills (and then drops), which is what keeps a slow
/// collector from growing memory.
pub(crate) trait BatchSink: Send + 'static {
    fn export(&mut self, batch: Vec<Span>) -> impl Future<Output = ()> + Send;
}

/// Producer side of one bounded queue.
#[derive(Debug)]
pub(crate) struct Lane {
    tx: mpsc::Sender<Span>,
    metrics: Arc<ExportMetrics>,
    drop_log: RateLimitedLog,
}

impl Lane {
    pub(crate) fn new(
        capacity: usize,
        metrics: Arc<ExportMetrics>,
    ) -> (Self, mpsc::Receiver<Span>) {
        // tokio panics on 0 or on more than MAX_PERMITS; the config never
        // produces either, but a hand-built one might.
        let (tx, rx) = mpsc::channel(capacity.clamp(1, tokio::sync::Semaphore::MAX_PERMITS));
        (
            Self {
                tx,
                metrics,
                drop_log: RateLimitedLog::new(LOG_INTERVAL),
            },
            rx,
        )
    }

    /// At most a quarter of the queue is taken.
    pub(crate) fn has_slack(&self) -> bool {
        self.tx.capacity() * 4 >= self.tx.max_capacity() * 3
    }

    /// Enqueues without waiting; a full (or closed) queue drops the span.
    pub(crate) fn offer(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            let total = self
                .metrics
                .spans_dropped_queue_full
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if let Some(suppressed) = self.drop_log.check() {
                warn!(
                    dropped_total = total,
                    dropped_since_last_warning = suppressed + 1,
                    "export queue full, dropping spans (collector slow or down?)"
                );
            }
        }
    }
}

/// Drains `rx` into batches of at most `max_batch`, handing a batch to `sink`
/// when it is full or `delay` has passed since the last export. Returns once
/// every sender is gone and the queue is empty, after a final export.
pub(crate) async fn run_batches<S: BatchSink>(
    mut rx: mpsc::Receiver<Span>,
    mut sink: S,
    max_batch: usize,
    delay: Duration,
) {
    let max_batch = max_batch.max(1);
    // A zero delay would spin: the timer would always be ready.
    let delay = delay.max(Duration::from_millis(1));
    let mut batch = Vec::with_capacity(max_batch);
    let timer = tokio::time::sleep(delay);
    tokio::pin!(timer);
    loop {
        // Never 0 (that would make `recv_many` return at once): a full
        // batch is exported before the loop comes back here.
        let room = max_batch - batch.len();
        tokio::select! {
            received = rx.recv_many(&mut batch, room) => {
                if received == 0 {
                    if !batch.is_empty() {
                        sink.export(batch).await;
                    }
                    return;
                }
                if batch.len() >= max_batch {
                    sink.export(std::mem::replace(&mut batch, Vec::with_capacity(max_batch))).await;
                    timer.as_mut().reset(after(delay));
                }
            }
            () = &mut timer => {
                if !batch.is_empty() {
                    sink.export(std::mem::replace(&mut batch, Vec::with_capacity(max_batch))).await;
                }
                timer.as_mut().reset(after(delay));
            }
        }
    }
}

/// `now + d`, saturating instead of panicking on absurd durations.
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_util::{resource, span};
    use tokio::sync::mpsc::UnboundedSender;

    struct Collect(UnboundedSender<Vec<u8>>);
    impl BatchSink for Collect {
        async fn export(&mut self, batch: Vec<Span>) {
            let _ = self.0.send(batch.iter().map(|s| s.span_id[7]).collect());
        }
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts_without_blocking() {
        let metrics = Arc::new(ExportMetrics::default());
        let (lane, mut rx) = Lane::new(3, Arc::clone(&metrics));
        let r = resource(1, "a");
        for i in 0..10 {
            lane.offer(span(&r, i));
        }
        assert_eq!(metrics.spans_dropped_queue_full.load(Ordering::Relaxed), 7);
        let mut kept = Vec::new();
        while let Ok(s) = rx.try_recv() {
            kept.push(s.span_id[7]);
        }
        assert_eq!(
            kept,
            vec![0, 1, 2],
            "the oldest spans stay, the newest are dropped"
        );
        drop(rx);
        lane.offer(span(&r, 11));
        assert_eq!(metrics.spans_dropped_queue_full.load(Ordering::Relaxed), 8);
    }

    #[tokio::test]
    async fn slack_ends_past_a_quarter_and_returns_as_the_queue_drains() {
        let (lane, mut rx) = Lane::new(8, Arc::new(ExportMetrics::default()));
        let r = resource(1, "a");
        assert!(lane.has_slack());
        lane.offer(span(&r, 0));
        lane.offer(span(&r, 1));
        assert!(lane.has_slack(), "2 of 8 is a quarter");
        lane.offer(span(&r, 2));
        assert!(!lane.has_slack());
        rx.recv().await.expect("queued span");
        assert!(lane.has_slack());
    }

    #[tokio::test]
    async fn batches_by_size_then_by_delay_then_flushes_on_close() {
        let metrics = Arc::new(ExportMetrics::default());
        let (lane, rx) = Lane::new(100, metrics);
        let (out_tx, mut out) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_batches(
            rx,
            Collect(out_tx),
            3,
            Duration::from_millis(100),
        ));
        let r = resource(1, "a");
        for i in 0..7 {
            lane.offer(span(&r, i));
        }
        assert_eq!(out.recv().await, Some(vec![0, 1, 2]));
        assert_eq!(out.recv().await, Some(vec![3, 4, 5]));
        let before = Instant::now();
        assert_eq!(out.recv().await, Some(vec![6]));
        assert!(
            before.elapsed() >= Duration::from_millis(80),
            "partial batch waits for the delay"
        );
        lane.offer(span(&r, 7));
        drop(lane);
        assert_eq!(out.recv().await, Some(vec![7]));
        assert!(task.await.is_ok());
        assert_eq!(out.recv().await, None);
    }
}
