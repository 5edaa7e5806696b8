//! The user-space stages between the ring buffer and the exporter, in the
//! order records flow through them: connection table -> streams and
//! protocol parsers -> trace linker and span builder. Nothing here touches
//! the kernel or the network, so a recorded or synthetic record stream can
//! be run through exactly what the daemon runs (the `pipeline` benchmark
//! does).

use std::{
    collections::VecDeque,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use kspan_common::{Call, Role, Source};

use crate::{
    capture::decode::{ConnRecord, DataRecord, Event, ProcRecord},
    conntrack::{ConnTable, Connection},
    metrics::Metrics,
    process::registry::Registry,
    protocol::{
        db::DbEvent,
        http1::{Http1Event, Ts},
        http2::Http2Event,
    },
    span::{
        Clock,
        builder::SpanBuilder,
        linker::{AwaitingPeer, Finished, Linker, Propagation, TraceCtx},
        model::{Resource, Span},
        route::RouteTemplater,
        sampler::Sampler,
    },
    stream::{AppEvent, ProtocolEvent, Streams},
};

/// Processes whose identity (service name, resource) is remembered.
const REGISTRY_CAPACITY: usize = 4096;
/// How long a server's span waits for its client's start to be seen (see
/// `Linker::finish_or_wait`): the client is late by a scheduling delay.
const PEER_GRACE: Duration = Duration::from_millis(50);
/// Spans held at once; past it they go out unlinked rather than queue.
const MAX_HELD: usize = 8192;

/// A server span held for its client.
struct Held {
    conn: Connection,
    event: ProtocolEvent,
    /// Taken when the exchange ended: the process may be gone by release.
    resource: Arc<Resource>,
    awaiting: AwaitingPeer,
    since: Instant,
}

pub struct Pipeline {
    pub conns: ConnTable,
    pub streams: Streams,
    pub registry: Registry,
    pub metrics: Metrics,
    builder: SpanBuilder,
    linker: Linker,
    /// Reused for the events each record completes.
    protocol_events: Vec<ProtocolEvent>,
    held: VecDeque<Held>,
}

impl Pipeline {
    /// `proc_root`: where process identities and socket tables are read
    /// (`/proc` in the daemon).
    pub fn new(
        max_connections: usize,
        proc_root: &Path,
        routes: RouteTemplater,
        sampler: Sampler,
        clock: Clock,
        metrics: Metrics,
    ) -> Self {
        Self {
            conns: ConnTable::new(max_connections, proc_root),
            streams: Streams::new(max_connections),
            registry: Registry::new(proc_root.into(), REGISTRY_CAPACITY),
            metrics,
            builder: SpanBuilder::new(clock, routes),
            linker: Linker::with_sampler(sampler),
            protocol_events: Vec::new(),
            held: VecDeque::new(),
        }
    }

    /// Runs one decoded record through every stage; each span it completes
    /// goes to `out`.
    pub fn handle(&mut self, event: &Event<'_>, out: &mut impl FnMut(Span)) {
        self.metrics.events.inc();
        match event {
            Event::Data(rec) => self.on_data(rec, out),
            Event::ConnOpen(rec) => self.on_conn_open(rec, out),
            Event::ConnClose(rec) => {
                if let Some(conn) = self.conns.close(rec.conn_id) {
                    let reset = rec.call == Call::Reset;
                    self.finish_connection(&conn, rec.ts_ns, rec.tid, reset, out);
                }
            }
            Event::Proc(ProcRecord::Exit { tgid, ts_ns }) => {
                for conn in self.conns.remove_process(*tgid) {
                    self.finish_connection(&conn, *ts_ns, *tgid, false, out);
                }
                self.linker.process_exited(*tgid);
                self.registry.forget(*tgid);
            }
            Event::Proc(ProcRecord::Exec { tgid, .. }) => self.registry.forget(*tgid),
            Event::Proc(ProcRecord::Fork { tgid, tid, child, .. }) => {
                self.registry.forked(*tgid, *child);
                self.linker.thread_created(*tgid, *tid, *child);
            }
            Event::Injected(rec) => self.linker.injected(rec),
            Event::ThreadCtx { conn_id, trace_id, update, .. } => {
                self.linker.thread_trace(*conn_id, *trace_id, *update)
            }
        }
    }

    fn on_conn_open(&mut self, rec: &ConnRecord, out: &mut impl FnMut(Span)) {
        self.registry.prime(rec.tgid, &rec.comm);
        if self.registry.is_go(rec.tgid) {
            self.linker.threads_do_not_follow_requests(rec.tgid);
        }
        if let Some(displaced) = self.conns.open(rec) {
            self.finish_connection(&displaced, rec.ts_ns, rec.tid, false, out);
        }
    }

    fn on_data(&mut self, rec: &DataRecord, out: &mut impl FnMut(Span)) {
        self.metrics.bytes_captured.add(rec.payload.len() as u64);
        let Some(mut conn) = self.conns.get(rec.conn_id).cloned() else {
            // Its open record was lost (ring buffer full): bytes of a
            // connection we cannot place are dropped, and counted.
            self.metrics.data_without_connection.inc();
            return;
        };
        if conn.kspan_export {
            return;
        }
        if rec.source == Source::Tls && !conn.tls {
            // What was seen so far was the handshake's ciphertext: the
            // plaintext starts a stream of its own.
            self.conns.mark_tls(conn.id);
            conn.tls = true;
            self.streams.restart(conn.id);
        }
        let mut events = std::mem::take(&mut self.protocol_events);
        self.streams.on_data(&conn, rec, &mut events);
        self.on_protocol_events(&conn, &mut events, out);
        self.protocol_events = events;
    }

    fn finish_connection(&mut self, conn: &Connection, ts_ns: u64, tid: u32, reset: bool, out: &mut impl FnMut(Span)) {
        let mut events = self.streams.on_close(conn, ts_ns, tid, reset);
        self.on_protocol_events(conn, &mut events, out);
        self.linker.connection_closed(conn.id);
    }

    fn on_protocol_events(&mut self, conn: &Connection, events: &mut Vec<ProtocolEvent>, out: &mut impl FnMut(Span)) {
        for ev in events.drain(..) {
            let seq = match &ev.event {
                AppEvent::Http1(Http1Event::RequestStarted { seq, head, first }) => {
                    let w3c = Propagation {
                        traceparent: head.traceparent.as_deref(),
                        tracestate: head.tracestate.as_deref(),
                        request_line: Some((&head.method, &head.target)),
                    };
                    self.request_started(conn, &ev, *seq, &w3c, first);
                    continue;
                }
                AppEvent::Http2(Http2Event::StreamStarted { stream_id, request, first }) => {
                    let w3c = Propagation {
                        traceparent: request.traceparent.as_deref(),
                        tracestate: request.tracestate.as_deref(),
                        request_line: request.method.as_deref().zip(request.path.as_deref()),
                    };
                    self.request_started(conn, &ev, u64::from(*stream_id), &w3c, first);
                    continue;
                }
                AppEvent::Db(_, DbEvent::Started { seq, first }) => {
                    self.request_started(conn, &ev, *seq, &Propagation::default(), first);
                    continue;
                }
                AppEvent::Db(_, DbEvent::Exchange(ex)) => ex.seq,
                AppEvent::Http1(Http1Event::Exchange(ex)) => ex.seq,
                AppEvent::Http2(Http2Event::Exchange(ex)) => u64::from(ex.stream_id),
            };
            let resource = self.registry.resource(ev.pid);
            let ctx = match self.linker.finish_or_wait(conn, seq) {
                Finished::Now(ctx) => ctx,
                Finished::AwaitingPeer(awaiting) if self.held.len() < MAX_HELD => {
                    let since = Instant::now();
                    self.held.push_back(Held { conn: conn.clone(), event: ev, resource, awaiting, since });
                    continue;
                }
                Finished::AwaitingPeer(awaiting) => self.linker.finish_awaited(awaiting),
            };
            self.build(conn, &ev, resource, ctx, out);
        }
    }

    fn build(&mut self, conn: &Connection, ev: &ProtocolEvent, resource: Arc<Resource>, ctx: TraceCtx, out: &mut impl FnMut(Span)) {
        let built = match &ev.event {
            AppEvent::Db(system, DbEvent::Exchange(ex)) => self.builder.db(conn, ev.role, *system, ex, resource, ctx),
            AppEvent::Http1(Http1Event::Exchange(ex)) => self.builder.http1(conn, ev.role, ex, resource, ctx),
            AppEvent::Http2(Http2Event::Exchange(ex)) => self.builder.http2(conn, ev.role, ex, resource, ctx),
            // Starts are handled as they come.
            _ => return,
        };
        match built {
            Ok(span) => {
                self.metrics.spans.inc();
                out(span);
            }
            Err(_) => self.metrics.spans_sampled_out.inc(),
        }
    }

    /// Builds the spans held for their client (see
    /// `Linker::finish_or_wait`) once they have waited `PEER_GRACE`, or all
    /// of them with `all` (at exit).
    pub fn release_held(&mut self, all: bool, out: &mut impl FnMut(Span)) {
        while self.held.front().is_some_and(|h| all || h.since.elapsed() >= PEER_GRACE) {
            let Some(held) = self.held.pop_front() else { break };
            let ctx = self.linker.finish_awaited(held.awaiting);
            self.build(&held.conn, &held.event, held.resource, ctx, out);
        }
    }

    /// A request (or database command) began: the linker allocates its
    /// context now, before either span is complete.
    fn request_started(&mut self, conn: &Connection, ev: &ProtocolEvent, seq: u64, w3c: &Propagation, first: &Ts) {
        // A server's request starts when its read returns; a client's when
        // its write begins (see span timing).
        let started_ns = if ev.role == Role::Server { first.exit_ns } else { first.enter_ns };
        let peer_traced = self.conns.peer_tracked(conn);
        self.linker.request_started_with_peer(conn, ev.role, seq, w3c, started_ns, ev.tid, peer_traced);
    }
}

#[cfg(test)]
mod tests {
    use kspan_common::Direction;

    use super::*;
    use crate::{export::ExportMetrics, span::model::AttrValue};

    fn pipeline() -> Pipeline {
        let sampler = Sampler::from_values(Some("always_on"), None).unwrap();
        let metrics = Metrics::new(Arc::new(ExportMetrics::default()));
        let routes = RouteTemplater::new(&[]).unwrap();
        Pipeline::new(16, Path::new("/nonexistent"), routes, sampler, Clock::now(), metrics)
    }

    fn data(source: Source, direction: Direction, ts: u64, payload: &[u8]) -> Event<'_> {
        Event::Data(DataRecord {
            tgid: 7,
            tid: 7,
            fd: 3,
            conn_id: 1,
            direction,
            source,
            call: if direction == Direction::Egress { Call::Write } else { Call::Read },
            enter_ns: ts,
            exit_ns: ts + 1,
            size: payload.len() as u64,
            truncated: false,
            payload,
        })
    }

    /// A TLS server connection: handshake ciphertext from the socket, then
    /// the library's plaintext, then more socket ciphertext.
    #[test]
    fn tls_plaintext_replaces_the_ciphertext_stream() {
        let mut p = pipeline();
        let open = ConnRecord {
            tgid: 7,
            tid: 7,
            fd: 3,
            conn_id: 1,
            role: Role::Server,
            call: Call::Accept,
            ts_ns: 1,
            inode: 0,
            netns: 1,
            local: Some("127.0.0.1:443".parse().unwrap()),
            remote: Some("127.0.0.1:50000".parse().unwrap()),
            comm: "srv".into(),
        };
        let mut spans = Vec::new();
        let mut out = |s: Span| spans.push(s);
        let close = ConnRecord { call: Call::Close, ts_ns: 40, ..open.clone() };
        p.handle(&Event::ConnOpen(open), &mut out);
        // A ClientHello, and a record that happens to read like a request.
        p.handle(&data(Source::Syscall, Direction::Ingress, 10, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), &mut out);
        p.handle(&data(Source::Tls, Direction::Ingress, 20, b"GET /a?k=v HTTP/1.1\r\nHost: x\r\n\r\n"), &mut out);
        p.handle(&data(Source::Syscall, Direction::Ingress, 25, b"GET /ciphertext HTTP/1.1\r\n\r\n"), &mut out);
        p.handle(&data(Source::Tls, Direction::Egress, 30, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), &mut out);
        // Had the ciphertext been parsed, its "request" would end unanswered here.
        p.handle(&Event::ConnClose(close), &mut out);
        p.release_held(true, &mut out);
        assert_eq!(spans.len(), 1, "{spans:?}");
        let span = &spans[0];
        assert_eq!(span.name, "GET /a");
        assert!(matches!(span.attr("url.scheme"), Some(AttrValue::Str(s)) if &**s == "https"));
    }
}
