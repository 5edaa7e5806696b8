//! Header blocks: httparse does the syntax; this module keeps the few
//! fields spans need and decides body framing.

use std::{borrow::Cow, mem::MaybeUninit};

use super::body::BodyKind;
use super::{RequestHead, ResponseHead};

/// Header slots tried first, on the stack; enough for almost all traffic.
const MAX_HEADERS: usize = 64;
/// Heap slots for the rare bigger head before degrading to `TooLarge`.
const MAX_HEADERS_RETRY: usize = 1024;
/// Largest `Content-Length` accepted; bigger values are what smuggling and
/// fuzzing send, and every mainstream server rejects them too.
const MAX_CONTENT_LENGTH: u64 = i64::MAX as u64;

/// Outcome of parsing bytes that start a header block.
#[derive(Debug)]
pub(super) enum Parsed<T> {
    /// The head is `len` bytes long.
    Complete {
        len: usize,
        head: T,
    },
    Partial,
    /// Not HTTP/1, or framing that cannot be trusted.
    Invalid,
    /// More header lines than `MAX_HEADERS_RETRY`.
    TooManyHeaders,
}

/// A response head plus what only framing needs.
#[derive(Debug)]
pub(super) struct ParsedResponse {
    pub head: ResponseHead,
    /// A `Transfer-Encoding` whose final coding is not `chunked`: the body
    /// runs until close.
    pub unknown_coding: bool,
}

/// Lenient like browsers and proxies: the parser observes traffic that
/// real peers accepted, so rejecting quirks only loses spans.
fn config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .ignore_invalid_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true);
    c
}

/// Header slots httparse fills itself: initialising 64 slots first cost
/// more than parsing a typical head.
type Slot<'b> = MaybeUninit<httparse::Header<'b>>;

/// Parses a request head at the start of `bytes`.
pub(super) fn parse_request(bytes: &[u8]) -> Parsed<RequestHead> {
    let mut stack = [const { Slot::uninit() }; MAX_HEADERS];
    match try_request(bytes, &mut stack) {
        Parsed::TooManyHeaders => {
            let mut heap = vec![Slot::uninit(); retry_slots(bytes)];
            try_request(bytes, &mut heap)
        }
        other => other,
    }
}

/// Parses a response head at the start of `bytes`.
pub(super) fn parse_response(bytes: &[u8]) -> Parsed<ParsedResponse> {
    let mut stack = [const { Slot::uninit() }; MAX_HEADERS];
    match try_response(bytes, &mut stack) {
        Parsed::TooManyHeaders => {
            let mut heap = vec![Slot::uninit(); retry_slots(bytes)];
            try_response(bytes, &mut heap)
        }
        other => other,
    }
}

/// One slot per line is always enough, so the retry cannot fail for a
/// head under the cap.
fn retry_slots(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count().clamp(MAX_HEADERS, MAX_HEADERS_RETRY)
}

fn try_request<'b>(bytes: &'b [u8], slots: &mut [Slot<'b>]) -> Parsed<RequestHead> {
    let mut req = httparse::Request::new(&mut []);
    match config().parse_request_with_uninit_headers(&mut req, bytes, slots) {
        Ok(httparse::Status::Complete(len)) => match request_head(&req, len) {
            Some(head) => Parsed::Complete { len, head },
            None => Parsed::Invalid,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooManyHeaders,
        Err(_) => Parsed::Invalid,
    }
}

fn try_response<'b>(bytes: &'b [u8], slots: &mut [Slot<'b>]) -> Parsed<ParsedResponse> {
    let mut resp = httparse::Response::new(&mut []);
    match config().parse_response_with_uninit_headers(&mut resp, bytes, slots) {
        Ok(httparse::Status::Complete(len)) => match response_head(&resp) {
            Some(head) => Parsed::Complete { len, head },
            None => Parsed::Invalid,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooManyHeaders,
        Err(_) => Parsed::Invalid,
    }
}

fn request_head(req: &httparse::Request<'_, '_>, len: usize) -> Option<RequestHead> {
    let version_minor = req.version?;
    let f = Fields::collect(req.headers)?;
    // A request body that is neither chunked nor length-delimited has no
    // defined end (RFC 9112 §6.3), so the stream cannot be followed.
    if f.coding_seen && !f.chunked {
        return None;
    }
    Some(RequestHead {
        method: method_text(req.method?),
        target: req.path?.to_owned(),
        version_minor,
        connection_close: f.connection_close(version_minor),
        host: f.host,
        user_agent: f.user_agent,
        traceparent: f.traceparent,
        tracestate: f.tracestate,
        content_length: f.content_length,
        chunked: f.chunked,
        expect_continue: f.expect_continue,
        complete: true,
        header_bytes: len,
    })
}

fn response_head(resp: &httparse::Response<'_, '_>) -> Option<ParsedResponse> {
    let version_minor = resp.version?;
    let f = Fields::collect(resp.headers)?;
    let head = ResponseHead {
        status: resp.code?,
        version_minor,
        content_length: f.content_length,
        chunked: f.chunked,
        connection_close: f.connection_close(version_minor),
        complete: true,
    };
    Some(ParsedResponse { head, unknown_coding: f.coding_seen && !f.chunked })
}

/// The known methods without an allocation per request.
fn method_text(method: &str) -> Cow<'static, str> {
    match super::KNOWN_METHODS.iter().find(|m| **m == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_owned()),
    }
}

/// Header values that matter for spans and framing.
#[derive(Default)]
struct Fields {
    host: Option<String>,
    user_agent: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    content_length: Option<u64>,
    coding_seen: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Fields {
    /// `None` when the framing headers contradict themselves.
    fn collect(headers: &[httparse::Header<'_>]) -> Option<Self> {
        let mut f = Self::default();
        for h in headers {
            let name = h.name;
            let value = h.value;
            if name.eq_ignore_ascii_case("content-length") {
                let n = parse_content_length(value)?;
                if f.content_length.is_some_and(|old| old != n) {
                    return None;
                }
                f.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Codings accumulate over headers; only the last one frames the body.
                if let Some(last) = tokens(value).last() {
                    f.coding_seen = true;
                    f.chunked = last.eq_ignore_ascii_case(b"chunked");
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for t in tokens(value) {
                    f.close |= t.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                f.expect_continue |= trim(value).eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case("host") {
                set_first(&mut f.host, value);
            } else if name.eq_ignore_ascii_case("user-agent") {
                set_first(&mut f.user_agent, value);
            } else if name.eq_ignore_ascii_case("traceparent") {
                set_first(&mut f.traceparent, value);
            } else if name.eq_ignore_ascii_case("tracestate") {
                append_list(&mut f.tracestate, value);
            }
        }
        Some(f)
    }

    fn connection_close(&self, version_minor: u8) -> bool {
        self.close || (version_minor == 0 && !self.keep_alive)
    }
}

fn set_first(slot: &mut Option<String>, value: &[u8]) {
    if slot.is_none() {
        *slot = Some(text(value));
    }
}

fn append_list(slot: &mut Option<String>, value: &[u8]) {
    let value = text(value);
    match slot {
        Some(s) => {
            s.push(',');
            s.push_str(&value);
        }
        None => *slot = Some(value),
    }
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(trim(value)).into_owned()
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Comma-separated list elements, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits, or a list of identical digit strings
/// (RFC 9110 §8.6). Overflow and anything above `MAX_CONTENT_LENGTH` is invalid.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for t in value.split(|&b| b == b',').map(trim) {
        let n = parse_decimal(t)?;
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n <= MAX_CONTENT_LENGTH).then_some(n)
}

/// How a request body is framed; requests never run until close.
pub(super) fn request_body(head: &RequestHead) -> BodyKind {
    if head.chunked {
        BodyKind::Chunked
    } else {
        match head.content_length {
            Some(n) if n > 0 => BodyKind::Length(n),
            _ => BodyKind::None,
        }
    }
}

/// How a final response body is framed (RFC 9112 §6.3).
pub(super) fn response_body(resp: &ParsedResponse, request_was_head: bool) -> BodyKind {
    let status = resp.head.status;
    if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyKind::None
    } else if resp.head.chunked {
        BodyKind::Chunked
    } else if resp.unknown_coding {
        BodyKind::UntilClose
    } else {
        match resp.head.content_length {
            Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    }
}

/// Best-effort head from a block cut short: only complete lines count, so a
/// value cut mid-way is dropped rather than reported shortened.
fn parse_cut<T>(buf: &[u8], parse: fn(&[u8]) -> Parsed<T>) -> Option<T> {
    let mut end = buf.iter().rposition(|&b| b == b'\n')? + 1;
    // Stay within the heap retry so a huge cut head still yields its first lines.
    if let Some((i, _)) = buf[..end].iter().enumerate().filter(|&(_, &b)| b == b'\n').nth(MAX_HEADERS_RETRY - 1) {
        end = i + 1;
    }
    let mut block = Vec::with_capacity(end + 2);
    block.extend_from_slice(&buf[..end]);
    block.extend_from_slice(b"\r\n");
    match parse(&block) {
        Parsed::Complete { head, .. } => Some(head),
        _ => None,
    }
}

/// A request head from a block cut short (`complete: false`).
pub(super) fn cut_request(buf: &[u8]) -> Option<RequestHead> {
    let mut head = parse_cut(buf, parse_request)?;
    head.complete = false;
    head.header_bytes = buf.len();
    Some(head)
}

/// A response head from a block cut short (`complete: false`).
pub(super) fn cut_response(buf: &[u8]) -> Option<ParsedResponse> {
    let mut parsed = parse_cut(buf, parse_response)?;
    parsed.head.complete = false;
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(bytes: &[u8]) -> RequestHead {
        match parse_request(bytes) {
            Parsed::Complete { head, len } => {
                assert_eq!(len, head.header_bytes);
                head
            }
            other => panic!("not complete: {other:?}"),
        }
    }

    fn resp(bytes: &[u8]) -> ParsedResponse {
        match parse_response(bytes) {
            Parsed::Complete { head, .. } => head,
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn request_fields() {
        let h = req(b"POST /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\
            traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
            tracestate: a=1\r\ntracestate: b=2\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello");
        assert_eq!(h.method, "POST");
        assert_eq!(h.target, "/a?b=1");
        assert_eq!(h.version_minor, 1);
        assert_eq!(h.host.as_deref(), Some("example.com"));
        assert_eq!(h.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(h.traceparent.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(h.tracestate.as_deref(), Some("a=1,b=2"));
        assert_eq!(h.content_length, Some(5));
        assert!(h.expect_continue && h.complete && !h.chunked && !h.connection_close);
        assert_eq!(h.header_bytes, 208);
        assert_eq!(request_body(&h), BodyKind::Length(5));
    }

    #[test]
    fn connection_semantics() {
        assert!(req(b"GET / HTTP/1.0\r\n\r\n").connection_close);
        assert!(!req(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").connection_close);
        assert!(req(b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n").connection_close);
        assert!(!req(b"GET / HTTP/1.1\r\n\r\n").connection_close);
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"7, 7"), Some(7));
        assert_eq!(parse_content_length(b"7, 8"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b"+1"), None);
        assert_eq!(parse_content_length(b"9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(parse_content_length(b"9223372036854775808"), None);
        assert_eq!(parse_content_length(b"99999999999999999999999"), None);
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Parsed::Invalid
        ));
    }

    #[test]
    fn transfer_encoding_rules() {
        let h = req(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert!(h.chunked);
        assert_eq!(request_body(&h), BodyKind::Chunked);
        // Chunked wins over Content-Length.
        let h = req(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(request_body(&h), BodyKind::Chunked);
        assert!(matches!(parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), Parsed::Invalid));
        let r = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(response_body(&r, false), BodyKind::UntilClose);
    }

    #[test]
    fn response_framing() {
        let body = |raw: &[u8], head_req| response_body(&resp(raw), head_req);
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false), BodyKind::Length(3));
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true), BodyKind::None);
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false), BodyKind::None);
        assert_eq!(body(b"HTTP/1.1 204 No Content\r\n\r\n", false), BodyKind::None);
        assert_eq!(body(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false), BodyKind::None);
        assert_eq!(body(b"HTTP/1.1 100 Continue\r\n\r\n", false), BodyKind::None);
        assert_eq!(body(b"HTTP/1.0 200 OK\r\n\r\n", false), BodyKind::UntilClose);
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), BodyKind::Chunked);
        let r = resp(b"HTTP/1.1 503\r\nConnection: close\r\n\r\n");
        assert_eq!(r.head.status, 503);
        assert!(r.head.connection_close);
    }

    #[test]
    fn not_http() {
        assert!(matches!(parse_request(b"\x16\x03\x01\x02\x00\x01"), Parsed::Invalid));
        assert!(matches!(parse_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Parsed::Invalid));
        assert!(matches!(parse_response(b"SSH-2.0-OpenSSH\r\n"), Parsed::Invalid));
        assert!(matches!(parse_request(b"GET / HT"), Parsed::Partial));
    }

    #[test]
    fn many_headers_use_heap_then_degrade() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            raw.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"Host: late\r\n\r\n");
        assert_eq!(req(&raw).host.as_deref(), Some("late"));
        let mut huge = b"GET / HTTP/1.1\r\nHost: early\r\n".to_vec();
        for _ in 0..MAX_HEADERS_RETRY + 10 {
            huge.extend_from_slice(b"a: b\r\n");
        }
        huge.extend_from_slice(b"\r\n");
        assert!(matches!(parse_request(&huge), Parsed::TooManyHeaders));
        let cut = cut_request(&huge).expect("first lines parse");
        assert_eq!(cut.host.as_deref(), Some("early"));
        assert!(!cut.complete);
    }

    #[test]
    fn cut_heads_keep_only_complete_lines() {
        let h = cut_request(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12").expect("head");
        assert_eq!(h.host.as_deref(), Some("a"));
        assert_eq!(h.content_length, None);
        assert!(!h.complete);
        assert_eq!(h.header_bytes, 44);
        assert!(cut_request(b"GET /only-part-of-the-targ").is_none());
        let r = cut_response(b"HTTP/1.1 404 Not Found\r\nContent-Le").expect("head");
        assert_eq!(r.head.status, 404);
        assert!(!r.head.complete);
    }
}
