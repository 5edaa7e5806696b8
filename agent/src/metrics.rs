//! kspan's own counters: what it saw, what it dropped, and why. Logged
//! periodically and at exit, so loss is never silent.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use kspan_common::{COUNTER_SLOTS, Counter as KernelCounter};

use crate::export::ExportMetrics;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Metrics {
    pub events: Counter,
    pub decode_errors: Counter,
    pub bytes_captured: Counter,
    pub data_without_connection: Counter,
    pub spans: Counter,
    pub spans_sampled_out: Counter,
    pub export: Arc<ExportMetrics>,
}

impl Metrics {
    pub fn new(export: Arc<ExportMetrics>) -> Self {
        Self {
            events: Counter::default(),
            decode_errors: Counter::default(),
            bytes_captured: Counter::default(),
            data_without_connection: Counter::default(),
            spans: Counter::default(),
            spans_sampled_out: Counter::default(),
            export,
        }
    }

    /// One structured line with every counter.
    /// `kernel`: the eBPF programs' counters, indexed by `kspan_common::Counter`.
    pub fn log(
        &self,
        kernel: &[u64; COUNTER_SLOTS as usize],
        conns: &crate::conntrack::ConnStats,
        connections: usize,
        streams: usize,
    ) {
        let k = |c: KernelCounter| kernel[c as usize];
        let e = &self.export;
        tracing::info!(
            events = self.events.get(),
            events_dropped_ringbuf = k(KernelCounter::RingbufDropped) + k(KernelCounter::ControlDropped),
            socket_calls = k(KernelCounter::SocketCalls),
            socket_io_unattributed = k(KernelCounter::Unattributed),
            bytes_captured = self.bytes_captured.get(),
            http1_bodies_skipped = k(KernelCounter::BodiesSkipped),
            decode_errors = self.decode_errors.get(),
            data_without_connection = self.data_without_connection.get(),
            connections_opened = conns.opened,
            connections_resolved_procfs = conns.resolved_from_procfs,
            connections_dead_on_arrival = conns.dead_on_arrival,
            connections_tracked = connections,
            streams_tracked = streams,
            spans = self.spans.get(),
            spans_sampled_out = self.spans_sampled_out.get(),
            spans_exported = e.spans_exported.load(Ordering::Relaxed),
            spans_dropped_queue_full = e.spans_dropped_queue_full.load(Ordering::Relaxed),
            spans_failed = e.spans_failed.load(Ordering::Relaxed),
            "kspan metrics"
        );
    }
}
