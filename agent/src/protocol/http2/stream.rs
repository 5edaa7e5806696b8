//! Per-stream state and the header fields kspan keeps from a block.

use super::hpack::Field;
use super::{Http2Error, RequestHeaders, StreamExchange, Ts, is_grpc_content_type};

/// Longest `:path` kept; longer ones are cut (on a char boundary). Servers
/// commonly reject request lines beyond 8 KiB anyway.
const MAX_PATH: usize = 8 * 1024;

/// Longest value kept for other reported fields (W3C caps tracestate at
/// 512 characters). With `MAX_PATH` this bounds a stream's strings to
/// ~17 KiB whatever its header block repeats.
const MAX_VALUE: usize = 1024;

/// The response fields kspan keeps from one header block.
#[derive(Debug, Default)]
pub(super) struct ResponseFields {
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    /// Some fields were unknown (see `RequestHeaders::complete`).
    pub complete: bool,
}

/// Collects the reported fields of a request block.
pub(super) fn request_field(req: &mut RequestHeaders, host: &mut Option<String>, field: Field<'_>) {
    let Field::Known { name, value } = field else {
        req.complete = false;
        return;
    };
    let slot = match_name(name, &[":method", ":scheme", ":authority", ":path", "content-type", "user-agent"]);
    let target = match slot {
        Some(0) => &mut req.method,
        Some(1) => &mut req.scheme,
        Some(2) => &mut req.authority,
        Some(3) => &mut req.path,
        Some(4) => &mut req.content_type,
        Some(5) => &mut req.user_agent,
        _ => match match_name(name, &["traceparent", "grpc-timeout", "host", "tracestate"]) {
            Some(0) => &mut req.traceparent,
            Some(1) => &mut req.grpc_timeout,
            Some(2) => host,
            Some(3) => {
                // W3C: several tracestate fields combine with ','.
                let v = text(value, MAX_VALUE);
                match &mut req.tracestate {
                    Some(t) if t.len() + v.len() < MAX_VALUE => {
                        t.push(',');
                        t.push_str(&v);
                    }
                    Some(_) => {}
                    None => req.tracestate = Some(v),
                }
                return;
            }
            _ => return,
        },
    };
    // First occurrence wins, as for HTTP/1.
    if target.is_none() {
        *target = Some(text(value, if slot == Some(3) { MAX_PATH } else { MAX_VALUE }));
    }
}

/// Collects the reported fields of a response block (headers or trailers).
pub(super) fn response_field(resp: &mut ResponseFields, field: Field<'_>) {
    let Field::Known { name, value } = field else {
        resp.complete = false;
        return;
    };
    match match_name(name, &[":status", "content-type", "grpc-status", "grpc-message"]) {
        Some(0) if resp.status.is_none() => resp.status = parse_status(value),
        Some(1) if resp.content_type.is_none() => resp.content_type = Some(text(value, MAX_VALUE)),
        Some(2) if resp.grpc_status.is_none() => {
            resp.grpc_status = std::str::from_utf8(value).ok().and_then(|s| s.trim().parse().ok());
        }
        Some(3) if resp.grpc_message.is_none() => resp.grpc_message = Some(percent_decode(value)),
        _ => {}
    }
}

/// Index in `names` of `name`, compared case-insensitively (HTTP/2 requires
/// lowercase, but a lenient peer is no reason to miss a field).
fn match_name(name: &[u8], names: &[&str]) -> Option<usize> {
    names.iter().position(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

fn parse_status(v: &[u8]) -> Option<u16> {
    match v {
        [a, b, c] if v.iter().all(u8::is_ascii_digit) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Lossy UTF-8, cut to at most `max` bytes.
fn text(v: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(&v[..v.len().min(max)]).into_owned();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// gRPC percent-encoding (`%XX`); malformed escapes are kept verbatim.
fn percent_decode(v: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && let (Some(h), Some(l)) = (v.get(i + 1).and_then(|&b| hex(b)), v.get(i + 2).and_then(|&b| hex(b)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    text(&out, MAX_VALUE)
}

/// A tracked stream (its request HEADERS was seen).
#[derive(Debug)]
pub(super) struct Stream {
    pub request: RequestHeaders,
    pub req_first: Ts,
    pub req_last: Ts,
    pub req_ended: bool,
    pub req_body: u64,
    pub resp_first: Option<Ts>,
    pub resp_last: Option<Ts>,
    /// The final (non-1xx) response HEADERS was seen.
    pub resp_final: bool,
    pub resp_ended: bool,
    pub resp_body: u64,
    pub status: Option<u16>,
    pub resp_content_type: Option<String>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    pub reset: Option<u32>,
    /// A gap (or lost sync) may have hidden frames of this stream.
    pub truncated: bool,
    /// Response header fields were unknown (mid-stream join).
    pub resp_partial: bool,
    /// The request direction lost bytes after this stream started, so its
    /// END_STREAM may never be seen.
    pub req_lost: bool,
}

impl Stream {
    pub(super) fn new(request: RequestHeaders, first: Ts, last: Ts) -> Self {
        Self {
            request,
            req_first: first,
            req_last: last,
            req_ended: false,
            req_body: 0,
            resp_first: None,
            resp_last: None,
            resp_final: false,
            resp_ended: false,
            resp_body: 0,
            status: None,
            resp_content_type: None,
            grpc_status: None,
            grpc_message: None,
            reset: None,
            truncated: false,
            resp_partial: false,
            req_lost: false,
        }
    }

    /// Applies a response header block: the final headers, an interim 1xx,
    /// or trailers. `end_stream` marks trailers or a trailers-only response.
    pub(super) fn response_headers(&mut self, f: ResponseFields, end_stream: bool) {
        self.resp_partial |= !f.complete;
        let grpc_fields = |s: &mut Self, f: &ResponseFields| {
            if f.grpc_status.is_some() {
                s.grpc_status = f.grpc_status;
                s.grpc_message = f.grpc_message.clone();
            }
        };
        if self.resp_final {
            // Trailers.
            grpc_fields(self, &f);
            return;
        }
        match f.status {
            Some(s) if (100..200).contains(&s) => {} // interim
            // Without a known status (mid-stream, or malformed) the block is
            // still the response head: later blocks are trailers.
            status => {
                self.resp_final = true;
                self.status = status;
                self.resp_content_type = f.content_type.clone();
                if end_stream {
                    grpc_fields(self, &f);
                }
            }
        }
    }

    /// The stream is done unless a side still has to end.
    pub(super) fn done(&self) -> bool {
        self.resp_ended && (self.req_ended || self.req_lost)
    }

    /// `error` is why the stream ended early, if it did.
    pub(super) fn into_exchange(
        self,
        stream_id: u32,
        error: Option<Http2Error>,
        closed_ns: Option<u64>,
    ) -> StreamExchange {
        let partial = !self.request.complete;
        let error = error.or(if self.truncated {
            Some(Http2Error::Truncated)
        } else if partial || self.resp_partial {
            Some(Http2Error::Partial)
        } else {
            None
        });
        let grpc = self.request.is_grpc() || self.resp_content_type.as_deref().is_some_and(is_grpc_content_type);
        StreamExchange {
            stream_id,
            request: self.request,
            status: self.status,
            response_content_type: self.resp_content_type,
            grpc_status: if grpc { self.grpc_status } else { None },
            grpc_message: if grpc { self.grpc_message } else { None },
            request_first: self.req_first,
            request_last: self.req_last,
            response_first: self.resp_first,
            response_last: self.resp_last,
            request_body_size: self.req_body,
            response_body_size: self.resp_body,
            reset: self.reset,
            error,
            partial,
            closed_ns,
        }
    }
}
