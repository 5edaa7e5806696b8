//! Span and resource fixtures shared by the export tests.

use std::sync::Arc;

use crate::span::model::{Attr, AttrValue, Resource, Span, SpanKind, SpanStatus};

/// A resource with `service.name` and an integer `process.pid` of 4242.
pub(crate) fn resource(key: u64, service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        key,
        service_name: service.to_owned(),
        attributes: vec![
            ("service.name".to_owned(), AttrValue::from(service.to_owned())),
            ("process.pid".to_owned(), AttrValue::Int(4242)),
        ],
    })
}

/// A root SERVER span whose ids end in `n`, lasting 12.345678 ms.
pub(crate) fn span(resource: &Arc<Resource>, n: u8) -> Span {
    let start = 1_700_000_000_123_456_789_u64 + u64::from(n) * 1_000_000_000;
    Span {
        trace_id: [0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, n],
        span_id: [0x22, 0, 0, 0, 0, 0, 0, n],
        parent_span_id: None,
        parent_is_remote: false,
        trace_state: String::new(),
        kind: SpanKind::Server,
        name: "GET /items".to_owned(),
        start_unix_nanos: start,
        end_unix_nanos: start + 12_345_678,
        attributes: vec![
            Attr::new("http.request.method", "GET"),
            Attr::new("http.response.status_code", 200_i64),
        ],
        status: SpanStatus::Unset,
        resource: Arc::clone(resource),
    }
}
