//! OTLP/JSON (`http/json`): the protobuf mapping with the OTLP exceptions:
//! trace and span ids as hex, enums as integers, 64-bit integers as strings.

use serde_json::{Value, json};

use super::proto::{SCOPE_NAME, SCOPE_VERSION};
use crate::span::model::{AttrValue, Resource, Span, SpanKind, SpanStatus};

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn any_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({ "stringValue": &**s }),
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
    }
}

fn key_value(key: &str, value: &AttrValue) -> Value {
    json!({ "key": key, "value": any_value(value) })
}

fn span(s: &Span) -> Value {
    let mut v = json!({
        "traceId": hex(&s.trace_id),
        "spanId": hex(&s.span_id),
        "name": s.name,
        "kind": match s.kind { SpanKind::Server => 2, SpanKind::Client => 3 },
        "startTimeUnixNano": s.start_unix_nanos.to_string(),
        "endTimeUnixNano": s.end_unix_nanos.to_string(),
        "attributes": s.attributes.iter().map(|a| key_value(a.key, &a.value)).collect::<Vec<_>>(),
        "flags": 0x101 | if s.parent_is_remote { 0x200 } else { 0 },
        "status": {},
    });
    if let Some(parent) = &s.parent_span_id {
        v["parentSpanId"] = hex(parent).into();
    }
    if !s.trace_state.is_empty() {
        v["traceState"] = s.trace_state.clone().into();
    }
    if let SpanStatus::Error { message } = &s.status {
        v["status"] = json!({ "code": 2, "message": message });
    }
    v
}

/// The `ExportTraceServiceRequest` body for `groups`.
pub fn request<'a, S>(groups: impl IntoIterator<Item = (&'a Resource, S)>) -> Vec<u8>
where
    S: IntoIterator<Item = &'a Span>,
{
    let resource_spans: Vec<Value> = groups
        .into_iter()
        .map(|(resource, spans)| {
            json!({
                "resource": {
                    "attributes": resource.attributes.iter().map(|(k, v)| key_value(k, v)).collect::<Vec<_>>(),
                },
                "scopeSpans": [{
                    "scope": { "name": SCOPE_NAME, "version": SCOPE_VERSION },
                    "spans": spans.into_iter().map(span).collect::<Vec<_>>(),
                }],
            })
        })
        .collect();
    // Serialising a Value cannot fail (string keys only).
    serde_json::to_vec(&json!({ "resourceSpans": resource_spans })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_util::{resource, span as fixture};

    #[test]
    fn follows_the_otlp_json_exceptions() {
        let res = resource(1, "svc");
        let mut s = fixture(&res, 3);
        s.parent_span_id = Some([0xab; 8]);
        s.status = SpanStatus::Error { message: "bad".into() };
        let body: Value = serde_json::from_slice(&request([(&*res, std::slice::from_ref(&s))])).unwrap();
        let p = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(p["traceId"], hex(&s.trace_id));
        assert_eq!(p["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(p["parentSpanId"], "abababababababab");
        assert_eq!(p["kind"], 2);
        assert_eq!(p["startTimeUnixNano"], s.start_unix_nanos.to_string());
        assert_eq!(p["attributes"][1]["value"]["intValue"], "200");
        assert_eq!(p["status"]["code"], 2);
        let attrs = &body["resourceSpans"][0]["resource"]["attributes"];
        assert_eq!(attrs[0]["value"]["stringValue"], "svc");
        assert_eq!(body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"], "kspan");
    }
}
