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

    /// Every counter and gauge, in [`METRICS`] order.
    /// `kernel`: the eBPF programs' counters, indexed by `kspan_common::Counter`.
    pub fn read(
        &self,
        kernel: &[u64; COUNTER_SLOTS as usize],
        conns: &crate::conntrack::ConnStats,
        connections: usize,
        streams: usize,
    ) -> [u64; METRICS.len()] {
        let k = |c: KernelCounter| kernel[c as usize];
        let e = &self.export;
        [
            self.events.get(),
            k(KernelCounter::RingbufDropped) + k(KernelCounter::ControlDropped),
            k(KernelCounter::SocketCalls),
            k(KernelCounter::Unattributed),
            k(KernelCounter::TlsUnattributed),
            self.bytes_captured.get(),
            k(KernelCounter::BodiesSkipped),
            self.decode_errors.get(),
            self.data_without_connection.get(),
            conns.opened,
            conns.resolved_from_procfs,
            conns.dead_on_arrival,
            connections as u64,
            streams as u64,
            self.spans.get(),
            self.spans_sampled_out.get(),
            e.spans_exported.load(Ordering::Relaxed),
            e.spans_dropped_queue_full.load(Ordering::Relaxed),
            e.spans_failed.load(Ordering::Relaxed),
        ]
    }
}

/// Counters only grow; gauges are the current size of a table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Name (as logged, and after `kspan_` for Prometheus), kind and meaning of
/// each value [`Metrics::read`] returns.
pub const METRICS: [(&str, Kind, &str); 19] = [
    ("events", Kind::Counter, "Records read from the kernel ring buffer."),
    ("events_dropped_ringbuf", Kind::Counter, "Records the kernel could not write: the ring buffer was full."),
    ("socket_calls", Kind::Counter, "Socket transfers of traced processes seen in the kernel."),
    ("socket_io_unattributed", Kind::Counter, "Socket transfers no file descriptor could be tied to (io_uring, kernel sockets)."),
    ("tls_calls_unattributed", Kind::Counter, "TLS library calls no connection could be tied to (a memory-BIO connection open before kspan, a thread's first such call, a Go tls.Conn not over TCP): plaintext not captured."),
    ("bytes_captured", Kind::Counter, "Payload bytes copied from the kernel."),
    ("http1_bodies_skipped", Kind::Counter, "HTTP/1 bodies counted in the kernel rather than copied."),
    ("decode_errors", Kind::Counter, "Ring buffer records that did not decode."),
    ("data_without_connection", Kind::Counter, "Transfers on connections kspan could not place."),
    ("connections_opened", Kind::Counter, "Connections tracked since start."),
    ("connections_resolved_procfs", Kind::Counter, "Connections opened before kspan, resolved from procfs."),
    ("connections_dead_on_arrival", Kind::Counter, "Connections gone before they could be resolved."),
    ("connections_tracked", Kind::Gauge, "Connections in the connection table now."),
    ("streams_tracked", Kind::Gauge, "Reassembly streams held now."),
    ("spans", Kind::Counter, "Spans built."),
    ("spans_sampled_out", Kind::Counter, "Spans the sampler dropped."),
    ("spans_exported", Kind::Counter, "Spans the collector accepted."),
    ("spans_dropped_queue_full", Kind::Counter, "Spans dropped because the export queue was full."),
    ("spans_failed", Kind::Counter, "Spans lost to export failures after retries."),
];

/// `name=value ...` for the log line (the soak and bench tools parse it).
pub fn log_line(values: &[u64; METRICS.len()]) -> String {
    let mut line = String::with_capacity(512);
    for ((name, _, _), value) in METRICS.iter().zip(values) {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(name);
        line.push('=');
        line.push_str(&value.to_string());
    }
    line
}

/// Prometheus text exposition format (version 0.0.4).
pub fn prometheus_text(values: &[u64; METRICS.len()]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(4096);
    for ((name, kind, help), value) in METRICS.iter().zip(values) {
        let (full, kind) = match kind {
            Kind::Counter => (format!("kspan_{name}_total"), "counter"),
            Kind::Gauge => (format!("kspan_{name}"), "gauge"),
        };
        // Writing to a String cannot fail.
        let _ = write!(text, "# HELP {full} {help}\n# TYPE {full} {kind}\n{full} {value}\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_and_prometheus_text_name_every_value() {
        let values: [u64; METRICS.len()] = std::array::from_fn(|i| i as u64 * 10);
        let line = log_line(&values);
        assert!(line.starts_with("events=0 events_dropped_ringbuf=10 "), "{line}");
        assert!(line.ends_with(" spans_failed=180"), "{line}");
        let text = prometheus_text(&values);
        assert!(text.contains("# TYPE kspan_spans_exported_total counter\nkspan_spans_exported_total 160\n"), "{text}");
        assert!(text.contains("# TYPE kspan_connections_tracked gauge\nkspan_connections_tracked 120\n"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), METRICS.len());
    }
}
