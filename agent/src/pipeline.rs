//! The user-space stages between the ring buffer and the exporter, in the
//! order records flow through them: connection table -> streams and
//! protocol parsers -> trace linker and span builder. Nothing here touches
//! the kernel or the network, so a recorded or synthetic record stream can
//! be run through exactly what the daemon runs (the `pipeline` benchmark
//! does).

use std::path::Path;

use kspan_common::{Call, Role};

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
        linker::{Linker, Propagation},
        model::Span,
        route::RouteTemplater,
        sampler::Sampler,
    },
    stream::{AppEvent, ProtocolEvent, Streams},
};

/// Processes whose identity (service name, resource) is remembered.
const REGISTRY_CAPACITY: usize = 4096;

pub struct Pipeline {
    pub conns: ConnTable,
    pub streams: Streams,
    pub registry: Registry,
    pub metrics: Metrics,
    builder: SpanBuilder,
    linker: Linker,
    /// Reused for the events each record completes.
    protocol_events: Vec<ProtocolEvent>,
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
        if let Some(displaced) = self.conns.open(rec) {
            self.finish_connection(&displaced, rec.ts_ns, rec.tid, false, out);
        }
    }

    fn on_data(&mut self, rec: &DataRecord, out: &mut impl FnMut(Span)) {
        self.metrics.bytes_captured.add(rec.payload.len() as u64);
        let Some(conn) = self.conns.get(rec.conn_id).cloned() else {
            // Its open record was lost (ring buffer full): bytes of a
            // connection we cannot place are dropped, and counted.
            self.metrics.data_without_connection.inc();
            return;
        };
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
            let built = match &ev.event {
                AppEvent::Http1(Http1Event::RequestStarted { seq, head, first }) => {
                    let w3c = Propagation {
                        traceparent: head.traceparent.as_deref(),
                        tracestate: head.tracestate.as_deref(),
                    };
                    self.request_started(conn, &ev, *seq, &w3c, first);
                    continue;
                }
                AppEvent::Http2(Http2Event::StreamStarted { stream_id, request, first }) => {
                    let w3c = Propagation {
                        traceparent: request.traceparent.as_deref(),
                        tracestate: request.tracestate.as_deref(),
                    };
                    self.request_started(conn, &ev, u64::from(*stream_id), &w3c, first);
                    continue;
                }
                AppEvent::Db(_, DbEvent::Started { seq, first }) => {
                    self.request_started(conn, &ev, *seq, &Propagation::default(), first);
                    continue;
                }
                AppEvent::Db(system, DbEvent::Exchange(ex)) => {
                    let ctx = self.linker.finish(conn.id, ex.seq);
                    self.builder.db(conn, ev.role, *system, ex, self.registry.resource(ev.pid), ctx)
                }
                AppEvent::Http1(Http1Event::Exchange(ex)) => {
                    let ctx = self.linker.finish(conn.id, ex.seq);
                    self.builder.http1(conn, ev.role, ex, self.registry.resource(ev.pid), ctx)
                }
                AppEvent::Http2(Http2Event::Exchange(ex)) => {
                    let ctx = self.linker.finish(conn.id, u64::from(ex.stream_id));
                    self.builder.http2(conn, ev.role, ex, self.registry.resource(ev.pid), ctx)
                }
            };
            match built {
                Ok(span) => {
                    self.metrics.spans.inc();
                    out(span);
                }
                Err(_) => self.metrics.spans_sampled_out.inc(),
            }
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
