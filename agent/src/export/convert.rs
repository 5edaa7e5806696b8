//! kspan spans and resources in `opentelemetry_sdk` form, for the OTLP exporter.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::span::model::{AttrValue, Resource, Span, SpanKind, SpanStatus};

/// The scope every kspan span is reported under.
pub(crate) fn instrumentation_scope() -> InstrumentationScope {
    InstrumentationScope::builder("kspan")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Spans of one resource, in arrival order.
#[derive(Debug)]
pub(crate) struct ResourceGroup {
    pub resource: Arc<Resource>,
    pub spans: Vec<Span>,
}

/// Splits a batch by `Resource::key`: the OTLP exporter sends everything of
/// one call under a single resource, so each process needs its own call.
/// Groups come out in order of first appearance, to keep exports predictable.
pub(crate) fn group_by_resource(batch: Vec<Span>) -> Vec<ResourceGroup> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<ResourceGroup> = Vec::new();
    for span in batch {
        let i = *index.entry(span.resource.key).or_insert_with(|| {
            groups.push(ResourceGroup {
                resource: Arc::clone(&span.resource),
                spans: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].spans.push(span);
    }
    groups
}

/// The resource's attributes, verbatim. `builder_empty` on purpose: the
/// default builder would add the *agent's* own `OTEL_RESOURCE_ATTRIBUTES`,
/// SDK and service-name defaults to every traced process.
pub(crate) fn to_sdk_resource(resource: &Resource) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(
            resource
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), to_value(v.clone()))),
        )
        .build()
}

pub(crate) fn to_span_data(span: Span, scope: &InstrumentationScope) -> SpanData {
    // An invalid tracestate is dropped rather than failing the span: the ids
    // are what matter and the W3C spec says to discard a malformed header.
    let trace_state = span.trace_state.parse::<TraceState>().unwrap_or_default();
    // kspan only ever emits spans it decided to record, so they are sampled.
    let context = SpanContext::new(
        TraceId::from_bytes(span.trace_id),
        SpanId::from_bytes(span.span_id),
        TraceFlags::SAMPLED,
        false,
        trace_state,
    );
    SpanData {
        span_context: context,
        parent_span_id: span
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: span.parent_is_remote,
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
        },
        name: Cow::Owned(span.name),
        start_time: unix_nanos_to_system_time(span.start_unix_nanos),
        end_time: unix_nanos_to_system_time(span.end_unix_nanos),
        attributes: span
            .attributes
            .into_iter()
            .map(|a| KeyValue::new(a.key, to_value(a.value)))
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match span.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error { message } => Status::error(message),
        },
        instrumentation_scope: scope.clone(),
    }
}

pub(crate) fn unix_nanos_to_system_time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn to_value(v: AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::from(s),
        AttrValue::Int(i) => Value::I64(i),
        AttrValue::Bool(b) => Value::Bool(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_util::{resource, span};
    use crate::span::model::Attr;

    #[test]
    fn span_data_keeps_ids_parent_times_and_flags() {
        let mut s = span(&resource(1, "checkout"), 7);
        s.parent_span_id = Some([9; 8]);
        s.parent_is_remote = true;
        s.trace_state = "vendor=abc,other=1".into();
        let d = to_span_data(s.clone(), &instrumentation_scope());
        assert_eq!(d.span_context.trace_id().to_bytes(), s.trace_id);
        assert_eq!(d.span_context.span_id().to_bytes(), s.span_id);
        assert!(d.span_context.is_sampled());
        assert_eq!(d.parent_span_id.to_bytes(), [9; 8]);
        assert!(d.parent_span_is_remote);
        assert_eq!(d.span_context.trace_state().header(), "vendor=abc,other=1");
        assert_eq!(d.span_kind, OtelKind::Server);
        assert_eq!(d.name, "GET /items");
        let nanos = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).ok();
        assert_eq!(nanos(d.start_time), Some(u128::from(s.start_unix_nanos)));
        assert_eq!(nanos(d.end_time), Some(u128::from(s.end_unix_nanos)));
        assert_eq!(d.instrumentation_scope.name(), "kspan");
        assert_eq!(
            d.instrumentation_scope.version(),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn root_span_has_invalid_parent_and_bad_tracestate_is_dropped() {
        let mut s = span(&resource(1, "a"), 1);
        s.trace_state = "not a valid=,,=tracestate".into();
        s.kind = SpanKind::Client;
        let d = to_span_data(s, &instrumentation_scope());
        assert_eq!(d.parent_span_id, SpanId::INVALID);
        assert!(!d.parent_span_is_remote);
        assert_eq!(d.span_context.trace_state().header(), "");
        assert_eq!(d.span_kind, OtelKind::Client);
    }

    #[test]
    fn attributes_and_status_convert() {
        let mut s = span(&resource(1, "a"), 1);
        s.attributes = vec![
            Attr::new("http.request.method", "GET"),
            Attr::new("http.response.status_code", 503_i64),
            Attr::new("kspan.truncated", true),
        ];
        s.status = SpanStatus::Error {
            message: "upstream down".into(),
        };
        let d = to_span_data(s, &instrumentation_scope());
        assert_eq!(
            d.attributes,
            vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 503_i64),
                KeyValue::new("kspan.truncated", true),
            ]
        );
        assert_eq!(d.status, Status::error("upstream down"));
        let unset = to_span_data(span(&resource(1, "a"), 2), &instrumentation_scope());
        assert_eq!(unset.status, Status::Unset);
    }

    #[test]
    fn groups_by_resource_key_in_first_seen_order() {
        let (a, b, c) = (resource(10, "a"), resource(20, "b"), resource(30, "c"));
        let batch = vec![
            span(&b, 1),
            span(&a, 2),
            span(&b, 3),
            span(&c, 4),
            span(&a, 5),
        ];
        let groups = group_by_resource(batch);
        let summary: Vec<(u64, Vec<u8>)> = groups
            .iter()
            .map(|g| {
                (
                    g.resource.key,
                    g.spans.iter().map(|s| s.span_id[7]).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![(20, vec![1, 3]), (10, vec![2, 5]), (30, vec![4])]
        );
        assert!(
            groups
                .iter()
                .all(|g| g.spans.iter().all(|s| s.resource.key == g.resource.key))
        );
    }

    #[test]
    fn sdk_resource_holds_exactly_the_given_attributes() {
        let r = resource(1, "checkout");
        let sdk = to_sdk_resource(&r);
        let mut got: Vec<(String, String)> = sdk
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("process.pid".to_owned(), "4242".to_owned()),
                ("service.name".to_owned(), "checkout".to_owned()),
            ]
        );
    }
}
