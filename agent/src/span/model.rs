//! What the span builder hands to exporters: finished spans, and the
//! resource (traced process) each belongs to.

use std::sync::Arc;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

/// Text of an attribute. Most values are fixed words (`GET`, `tcp`) or
/// addresses seen before: those are not copied for every span.
#[derive(Clone, Debug)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Shared(s) => s,
            Self::Owned(s) => s,
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::Static("")
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl From<&'static str> for Text {
    fn from(v: &'static str) -> Self {
        Self::Static(v)
    }
}
impl From<String> for Text {
    fn from(v: String) -> Self {
        Self::Owned(v)
    }
}
impl From<Arc<str>> for Text {
    fn from(v: Arc<str>) -> Self {
        Self::Shared(v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(Text),
    Int(i64),
    Bool(bool),
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        Self::Str(Text::Static(v))
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        Self::Str(Text::Owned(v))
    }
}
impl From<Arc<str>> for AttrValue {
    fn from(v: Arc<str>) -> Self {
        Self::Str(Text::Shared(v))
    }
}
impl From<Text> for AttrValue {
    fn from(v: Text) -> Self {
        Self::Str(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// A span attribute. Keys are semantic-convention names, so `'static`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub key: &'static str,
    pub value: AttrValue,
}

impl Attr {
    pub fn new(key: &'static str, value: impl Into<AttrValue>) -> Self {
        Self { key, value: value.into() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum SpanStatus {
    Unset,
    Error { message: String },
}

/// Identity of a traced process, exported as an OTLP resource. Spans of
/// different processes go out under different resources.
#[derive(Debug, PartialEq)]
pub struct Resource {
    /// Stable key for grouping spans by resource in one export batch
    /// (pid plus process start time, so pid reuse gives a new key).
    pub key: u64,
    pub service_name: String,
    /// All resource attributes, `service.name` included. Keys are owned:
    /// `OTEL_RESOURCE_ATTRIBUTES` of the traced process may add any key.
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// The parent came from a `traceparent` header (another process).
    pub parent_is_remote: bool,
    /// W3C `tracestate`, kept verbatim when it came with the request.
    pub trace_state: String,
    pub kind: SpanKind,
    pub name: String,
    /// Wall-clock nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<Attr>,
    pub status: SpanStatus,
    pub resource: Arc<Resource>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|a| a.key == key).map(|a| &a.value)
    }
}
