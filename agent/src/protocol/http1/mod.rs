//! HTTP/1.x on captured socket bytes: header blocks are parsed, bodies are
//! only counted, and each request is paired with its response (FIFO, so
//! pipelining works) into an [`Exchange`].
//!
//! Captured bytes are lossy: the kernel side may copy only a prefix of what
//! a syscall moved (a *gap*). The parser never invents data to cover a gap:
//! it reports what it saw (`complete: false`), flags the exchange, and
//! resynchronises on the next chunk that starts like a message.

use std::{borrow::Cow, sync::Arc};

mod body;
mod head;
mod headbuf;
mod session;
#[cfg(test)]
mod tests;

pub use session::Http1Session;

/// The request methods of RFC 9110 and PATCH (RFC 5789): those the HTTP
/// semantic conventions name, and those parsed heads keep without copying.
pub const KNOWN_METHODS: [&str; 9] = ["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"];

/// Bytes captured from one syscall on one direction of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Bytes captured (a prefix of what the syscall moved).
    pub data: &'a [u8],
    /// Bytes the syscall actually moved. `size > data.len()` means the tail
    /// was not captured: a gap of `size - data.len()` unknown bytes.
    pub size: u64,
    /// Monotonic ns at syscall entry.
    pub enter_ns: u64,
    /// Monotonic ns at syscall exit.
    pub exit_ns: u64,
}

impl Chunk<'_> {
    fn ts(&self) -> Ts {
        Ts { enter_ns: self.enter_ns, exit_ns: self.exit_ns }
    }

    /// Uncaptured bytes after `data`. A `size` below `data.len()` would be a
    /// capture bug; trusting `data` then is the only safe reading.
    fn gap(&self) -> u64 {
        self.size.saturating_sub(self.data.len() as u64)
    }
}

/// Timestamps of one syscall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ts {
    /// Monotonic ns at syscall entry.
    pub enter_ns: u64,
    /// Monotonic ns at syscall exit.
    pub exit_ns: u64,
}

/// What the parser reports to the span builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http1Event {
    /// A request's header block has been parsed. Emitted before the response
    /// exists, because the trace linker needs to know a request is in flight.
    /// `seq` numbers requests on this connection from 0.
    RequestStarted {
        /// Sequence number of the request on this connection.
        seq: u64,
        /// The parsed request head, shared with the exchange that follows.
        head: Arc<RequestHead>,
        /// Syscall carrying the first byte of the request.
        first: Ts,
    },
    /// A request and its response are done (or failed). Emitted once per
    /// request, in `seq` order.
    Exchange(Exchange),
}

/// A request header block. Strings are lossy UTF-8 of the wire bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token, e.g. `GET`.
    pub method: Cow<'static, str>,
    /// Raw request-target (origin-form, absolute-form, `*` or authority).
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version_minor: u8,
    /// `Host` header.
    pub host: Option<String>,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// First `traceparent` header, unvalidated.
    pub traceparent: Option<String>,
    /// All `tracestate` headers joined with `,` (the W3C combining rule), unvalidated.
    pub tracestate: Option<String>,
    /// Valid `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// The final transfer coding is `chunked`.
    pub chunked: bool,
    /// The connection ends after this exchange (`Connection: close`, or
    /// HTTP/1.0 without `keep-alive`).
    pub connection_close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// False when a capture gap or the size bound cut the head: the fields
    /// are only those of the complete lines seen.
    pub complete: bool,
    /// Bytes of the header block (what was seen, when incomplete).
    pub header_bytes: usize,
}

/// A final response header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version_minor: u8,
    /// Valid `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// The final transfer coding is `chunked`.
    pub chunked: bool,
    /// The connection ends after this response.
    pub connection_close: bool,
    /// False when a capture gap or the size bound cut the head.
    pub complete: bool,
}

/// Why an exchange did not end normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The connection was reset before the response completed.
    #[error("connection reset before the response completed")]
    ConnectionReset,
    /// The connection was closed before the response completed.
    #[error("connection closed before the response completed")]
    ConnectionClosed,
    /// A capture gap hid part of the exchange. Fields present are real but
    /// may be incomplete, and end timestamps are lower bounds. This is a
    /// capture artefact, not an HTTP failure.
    #[error("capture incomplete: part of the exchange was not captured")]
    Truncated,
    /// The parser lost its place in the stream (a gap or malformed framing
    /// while several requests were in flight): the response may belong to
    /// another request, so its fields should not be trusted.
    #[error("lost sync with the HTTP/1 stream")]
    Desync,
}

/// One request with its response, or the reason it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Sequence number of the request on this connection (as in `RequestStarted`).
    pub seq: u64,
    /// The request head.
    pub request: Arc<RequestHead>,
    /// The final response head; `None` when the connection ended first or
    /// the response head was not captured.
    pub response: Option<ResponseHead>,
    /// Syscall carrying the first byte of the request.
    pub request_first: Ts,
    /// Syscall carrying the last byte of the request seen (body included).
    pub request_last: Ts,
    /// Syscall carrying the first response byte (interim 1xx responses included).
    pub response_first: Option<Ts>,
    /// Syscall carrying the last response byte.
    pub response_last: Option<Ts>,
    /// Request body bytes (decoded size for chunked), when known.
    pub request_body_size: Option<u64>,
    /// Response body bytes (decoded size for chunked), when known.
    pub response_body_size: Option<u64>,
    /// Why the exchange did not end normally.
    pub error: Option<ExchangeError>,
    /// Timestamp passed to `on_close` when the close ended this exchange:
    /// the best end time for a request that got no response.
    pub closed_ns: Option<u64>,
}

/// Methods recognised when detecting the protocol and resynchronising.
const METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

const RESPONSE_PREFIXES: [&[u8]; 2] = [b"HTTP/1.1 ", b"HTTP/1.0 "];

/// Whether `prefix` starts with `token`, or is a non-empty start of it
/// (a short capture cannot rule the token out).
fn starts_like(prefix: &[u8], token: &[u8]) -> bool {
    let n = prefix.len().min(token.len());
    n > 0 && prefix[..n] == token[..n]
}

/// Cheap detection on a connection's first client bytes: a known method
/// followed by a space, or a non-empty start of one if `prefix` is short.
pub fn looks_like_request(prefix: &[u8]) -> bool {
    METHODS.iter().any(|m| starts_like(prefix, m))
}

/// Cheap detection on a connection's first server bytes: `HTTP/1.0 ` or
/// `HTTP/1.1 `, or a non-empty start of one if `prefix` is short.
pub fn looks_like_response(prefix: &[u8]) -> bool {
    RESPONSE_PREFIXES.iter().any(|p| starts_like(prefix, p))
}
