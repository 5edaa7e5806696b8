//! HTTP/2 over cleartext TCP (h2c, prior knowledge) on captured socket
//! bytes: frames are reassembled per direction, header blocks decoded with
//! HPACK, DATA only counted, and each stream becomes one
//! [`StreamExchange`], with gRPC status taken from trailers.
//!
//! Captured bytes are lossy, and kspan may join a connection long after its
//! preface. The parser never invents data: a header field that refers to
//! HPACK state it never saw is reported as unknown (`complete: false`), a
//! capture gap marks the streams it may have hidden data from, and framing
//! resynchronises on the next chunk that starts with a plausible frame.

mod frame;
mod header;
mod hpack;
mod huffman;
mod session;
mod stream;
#[cfg(test)]
mod tests;

pub use crate::protocol::http1::{Chunk, Ts};
pub use session::Http2Session;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest frame payload a peer may send before it learns otherwise from
/// SETTINGS_MAX_FRAME_SIZE.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// Largest frame payload the frame format can express (24-bit length).
pub const MAX_FRAME_SIZE_LIMIT: u32 = (1 << 24) - 1;

/// Cheap detection on a connection's first client bytes: the preface, or a
/// non-empty start of it if `prefix` is short (a short capture cannot rule
/// it out).
pub fn looks_like_preface(prefix: &[u8]) -> bool {
    let n = prefix.len().min(PREFACE.len());
    n > 0 && prefix[..n] == PREFACE[..n]
}

/// Heuristic for joining a connection mid-stream: does `data` start with a
/// plausible frame header (length <= 16384, known type 0..=9, flags and
/// stream id allowed for that type, stream frames on odd client-initiated
/// streams)? Every further frame header wholly inside `data` must be
/// plausible too. Used only for connections that predate kspan, and to
/// resynchronise after a capture gap.
pub fn looks_like_frames(data: &[u8]) -> bool {
    header::plausible_frames(data, DEFAULT_MAX_FRAME_SIZE)
}

/// What the parser reports to the span builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http2Event {
    /// Request HEADERS (+CONTINUATION) of a new stream decoded. Emitted
    /// before the response exists, so the trace linker knows the stream is
    /// in flight.
    StreamStarted {
        /// Client-initiated (odd) stream id.
        stream_id: u32,
        /// The decoded request header fields kspan reports.
        request: RequestHeaders,
        /// Syscall carrying the first byte of the request HEADERS frame.
        first: Ts,
    },
    /// Stream finished (END_STREAM both ways, RST_STREAM, GOAWAY beyond
    /// the last processed id, eviction, or the connection ended). Emitted
    /// exactly once for every `StreamStarted`.
    Exchange(StreamExchange),
}

/// The request header fields kspan reports. Strings are lossy UTF-8 of the
/// decoded bytes; names are matched case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    /// `:method`.
    pub method: Option<String>,
    /// `:scheme`.
    pub scheme: Option<String>,
    /// `:authority`, or `host` when `:authority` is absent.
    pub authority: Option<String>,
    /// `:path` (raw, query included).
    pub path: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// First `traceparent`, unvalidated.
    pub traceparent: Option<String>,
    /// All `tracestate` fields joined with `,`, unvalidated.
    pub tracestate: Option<String>,
    /// `grpc-timeout`, raw (e.g. `100m`).
    pub grpc_timeout: Option<String>,
    /// False when some header fields could not be decoded: kspan joined
    /// mid-stream and they referenced dynamic-table entries it never saw,
    /// or a capture gap / the size bound cut the block. What is known is
    /// real; unknown fields are `None`.
    pub complete: bool,
}

impl RequestHeaders {
    /// The request's content type marks it as gRPC (`application/grpc`,
    /// `application/grpc+proto`, ...).
    pub fn is_grpc(&self) -> bool {
        self.content_type.as_deref().is_some_and(is_grpc_content_type)
    }
}

/// `content-type` starts with `application/grpc` (case-insensitively).
pub(crate) fn is_grpc_content_type(ct: &str) -> bool {
    const GRPC: &str = "application/grpc";
    ct.get(..GRPC.len()).is_some_and(|p| p.eq_ignore_ascii_case(GRPC))
}

/// Why a stream did not end normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Http2Error {
    /// RST_STREAM (from either side) ended the stream before it completed.
    #[error("stream reset")]
    StreamReset,
    /// The server's GOAWAY said this stream was never processed.
    #[error("stream refused by GOAWAY")]
    GoAway,
    /// The connection closed before the stream completed.
    #[error("connection closed before the stream completed")]
    ConnectionClosed,
    /// The connection was reset before the stream completed.
    #[error("connection reset before the stream completed")]
    ConnectionReset,
    /// kspan joined mid-stream and some request or response header fields
    /// referenced HPACK state it never saw: the span must be flagged, not
    /// guessed.
    #[error("joined mid-stream: header fields incomplete")]
    Partial,
    /// A capture gap hid part of the stream (a header block or frames).
    /// Fields present are real; sizes and end times are lower bounds. A
    /// capture artefact, not an HTTP failure.
    #[error("capture incomplete: part of the stream was not captured")]
    Truncated,
    /// The connection broke the HTTP/2 framing rules; the session stopped.
    #[error("HTTP/2 protocol violation on the connection")]
    Protocol,
    /// Too many concurrent streams: kspan stopped tracking this one to bound
    /// memory.
    #[error("stream evicted: too many concurrent streams")]
    Evicted,
}

/// One stream: its request, its response, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamExchange {
    /// Client-initiated (odd) stream id.
    pub stream_id: u32,
    /// The request header fields (as in `StreamStarted`).
    pub request: RequestHeaders,
    /// `:status` of the final (non-1xx) response HEADERS.
    pub status: Option<u16>,
    /// `content-type` of the final response HEADERS.
    pub response_content_type: Option<String>,
    /// `grpc-status` from trailers or a trailers-only response (gRPC
    /// streams only).
    pub grpc_status: Option<u32>,
    /// `grpc-message`, percent-decoded (gRPC streams only).
    pub grpc_message: Option<String>,
    /// Syscall carrying the first byte of the request HEADERS.
    pub request_first: Ts,
    /// Syscall carrying the end of the last request frame seen (the
    /// END_STREAM one when the request completed).
    pub request_last: Ts,
    /// Syscall carrying the first byte of the first response frame
    /// (interim 1xx HEADERS included).
    pub response_first: Option<Ts>,
    /// Syscall carrying the end of the last response frame seen.
    pub response_last: Option<Ts>,
    /// Request DATA payload bytes (padding excluded).
    pub request_body_size: u64,
    /// Response DATA payload bytes (padding excluded).
    pub response_body_size: u64,
    /// RST_STREAM error code, from either side.
    pub reset: Option<u32>,
    /// Why the stream did not end normally.
    pub error: Option<Http2Error>,
    /// The request header fields are incomplete (mid-stream join, gap or
    /// size bound): the span must be flagged, not guessed.
    pub partial: bool,
    /// Timestamp passed to `on_close` when the close ended this stream: the
    /// best end time for a request that got no response.
    pub closed_ns: Option<u64>,
}

impl StreamExchange {
    /// The request or the response content type marks the stream as gRPC.
    pub fn is_grpc(&self) -> bool {
        self.request.is_grpc() || self.response_content_type.as_deref().is_some_and(is_grpc_content_type)
    }
}

/// Timestamps of a chunk (the http1 helpers are private to that module).
fn chunk_ts(chunk: &Chunk<'_>) -> Ts {
    Ts { enter_ns: chunk.enter_ns, exit_ns: chunk.exit_ns }
}

/// Uncaptured bytes after `data`; a `size` below `data.len()` would be a
/// capture bug, and trusting `data` is then the only safe reading.
fn chunk_gap(chunk: &Chunk<'_>) -> u64 {
    chunk.size.saturating_sub(chunk.data.len() as u64)
}
