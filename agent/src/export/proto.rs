//! OTLP protobuf, written straight from kspan's spans.
//!
//! Going through the SDK's `SpanData` and the generated prost structs cost
//! about half of kspan's user-space CPU (an allocation per attribute key and
//! value, then the prost copy, then encoding). Spans here are flat and their
//! attribute values are three scalar kinds, so the wire format is written
//! directly: nested messages are sized arithmetically where their contents
//! are scalars, and through one reused buffer per level otherwise. Tests
//! decode the output with the official `opentelemetry-proto` types.

use crate::span::model::{Attr, AttrValue, Resource, Span, SpanKind, SpanStatus};

const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const FIXED32: u8 = 5;

/// Span.flags: the sampled trace flag, plus "is the parent remote known" and
/// its answer (OTLP 1.1 `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK` / `_IS_REMOTE_MASK`).
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Instrumentation scope every kspan span is reported under.
pub const SCOPE_NAME: &str = "kspan";
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Bytes of a length-delimited field whose tag fits one byte (fields < 16).
fn len_field_size(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// AnyValue { string_value = 1; bool_value = 2; int_value = 3; }
fn any_value_size(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => len_field_size(s.len()),
        AttrValue::Bool(_) => 2,
        AttrValue::Int(i) => 1 + varint_len(*i as u64),
    }
}

fn put_any_value(out: &mut Vec<u8>, v: &AttrValue) {
    match v {
        AttrValue::Str(s) => put_bytes(out, 1, s.as_bytes()),
        AttrValue::Bool(b) => {
            put_tag(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        AttrValue::Int(i) => {
            put_tag(out, 3, VARINT);
            put_varint(out, *i as u64);
        }
    }
}

/// KeyValue { key = 1; value = 2; } as field `field` of the enclosing message.
fn put_key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &AttrValue) {
    let value_len = any_value_size(value);
    let body = len_field_size(key.len()) + len_field_size(value_len);
    put_tag(out, field, LEN);
    put_varint(out, body as u64);
    put_bytes(out, 1, key.as_bytes());
    put_tag(out, 2, LEN);
    put_varint(out, value_len as u64);
    put_any_value(out, value);
}

/// Encodes `ExportTraceServiceRequest` messages. Every length is computed
/// before its message is written, so each span is encoded once, straight
/// into the request: no per-level buffers to copy through.
#[derive(Default)]
pub struct Encoder {
    /// Encoded size of each span of the group being written.
    span_sizes: Vec<usize>,
    /// Size of the last request: the next one is likely alike, so its
    /// buffer starts there instead of growing through copies.
    last_len: usize,
}

impl Encoder {
    /// One request holding every group: `(resource, its spans)`.
    pub fn request<'a, S>(&mut self, groups: impl IntoIterator<Item = (&'a Resource, S)>) -> Vec<u8>
    where
        S: IntoIterator<Item = &'a Span>,
        S::IntoIter: Clone,
    {
        let mut out = Vec::with_capacity(self.last_len + self.last_len / 8);
        for (resource, spans) in groups {
            let spans = spans.into_iter();
            self.span_sizes.clear();
            self.span_sizes.extend(spans.clone().map(span_size));
            // ScopeSpans { scope = 1; spans = 2; }
            let scope_spans_len =
                len_field_size(SCOPE_LEN) + self.span_sizes.iter().map(|&n| len_field_size(n)).sum::<usize>();
            let resource_len = resource_len(resource);
            // ExportTraceServiceRequest.resource_spans = 1:
            // ResourceSpans { resource = 1; scope_spans = 2; }
            put_tag(&mut out, 1, LEN);
            put_varint(&mut out, (len_field_size(resource_len) + len_field_size(scope_spans_len)) as u64);
            put_tag(&mut out, 1, LEN);
            put_varint(&mut out, resource_len as u64);
            for (key, value) in &resource.attributes {
                put_key_value(&mut out, 1, key, value);
            }
            put_tag(&mut out, 2, LEN);
            put_varint(&mut out, scope_spans_len as u64);
            // InstrumentationScope { name = 1; version = 2; }
            put_tag(&mut out, 1, LEN);
            put_varint(&mut out, SCOPE_LEN as u64);
            put_bytes(&mut out, 1, SCOPE_NAME.as_bytes());
            put_bytes(&mut out, 2, SCOPE_VERSION.as_bytes());
            for (span, &size) in spans.zip(&self.span_sizes) {
                put_tag(&mut out, 2, LEN);
                put_varint(&mut out, size as u64);
                encode_span(&mut out, span);
            }
        }
        self.last_len = out.len();
        out
    }
}

const SCOPE_LEN: usize = 2 + SCOPE_NAME.len() + 2 + SCOPE_VERSION.len();

/// KeyValue's encoded size, as written by [`put_key_value`].
fn key_value_size(key: &str, value: &AttrValue) -> usize {
    len_field_size(len_field_size(key.len()) + len_field_size(any_value_size(value)))
}

/// Status's encoded body size (without its own tag and length).
fn status_body_size(message: &str) -> usize {
    (if message.is_empty() { 0 } else { len_field_size(message.len()) }) + 2
}

/// What [`encode_span`] writes for `span`, in bytes: the two must agree
/// field for field (checked by the tests on every kind of span).
fn span_size(span: &Span) -> usize {
    let mut n = len_field_size(span.trace_id.len()) + len_field_size(span.span_id.len());
    if !span.trace_state.is_empty() {
        n += len_field_size(span.trace_state.len());
    }
    if let Some(parent) = &span.parent_span_id {
        n += len_field_size(parent.len());
    }
    n += len_field_size(span.name.len());
    // kind (tag + one-byte enum), start and end (tag + fixed64 each).
    n += 2 + 9 + 9;
    n += span.attributes.iter().map(|Attr { key, value }| key_value_size(key, value)).sum::<usize>();
    n += match &span.status {
        SpanStatus::Unset => 2,
        SpanStatus::Error { message } => len_field_size(status_body_size(message)),
    };
    // flags: field 16 takes a two-byte tag, then a fixed32.
    n + 2 + 4
}

/// Resource { attributes = 1; }, sized without writing it.
fn resource_len(resource: &Resource) -> usize {
    resource
        .attributes
        .iter()
        .map(|(k, v)| len_field_size(len_field_size(k.len()) + len_field_size(any_value_size(v))))
        .sum()
}

/// Span fields (opentelemetry/proto/trace/v1/trace.proto).
fn encode_span(out: &mut Vec<u8>, span: &Span) {
    put_bytes(out, 1, &span.trace_id);
    put_bytes(out, 2, &span.span_id);
    if !span.trace_state.is_empty() {
        put_bytes(out, 3, span.trace_state.as_bytes());
    }
    if let Some(parent) = &span.parent_span_id {
        put_bytes(out, 4, parent);
    }
    put_bytes(out, 5, span.name.as_bytes());
    put_tag(out, 6, VARINT);
    // SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3
    out.push(match span.kind {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    });
    put_tag(out, 7, FIXED64);
    out.extend_from_slice(&span.start_unix_nanos.to_le_bytes());
    put_tag(out, 8, FIXED64);
    out.extend_from_slice(&span.end_unix_nanos.to_le_bytes());
    for Attr { key, value } in &span.attributes {
        put_key_value(out, 9, key, value);
    }
    // Status { message = 2; code = 3; }. An unset status is still sent, as
    // an empty message, the way the SDK exporters do.
    match &span.status {
        SpanStatus::Unset => put_bytes(out, 15, &[]),
        SpanStatus::Error { message } => {
            put_tag(out, 15, LEN);
            put_varint(out, status_body_size(message) as u64);
            if !message.is_empty() {
                put_bytes(out, 2, message.as_bytes());
            }
            put_tag(out, 3, VARINT);
            out.push(2); // STATUS_CODE_ERROR
        }
    }
    let mut flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE;
    if span.parent_is_remote {
        flags |= FLAG_IS_REMOTE;
    }
    put_tag(out, 16, FIXED32);
    out.extend_from_slice(&flags.to_le_bytes());
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
