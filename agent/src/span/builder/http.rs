//! HTTP spans (HTTP/1.x and plain HTTP/2), after the stable HTTP semantic
//! conventions.

use std::sync::Arc;

use crate::{
    conntrack::Connection,
    protocol::{
        http1::{Exchange, ExchangeError, KNOWN_METHODS},
        http2::{Http2Error, StreamExchange},
    },
    span::{
        model::{Attr, SpanKind, SpanStatus, Text},
        route::RouteTemplater,
        url,
    },
};

use super::{Timing, network_attrs};

/// What an HTTP span needs, whatever the protocol version, borrowed from
/// the exchange: the span copies only what it keeps.
#[derive(Debug, Clone, Default)]
pub struct HttpView<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub scheme: Text,
    pub authority: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub protocol_version: &'static str,
    pub status: Option<u16>,
    pub request_body_size: Option<u64>,
    pub response_body_size: Option<u64>,
    /// Request headers were cut (capture gap, mid-stream join): reported as
    /// seen, flagged.
    pub partial: bool,
    /// No response: (`error.type`, message).
    pub failure: Option<(&'static str, &'static str)>,
}

pub fn view_http1(ex: &Exchange) -> (HttpView<'_>, Timing) {
    let req = &ex.request;
    let failure = match (ex.response.is_none(), ex.error) {
        (true, Some(ExchangeError::ConnectionReset)) => Some(("connection_reset", "connection reset before the response")),
        (true, Some(ExchangeError::ConnectionClosed)) => Some(("connection_closed", "connection closed before the response")),
        (true, Some(_)) => Some(("protocol_desync", "lost track of the HTTP stream")),
        _ => None,
    };
    let view = HttpView {
        method: &req.method,
        target: &req.target,
        scheme: Text::Static("http"),
        authority: req.host.as_deref(),
        user_agent: req.user_agent.as_deref(),
        protocol_version: if req.version_minor == 0 { "1.0" } else { "1.1" },
        status: ex.response.as_ref().map(|r| r.status),
        request_body_size: ex.request_body_size,
        response_body_size: ex.response.as_ref().and(ex.response_body_size),
        partial: !req.complete,
        failure,
    };
    let timing = Timing {
        request_first: ex.request_first,
        response_last: ex.response_last,
        request_last: ex.request_last,
        closed_ns: ex.closed_ns,
    };
    (view, timing)
}

pub fn view_http2(ex: &StreamExchange) -> HttpView<'_> {
    let req = &ex.request;
    HttpView {
        method: req.method.as_deref().unwrap_or("_OTHER"),
        target: req.path.as_deref().unwrap_or_default(),
        scheme: match req.scheme.as_deref() {
            None | Some("http") => Text::Static("http"),
            Some("https") => Text::Static("https"),
            Some(other) => Text::Owned(other.to_owned()),
        },
        authority: req.authority.as_deref(),
        user_agent: req.user_agent.as_deref(),
        protocol_version: "2",
        status: ex.status,
        request_body_size: Some(ex.request_body_size),
        response_body_size: ex.status.map(|_| ex.response_body_size),
        partial: ex.partial,
        failure: match (ex.status, ex.error) {
            (Some(_), _) | (None, None) => None,
            (None, Some(Http2Error::StreamReset)) => Some(("stream_reset", "stream reset before the response")),
            (None, Some(Http2Error::GoAway)) => Some(("goaway", "connection going away before the response")),
            (None, Some(Http2Error::ConnectionReset)) => Some(("connection_reset", "connection reset before the response")),
            (None, Some(Http2Error::ConnectionClosed)) => Some(("connection_closed", "connection closed before the response")),
            (None, Some(_)) => Some(("protocol_desync", "lost track of the HTTP/2 stream")),
        },
    }
}

/// Span name, attributes and status of an HTTP exchange.
pub fn describe(conn: &Connection, kind: SpanKind, v: &HttpView, routes: &RouteTemplater) -> (String, Vec<Attr>, SpanStatus) {
    let (path, query) = url::split_target(v.target);
    let route = routes.route(path);
    // Others are `_OTHER`.
    let known = KNOWN_METHODS.iter().find(|m| **m == v.method);
    let method = known.copied().unwrap_or("_OTHER");
    let mut name = String::with_capacity(method.len() + 1 + route.len());
    name.push_str(method);
    name.push(' ');
    name.push_str(&route);
    // Without an id in it the route is the path: one copy serves both.
    let path_text: Arc<str> = Arc::from(path);
    let route_text = if *route == *path { Text::Shared(path_text.clone()) } else { Text::Owned(route.into_owned()) };
    let mut attrs = Vec::with_capacity(16);
    attrs.extend([
        Attr::new("http.request.method", method),
        Attr::new("url.path", path_text),
        Attr::new("url.scheme", v.scheme.clone()),
        Attr::new("http.route", route_text),
        Attr::new("network.protocol.version", v.protocol_version),
        Attr::new("network.transport", "tcp"),
    ]);
    if known.is_none() {
        attrs.push(Attr::new("http.request.method_original", v.method.to_owned()));
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        attrs.push(Attr::new("url.query", url::redact_query(q)));
    }
    if let Some(ua) = v.user_agent {
        attrs.push(Attr::new("user_agent.original", ua.to_owned()));
    }
    network_attrs(&mut attrs, conn, kind, v.authority);
    if kind == SpanKind::Client {
        let authority = v.authority.map(str::to_owned).or_else(|| conn.remote.map(|a| a.to_string()));
        if let Some(authority) = authority {
            attrs.push(Attr::new("url.full", url::full_url(&v.scheme, &authority, v.target)));
        }
    }
    if let Some(size) = v.request_body_size.filter(|s| *s > 0) {
        attrs.push(Attr::new("http.request.body.size", size as i64));
    }
    let mut status = SpanStatus::Unset;
    if let Some(code) = v.status {
        attrs.push(Attr::new("http.response.status_code", i64::from(code)));
        if let Some(size) = v.response_body_size {
            attrs.push(Attr::new("http.response.body.size", size as i64));
        }
        // Server spans fail on 5xx only: a 4xx is the client's mistake.
        if code >= 500 || (kind == SpanKind::Client && code >= 400) {
            attrs.push(Attr::new("error.type", code.to_string()));
            status = SpanStatus::Error { message: String::new() };
        }
    } else if let Some((error_type, message)) = v.failure {
        attrs.push(Attr::new("error.type", error_type));
        status = SpanStatus::Error { message: message.to_owned() };
    }
    if v.partial {
        // What we report is what we saw, and we say so.
        attrs.push(Attr::new("kspan.partial", true));
    }
    (name, attrs, status)
}
