//! The hand-written encoder checked against the official generated types:
//! whatever it writes must decode, field for field, with `opentelemetry-proto`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind as PbKind, status::StatusCode};
use prost::Message;

use super::*;
use crate::export::test_util::{resource, span};

fn decode(bytes: &[u8]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(bytes).expect("the encoder's output must decode")
}

fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<&Value> {
    v.as_ref().and_then(|a| a.value.as_ref())
}

#[test]
fn span_fields_round_trip_through_the_official_decoder() {
    let res = resource(1, "checkout");
    let mut s = span(&res, 7);
    s.parent_span_id = Some([9; 8]);
    s.parent_is_remote = true;
    s.trace_state = "vendor=abc".into();
    s.kind = SpanKind::Client;
    s.attributes.push(Attr::new("error.flag", true));
    s.attributes.push(Attr::new("negative", -5_i64));
    s.attributes.push(Attr::new("long.text", "x".repeat(300)));
    s.status = SpanStatus::Error { message: "boom".into() };
    let bytes = Encoder::default().request([(&*res, std::slice::from_ref(&s))]);
    let req = decode(&bytes);

    assert_eq!(req.resource_spans.len(), 1);
    let rs = &req.resource_spans[0];
    let attrs = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(attrs[0].key, "service.name");
    assert_eq!(value(&attrs[0].value), Some(&Value::StringValue("checkout".into())));
    assert_eq!(value(&attrs[1].value), Some(&Value::IntValue(4242)));
    let ss = &rs.scope_spans[0];
    let scope = ss.scope.as_ref().unwrap();
    assert_eq!((scope.name.as_str(), scope.version.as_str()), ("kspan", env!("CARGO_PKG_VERSION")));

    let p = &ss.spans[0];
    assert_eq!(p.trace_id, s.trace_id);
    assert_eq!(p.span_id, s.span_id);
    assert_eq!(p.parent_span_id, vec![9; 8]);
    assert_eq!(p.trace_state, "vendor=abc");
    assert_eq!(p.name, "GET /items");
    assert_eq!(p.kind, PbKind::Client as i32);
    assert_eq!(p.start_time_unix_nano, s.start_unix_nanos);
    assert_eq!(p.end_time_unix_nano, s.end_unix_nanos);
    assert_eq!(p.flags, 0x301, "sampled, parent remote known and remote");
    let got: Vec<(&str, Option<&Value>)> = p.attributes.iter().map(|kv| (kv.key.as_str(), value(&kv.value))).collect();
    assert_eq!(got[0], ("http.request.method", Some(&Value::StringValue("GET".into()))));
    assert_eq!(got[1], ("http.response.status_code", Some(&Value::IntValue(200))));
    assert_eq!(got[2], ("error.flag", Some(&Value::BoolValue(true))));
    assert_eq!(got[3], ("negative", Some(&Value::IntValue(-5))));
    assert_eq!(got[4], ("long.text", Some(&Value::StringValue("x".repeat(300)))));
    let status = p.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "boom"));
}

#[test]
fn root_server_span_has_no_parent_and_unset_status() {
    let res = resource(1, "a");
    let s = span(&res, 1);
    let req = decode(&Encoder::default().request([(&*res, std::slice::from_ref(&s))]));
    let p = &req.resource_spans[0].scope_spans[0].spans[0];
    assert!(p.parent_span_id.is_empty());
    assert_eq!(p.kind, PbKind::Server as i32);
    assert_eq!(p.flags, 0x101);
    assert_eq!(p.status.as_ref().map(|s| s.code), Some(StatusCode::Unset as i32));
}

#[test]
fn one_request_carries_every_resource_and_buffers_are_reused_cleanly() {
    let a = resource(1, "a");
    let b = resource(2, "b");
    let spans_a: Vec<Span> = (0..3).map(|n| span(&a, n)).collect();
    let spans_b: Vec<Span> = (10..12).map(|n| span(&b, n)).collect();
    let mut enc = Encoder::default();
    // Encode twice: the second request must not carry leftovers of the first.
    let _ = enc.request([(&*a, &spans_a[..]), (&*b, &spans_b[..])]);
    let req = decode(&enc.request([(&*b, &spans_b[..]), (&*a, &spans_a[..1])]));
    assert_eq!(req.resource_spans.len(), 2);
    let ids: Vec<Vec<u8>> = req.resource_spans.iter().flat_map(|rs| rs.scope_spans[0].spans.iter().map(|s| s.span_id.clone())).collect();
    assert_eq!(ids, vec![spans_b[0].span_id.to_vec(), spans_b[1].span_id.to_vec(), spans_a[0].span_id.to_vec()]);
    let service = |i: usize| value(&req.resource_spans[i].resource.as_ref().unwrap().attributes[0].value).cloned();
    assert_eq!(service(0), Some(Value::StringValue("b".into())));
    assert_eq!(service(1), Some(Value::StringValue("a".into())));
}

#[test]
fn varints_match_prost_at_every_width() {
    for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
        let mut ours = Vec::new();
        put_varint(&mut ours, v);
        let mut theirs = Vec::new();
        prost::encoding::encode_varint(v, &mut theirs);
        assert_eq!(ours, theirs, "{v}");
        assert_eq!(varint_len(v), theirs.len());
    }
}

/// Lengths are computed before spans are written: a size that disagreed
/// with the bytes would corrupt every message after it.
#[test]
fn span_sizes_match_the_bytes_written() {
    let res = resource(1, "sizes");
    let mut variants = vec![span(&res, 1)];
    let mut s = span(&res, 2);
    s.parent_span_id = Some([1; 8]);
    s.trace_state = "a=b".into();
    s.status = SpanStatus::Error { message: String::new() };
    variants.push(s);
    let mut s = span(&res, 3);
    s.name = "n".repeat(200);
    s.status = SpanStatus::Error { message: "m".repeat(20_000) };
    s.attributes.push(Attr::new("big", "v".repeat(70_000)));
    s.attributes.push(Attr::new("min", i64::MIN));
    s.attributes.push(Attr::new("flag", false));
    s.attributes.push(Attr::new(Box::leak("k".repeat(130).into_boxed_str()), 127_i64));
    variants.push(s);
    let mut s = span(&res, 4);
    s.attributes.clear();
    variants.push(s);
    for s in &variants {
        let mut out = Vec::new();
        encode_span(&mut out, s);
        assert_eq!(span_size(s), out.len(), "{}", s.name);
    }
    let req = decode(&Encoder::default().request([(&*res, &variants[..])]));
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), variants.len());
    assert_eq!(spans[2].status.as_ref().unwrap().message.len(), 20_000);
}
