//! Turns finished HTTP exchanges into spans: kind, timing, semantic
//! convention attributes, status and W3C trace context.

use std::{net::SocketAddr, sync::Arc};

use kspan_common::Role;

use crate::{
    conntrack::Connection,
    protocol::http1::{Exchange, ExchangeError},
    span::{
        Clock,
        linker::TraceCtx,
        model::{Attr, Resource, Span, SpanKind, SpanStatus},
        route::RouteTemplater,
        url,
    },
};

/// Methods the HTTP semantic conventions know; others are `_OTHER`.
const KNOWN_METHODS: [&str; 9] = ["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"];

pub struct SpanBuilder {
    clock: Clock,
    routes: RouteTemplater,
}

/// Why an exchange gave no span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// The caller's `traceparent` says the trace is sampled out.
    SampledOut,
}

impl SpanBuilder {
    pub fn new(clock: Clock, routes: RouteTemplater) -> Self {
        Self { clock, routes }
    }

    /// `ctx` is the span's place in its trace, from the linker.
    pub fn http1(
        &self,
        conn: &Connection,
        role: Role,
        ex: &Exchange,
        resource: Arc<Resource>,
        ctx: TraceCtx,
    ) -> Result<Span, Skipped> {
        if !ctx.sampled {
            return Err(Skipped::SampledOut);
        }
        let req = &ex.request;
        let kind = if role == Role::Server { SpanKind::Server } else { SpanKind::Client };
        let (path, query) = url::split_target(&req.target);
        let route = self.routes.route(path);
        let method_known = KNOWN_METHODS.contains(&req.method.as_str());
        let method = if method_known { req.method.as_str() } else { "_OTHER" };

        let mut attrs = vec![
            Attr::new("http.request.method", method),
            Attr::new("url.path", path),
            Attr::new("url.scheme", "http"),
            Attr::new("http.route", route.clone()),
            Attr::new("network.protocol.version", if req.version_minor == 0 { "1.0" } else { "1.1" }),
            Attr::new("network.transport", "tcp"),
        ];
        if !method_known {
            attrs.push(Attr::new("http.request.method_original", req.method.clone()));
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            attrs.push(Attr::new("url.query", url::redact_query(q)));
        }
        if let Some(ua) = &req.user_agent {
            attrs.push(Attr::new("user_agent.original", ua.clone()));
        }
        if let Some(peer) = conn.remote {
            attrs.push(Attr::new("network.peer.address", peer.ip().to_canonical().to_string()));
            attrs.push(Attr::new("network.peer.port", i64::from(peer.port())));
        }
        // server.* names the server: the Host header when present, else the
        // socket's server-side address.
        let server_socket = if kind == SpanKind::Server { conn.local } else { conn.remote };
        let (server_host, server_port) = server_endpoint(req.host.as_deref(), server_socket);
        if let Some(host) = &server_host {
            attrs.push(Attr::new("server.address", host.clone()));
        }
        if let Some(port) = server_port {
            attrs.push(Attr::new("server.port", i64::from(port)));
        }
        match kind {
            SpanKind::Server => {
                if let Some(peer) = conn.remote {
                    attrs.push(Attr::new("client.address", peer.ip().to_canonical().to_string()));
                }
            }
            SpanKind::Client => {
                let authority = req.host.clone().or_else(|| conn.remote.map(|a| a.to_string()));
                if let Some(authority) = authority {
                    attrs.push(Attr::new("url.full", url::full_url("http", &authority, &req.target)));
                }
            }
        }
        if let Some(size) = ex.request_body_size.filter(|s| *s > 0) {
            attrs.push(Attr::new("http.request.body.size", size as i64));
        }
        let mut status = SpanStatus::Unset;
        if let Some(resp) = &ex.response {
            attrs.push(Attr::new("http.response.status_code", i64::from(resp.status)));
            if let Some(size) = ex.response_body_size {
                attrs.push(Attr::new("http.response.body.size", size as i64));
            }
            let failed = resp.status >= 500 || (kind == SpanKind::Client && resp.status >= 400);
            if failed {
                attrs.push(Attr::new("error.type", resp.status.to_string()));
                status = SpanStatus::Error { message: String::new() };
            }
        }
        if let Some(err) = ex.error {
            let (error_type, message) = match err {
                ExchangeError::ConnectionReset => ("connection_reset", "connection reset before the response"),
                ExchangeError::ConnectionClosed => ("connection_closed", "connection closed before the response"),
                _ => ("protocol_desync", "lost track of the HTTP stream"),
            };
            if ex.response.is_none() {
                attrs.push(Attr::new("error.type", error_type));
                status = SpanStatus::Error { message: message.to_owned() };
            }
        }
        if !req.complete {
            // The header block was cut by a capture gap: what we report is
            // what we saw, and we say so.
            attrs.push(Attr::new("kspan.partial", true));
        }

        let (start_mono, end_mono) = timing(kind, ex);
        Ok(Span {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: ctx.parent_span_id,
            parent_is_remote: ctx.parent_is_remote,
            trace_state: ctx.trace_state,
            kind,
            name: format!("{method} {route}"),
            start_unix_nanos: self.clock.to_unix_nanos(start_mono),
            end_unix_nanos: self.clock.to_unix_nanos(end_mono.max(start_mono)),
            attributes: attrs,
            status,
            resource,
        })
    }
}

/// Server spans run from the read that returned the request's first byte to
/// the write that handed the response's last byte to the kernel; client
/// spans from the write of the request's first byte to the read that
/// returned the response's last byte.
///
/// The edges are picked by causality, so a server span always nests inside
/// the client span that caused it: the server can read only after the client
/// began writing, and the client can read the last byte only after the
/// server began writing it (its write may return a little after the client
/// already has the bytes, so the server end is the entry of that write).
fn timing(kind: SpanKind, ex: &Exchange) -> (u64, u64) {
    let (start, end) = match kind {
        SpanKind::Server => (ex.request_first.exit_ns, ex.response_last.map(|t| t.enter_ns)),
        SpanKind::Client => (ex.request_first.enter_ns, ex.response_last.map(|t| t.exit_ns)),
    };
    // No response: the span ends when the connection did.
    let end = end.or(ex.closed_ns).unwrap_or(ex.request_last.exit_ns);
    (start, end)
}

fn server_endpoint(host_header: Option<&str>, socket: Option<SocketAddr>) -> (Option<String>, Option<u16>) {
    let socket_port = socket.map(|a| a.port());
    match host_header.filter(|h| !h.is_empty()) {
        Some(host) => {
            let (name, port) = url::split_host_port(host, socket_port.unwrap_or(80));
            (Some(name), Some(port))
        }
        None => (socket.map(|a| a.ip().to_canonical().to_string()), socket_port),
    }
}
