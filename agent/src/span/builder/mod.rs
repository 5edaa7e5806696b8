//! Turns finished exchanges into spans: kind, timing, semantic-convention
//! attributes and status. The trace context comes from the linker.

mod db;
mod grpc;
mod http;

use std::{net::SocketAddr, sync::Arc};

use kspan_common::Role;

use crate::{
    conntrack::Connection,
    protocol::{http1::Ts, http2::StreamExchange},
    span::{
        Clock,
        linker::TraceCtx,
        model::{Attr, Resource, Span, SpanKind, SpanStatus, Text},
        route::RouteTemplater,
    },
};

pub use http::HttpView;

pub struct SpanBuilder {
    clock: Clock,
    routes: RouteTemplater,
}

/// Why an exchange gave no span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// The trace is sampled out.
    SampledOut,
}

/// When the request and response happened, as syscall stamps.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub request_first: Ts,
    pub response_last: Option<Ts>,
    pub request_last: Ts,
    /// When the connection ended, for an exchange that got no response.
    pub closed_ns: Option<u64>,
}

impl Timing {
    /// Server spans run from the read that returned the request's first
    /// byte to the write that handed the response's last byte to the kernel;
    /// client spans from the write of the request's first byte to the read
    /// that returned the response's last byte.
    ///
    /// The edges are picked by causality, so a server span always nests
    /// inside the client span that caused it: the server can read only after
    /// the client began writing, and the client can read the last byte only
    /// after the server began writing it (its write may return a little
    /// after the client already has the bytes, so the server end is the entry
    /// of that write).
    fn edges(&self, kind: SpanKind) -> (u64, u64) {
        let (start, end) = match kind {
            SpanKind::Server => (self.request_first.exit_ns, self.response_last.map(|t| t.enter_ns)),
            SpanKind::Client => (self.request_first.enter_ns, self.response_last.map(|t| t.exit_ns)),
        };
        // No response: the span ends when the connection did.
        let end = end.or(self.closed_ns).unwrap_or(self.request_last.exit_ns);
        (start, end.max(start))
    }
}

fn kind_of(role: Role) -> SpanKind {
    if role == Role::Server { SpanKind::Server } else { SpanKind::Client }
}

/// An IP address as text. Formatting through `Display` was the costliest
/// part of building a span; a host talks to few distinct peers, so the text
/// of each is kept (in a bounded table) and cloned.
fn ip_text(ip: std::net::IpAddr) -> Arc<str> {
    use std::{cell::RefCell, collections::HashMap, net::IpAddr};
    const MAX_CACHED: usize = 4096;
    thread_local! {
        static TEXT: RefCell<HashMap<IpAddr, Arc<str>, rustc_hash::FxBuildHasher>> = RefCell::default();
    }
    let ip = ip.to_canonical();
    TEXT.with_borrow_mut(|cache| {
        if let Some(text) = cache.get(&ip) {
            return Arc::clone(text);
        }
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        Arc::clone(cache.entry(ip).or_insert_with(|| ip.to_string().into()))
    })
}

/// Peer and server endpoint attributes shared by HTTP, RPC and database spans.
fn network_attrs(attrs: &mut Vec<Attr>, conn: &Connection, kind: SpanKind, authority: Option<&str>) {
    let peer_ip = conn.remote.map(|peer| ip_text(peer.ip()));
    if let (Some(peer), Some(ip)) = (conn.remote, &peer_ip) {
        attrs.push(Attr::new("network.peer.address", ip.clone()));
        attrs.push(Attr::new("network.peer.port", i64::from(peer.port())));
    }
    // server.* names the server: the Host/:authority when present, else the
    // socket's server-side address.
    let server_socket = if kind == SpanKind::Server { conn.local } else { conn.remote };
    let (host, port) = server_endpoint(authority, server_socket);
    if let Some(host) = host {
        attrs.push(Attr::new("server.address", host));
    }
    if let Some(port) = port {
        attrs.push(Attr::new("server.port", i64::from(port)));
    }
    if kind == SpanKind::Server
        && let Some(ip) = peer_ip
    {
        attrs.push(Attr::new("client.address", ip));
    }
}

fn server_endpoint(authority: Option<&str>, socket: Option<SocketAddr>) -> (Option<Text>, Option<u16>) {
    let socket_port = socket.map(|a| a.port());
    match authority.filter(|h| !h.is_empty()) {
        Some(host) => {
            let (name, port) = crate::span::url::split_host_port(host, socket_port.unwrap_or(80));
            (Some(Text::Owned(name)), Some(port))
        }
        None => (socket.map(|a| Text::Shared(ip_text(a.ip()))), socket_port),
    }
}

impl SpanBuilder {
    pub fn new(clock: Clock, routes: RouteTemplater) -> Self {
        Self { clock, routes }
    }

    /// An HTTP/1.x exchange.
    pub fn http1(
        &self,
        conn: &Connection,
        role: Role,
        ex: &crate::protocol::http1::Exchange,
        resource: Arc<Resource>,
        ctx: TraceCtx,
    ) -> Result<Span, Skipped> {
        let (mut view, timing) = http::view_http1(ex);
        if conn.tls {
            view.scheme = Text::Static("https");
        }
        self.http(conn, role, &view, timing, resource, ctx)
    }

    /// An HTTP/2 stream: a gRPC call when its content-type says so.
    pub fn http2(
        &self,
        conn: &Connection,
        role: Role,
        ex: &StreamExchange,
        resource: Arc<Resource>,
        ctx: TraceCtx,
    ) -> Result<Span, Skipped> {
        let timing = Timing {
            request_first: ex.request_first,
            response_last: ex.response_last,
            request_last: ex.request_last,
            closed_ns: ex.closed_ns,
        };
        if ex.is_grpc() {
            let (name, attrs, status) = grpc::describe(conn, kind_of(role), ex, &timing);
            return self.finish(kind_of(role), name, attrs, status, timing, resource, ctx);
        }
        let view = http::view_http2(ex);
        self.http(conn, role, &view, timing, resource, ctx)
    }

    /// A database command and its reply.
    pub fn db(
        &self,
        conn: &Connection,
        role: Role,
        system: crate::protocol::db::DbSystem,
        ex: &crate::protocol::db::DbExchange,
        resource: Arc<Resource>,
        ctx: TraceCtx,
    ) -> Result<Span, Skipped> {
        let timing = Timing {
            request_first: ex.request_first,
            response_last: ex.response_last,
            request_last: ex.request_last,
            closed_ns: ex.closed_ns,
        };
        let kind = kind_of(role);
        let (name, attrs, status) = db::describe(conn, kind, system, ex);
        self.finish(kind, name, attrs, status, timing, resource, ctx)
    }

    fn http(
        &self,
        conn: &Connection,
        role: Role,
        view: &HttpView,
        timing: Timing,
        resource: Arc<Resource>,
        ctx: TraceCtx,
    ) -> Result<Span, Skipped> {
        let kind = kind_of(role);
        let (name, attrs, status) = http::describe(conn, kind, view, &self.routes);
        self.finish(kind, name, attrs, status, timing, resource, ctx)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        kind: SpanKind,
        name: String,
        attributes: Vec<Attr>,
        status: SpanStatus,
        timing: Timing,
        resource: Arc<Resource>,
        ctx: TraceCtx,
    ) -> Result<Span, Skipped> {
        if !ctx.sampled {
            return Err(Skipped::SampledOut);
        }
        let (start, end) = timing.edges(kind);
        Ok(Span {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: ctx.parent_span_id,
            parent_is_remote: ctx.parent_is_remote,
            trace_state: ctx.trace_state,
            kind,
            name,
            start_unix_nanos: self.clock.to_unix_nanos(start),
            end_unix_nanos: self.clock.to_unix_nanos(end),
            attributes,
            status,
            resource,
        })
    }
}
