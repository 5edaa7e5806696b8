//! Tests: byte-exact fixtures built with the tiny frame and HPACK encoders
//! below, fed whole, split at every offset, with gaps, closes and
//! pseudo-random garbage.

mod frames;
mod fuzz;
mod hpack;
mod midstream;
mod session;
mod streams;

use super::huffman::CODES;
use super::*;

// ---- frame encoding ----

pub(super) use super::header::{
    CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PADDED, PING, PRIORITY, PRIORITY_FLAG as PRIO,
    PUSH_PROMISE, RST_STREAM, SETTINGS, WINDOW_UPDATE,
};

/// One frame: 9-byte header + payload.
pub(super) fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HEADERS with END_HEADERS (plus `flags`).
pub(super) fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags | END_HEADERS, stream, block)
}

/// DATA carrying `len` bytes of `b'x'`.
pub(super) fn data(stream: u32, flags: u8, len: usize) -> Vec<u8> {
    frame(DATA, flags, stream, &vec![b'x'; len])
}

pub(super) fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for &(id, v) in entries {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

pub(super) fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, 0x1, 0, &[])
}

pub(super) fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub(super) fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut p = last.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(b"debug");
    frame(GOAWAY, 0, 0, &p)
}

pub(super) fn ping() -> Vec<u8> {
    frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8])
}

pub(super) fn window_update(stream: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &65_535u32.to_be_bytes())
}

// ---- HPACK encoding ----

/// HPACK integer with an `n`-bit prefix; `flags` fills the high bits.
pub(super) fn hint(flags: u8, n: u8, v: u32) -> Vec<u8> {
    let max = (1u32 << n) - 1;
    if v < max {
        return vec![flags | v as u8];
    }
    let mut out = vec![flags | max as u8];
    let mut v = v - max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
    out
}

/// Huffman encoding (RFC 7541 Appendix B), padded with ones.
pub(super) fn huffman(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in s {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
    out
}

/// String literal, Huffman-coded or raw.
pub(super) fn hstr(s: &str, huff: bool) -> Vec<u8> {
    if huff {
        let h = huffman(s.as_bytes());
        let mut out = hint(0x80, 7, h.len() as u32);
        out.extend(h);
        out
    } else {
        let mut out = hint(0, 7, s.len() as u32);
        out.extend_from_slice(s.as_bytes());
        out
    }
}

/// HPACK block builder.
#[derive(Default, Clone)]
pub(super) struct Hb(pub Vec<u8>);

impl Hb {
    pub fn new() -> Self {
        Self::default()
    }
    /// Indexed field (§6.1).
    pub fn idx(mut self, i: u32) -> Self {
        self.0.extend(hint(0x80, 7, i));
        self
    }
    /// Literal with incremental indexing, new name.
    pub fn inc(mut self, name: &str, value: &str, huff: bool) -> Self {
        self.0.push(0x40);
        self.0.extend(hstr(name, huff));
        self.0.extend(hstr(value, huff));
        self
    }
    /// Literal with incremental indexing, indexed name.
    pub fn inc_i(mut self, name_idx: u32, value: &str, huff: bool) -> Self {
        self.0.extend(hint(0x40, 6, name_idx));
        self.0.extend(hstr(value, huff));
        self
    }
    /// Literal without indexing, new name.
    pub fn lit(mut self, name: &str, value: &str, huff: bool) -> Self {
        self.0.push(0x00);
        self.0.extend(hstr(name, huff));
        self.0.extend(hstr(value, huff));
        self
    }
    /// Literal without indexing, indexed name.
    pub fn lit_i(mut self, name_idx: u32, value: &str, huff: bool) -> Self {
        self.0.extend(hint(0x00, 4, name_idx));
        self.0.extend(hstr(value, huff));
        self
    }
    /// Literal never indexed, indexed name.
    pub fn never_i(mut self, name_idx: u32, value: &str) -> Self {
        self.0.extend(hint(0x10, 4, name_idx));
        self.0.extend(hstr(value, false));
        self
    }
    /// Dynamic table size update (§6.3).
    pub fn size(mut self, n: u32) -> Self {
        self.0.extend(hint(0x20, 5, n));
        self
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `GET {path}` on `http://example.com`, all static/literal-without-indexing.
pub(super) fn get_block(path: &str) -> Vec<u8> {
    Hb::new().idx(2).idx(6).lit_i(4, path, false).lit_i(1, "example.com", false).0
}

/// A gRPC request block (POST, content-type application/grpc, te trailers).
pub(super) fn grpc_block(path: &str) -> Vec<u8> {
    Hb::new()
        .idx(3)
        .idx(6)
        .lit_i(4, path, true)
        .lit_i(1, "svc:50051", false)
        .lit_i(31, "application/grpc", false)
        .lit("te", "trailers", false)
        .lit("grpc-timeout", "100m", false)
        .0
}

/// `:status {code}` (static index when there is one) plus an optional content-type.
pub(super) fn status_block(code: u16, content_type: Option<&str>) -> Vec<u8> {
    let mut b = match code {
        200 => Hb::new().idx(8),
        204 => Hb::new().idx(9),
        404 => Hb::new().idx(13),
        500 => Hb::new().idx(14),
        c => Hb::new().lit_i(8, &c.to_string(), false),
    };
    if let Some(ct) = content_type {
        b = b.lit_i(31, ct, false);
    }
    b.0
}

/// gRPC trailers.
pub(super) fn trailers_block(status: u32, message: Option<&str>) -> Vec<u8> {
    let mut b = Hb::new().lit("grpc-status", &status.to_string(), false);
    if let Some(m) = message {
        b = b.lit("grpc-message", m, false);
    }
    b.0
}

// ---- session driver ----

/// Drives a session with increasing timestamps (call `n` has enter `10n`,
/// exit `10n + 5`) and records every event.
pub(super) struct Wire {
    pub s: Http2Session,
    pub t: u64,
    pub events: Vec<Http2Event>,
}

impl Wire {
    pub fn new(mid_stream: bool) -> Self {
        Self { s: Http2Session::new(mid_stream), t: 0, events: Vec::new() }
    }

    /// A fresh connection after the preface and both SETTINGS exchanges.
    pub fn started() -> Self {
        let mut w = Self::new(false);
        let mut c = PREFACE.to_vec();
        c.extend(settings(&[]));
        w.client(&c).server(&[settings(&[]), settings_ack()].concat()).client(&settings_ack());
        w
    }

    fn next_ts(&mut self) -> (u64, u64) {
        self.t += 10;
        (self.t, self.t + 5)
    }

    pub fn client(&mut self, data: &[u8]) -> &mut Self {
        self.client_gap(data, 0)
    }

    pub fn server(&mut self, data: &[u8]) -> &mut Self {
        self.server_gap(data, 0)
    }

    /// Client chunk of which `missing` trailing bytes were not captured.
    pub fn client_gap(&mut self, data: &[u8], missing: u64) -> &mut Self {
        let (enter_ns, exit_ns) = self.next_ts();
        let c = Chunk { data, size: data.len() as u64 + missing, enter_ns, exit_ns };
        let ev = self.s.on_client_bytes(&c);
        self.events.extend(ev);
        self
    }

    pub fn server_gap(&mut self, data: &[u8], missing: u64) -> &mut Self {
        let (enter_ns, exit_ns) = self.next_ts();
        let c = Chunk { data, size: data.len() as u64 + missing, enter_ns, exit_ns };
        let ev = self.s.on_server_bytes(&c);
        self.events.extend(ev);
        self
    }

    pub fn close(&mut self, reset: bool) -> &mut Self {
        self.t += 10;
        let ev = self.s.on_close(self.t, reset);
        self.events.extend(ev);
        self
    }

    pub fn exchanges(&self) -> Vec<StreamExchange> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Http2Event::Exchange(x) => Some(x.clone()),
                Http2Event::StreamStarted { .. } => None,
            })
            .collect()
    }

    pub fn started_streams(&self) -> Vec<(u32, RequestHeaders, Ts)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Http2Event::StreamStarted { stream_id, request, first } => Some((*stream_id, request.clone(), *first)),
                Http2Event::Exchange(_) => None,
            })
            .collect()
    }

    /// The only exchange, asserting there is exactly one.
    pub fn one(&self) -> StreamExchange {
        let xs = self.exchanges();
        assert_eq!(xs.len(), 1, "{:#?}", self.events);
        xs[0].clone()
    }
}

/// Timestamps of call number `n` (1-based) as `Wire` assigns them.
pub(super) fn ts(n: u64) -> Ts {
    Ts { enter_ns: 10 * n, exit_ns: 10 * n + 5 }
}

/// Exchange with timestamps zeroed, to compare runs split differently.
pub(super) fn untimed(mut x: StreamExchange) -> StreamExchange {
    x.request_first = Ts::default();
    x.request_last = Ts::default();
    x.response_first = x.response_first.map(|_| Ts::default());
    x.response_last = x.response_last.map(|_| Ts::default());
    x.closed_ns = x.closed_ns.map(|_| 0);
    x
}

/// Splits `data` into chunks at the given cut points.
pub(super) fn split_at<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut prev = 0;
    for &c in cuts {
        out.push(&data[prev..c]);
        prev = c;
    }
    out.push(&data[prev..]);
    out
}

/// xorshift64*: deterministic pseudo-random numbers for the fuzz-ish tests.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Cuts `data` into chunks of 1..=max bytes.
    pub fn chunks<'a>(&mut self, data: &'a [u8], max: usize) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let n = (1 + self.below(max)).min(data.len() - at);
            out.push(&data[at..at + n]);
            at += n;
        }
        out
    }
}
