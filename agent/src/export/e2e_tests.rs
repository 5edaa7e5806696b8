//! The exporter against real in-process OTLP receivers on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, span::SpanKind as ProtoKind, status::StatusCode,
};
use tokio::net::TcpListener;

use super::config::{OtlpConfig, OtlpProtocol};
use super::test_receiver::{self, Captured, Receiver};
use super::test_util::{resource, span};
use super::*;
use crate::span::model::{Attr, SpanStatus};

fn config(endpoint: String, protocol: OtlpProtocol, timeout: Duration) -> ExportConfig {
    ExportConfig {
        print: PrintMode::None,
        otlp: Some(OtlpConfig {
            endpoint,
            protocol,
            headers: vec![("x-kspan-test".into(), "a b=c".into())],
            timeout,
        }),
        max_queue_size: 100,
        schedule_delay: Duration::from_millis(50),
        max_export_batch_size: 50,
        export_timeout: timeout,
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => format!("s:{s}"),
                Some(Value::IntValue(i)) => format!("i:{i}"),
                Some(Value::BoolValue(b)) => format!("b:{b}"),
                other => format!("?:{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Exports two processes' spans, interleaved in one batch, and checks what
/// the receiver decoded: one ResourceSpans per process, nothing merged.
async fn two_resources_round_trip(
    protocol: OtlpProtocol,
    serve: fn(TcpListener) -> Receiver,
) -> Vec<Captured> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut rx = serve(listener);
    let path = if protocol == OtlpProtocol::Grpc {
        ""
    } else {
        "/v1/traces"
    };
    let metrics = Arc::new(ExportMetrics::default());
    let cfg = config(
        format!("http://{addr}{path}"),
        protocol,
        Duration::from_secs(5),
    );
    let exporter = Exporter::start(cfg, Arc::clone(&metrics)).unwrap();
    let (checkout, payments) = (resource(1, "checkout"), resource(2, "payments"));
    let mut child = span(&payments, 2);
    child.parent_span_id = Some([7; 8]);
    child.parent_is_remote = true;
    child.trace_state = "vendor=x".into();
    child.kind = crate::span::model::SpanKind::Client;
    child.status = SpanStatus::Error {
        message: "timeout".into(),
    };
    child.attributes.push(Attr::new("kspan.flag", true));
    exporter.submit(span(&checkout, 1));
    exporter.submit(child);
    exporter.submit(span(&checkout, 3));
    exporter.shutdown().await;

    let mut got = Vec::new();
    while let Some(c) = rx.next(Duration::from_millis(200)).await {
        got.push(c);
    }
    let rs: Vec<&ResourceSpans> = got.iter().flat_map(|c| &c.request.resource_spans).collect();
    assert_eq!(rs.len(), 2, "one ResourceSpans per process: {rs:#?}");
    let by_service: BTreeMap<String, &ResourceSpans> = rs
        .iter()
        .map(|r| {
            let a = attrs(&r.resource.as_ref().unwrap().attributes);
            (a["service.name"].clone(), *r)
        })
        .collect();
    for (service, ids) in [("checkout", vec![1_u8, 3]), ("payments", vec![2])] {
        let r = by_service[&format!("s:{service}")];
        let res_attrs = attrs(&r.resource.as_ref().unwrap().attributes);
        assert_eq!(
            res_attrs,
            map(&[
                ("service.name", &format!("s:{service}")),
                ("process.pid", "i:4242")
            ])
        );
        assert_eq!(r.scope_spans.len(), 1);
        let scope = r.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("kspan", env!("CARGO_PKG_VERSION"))
        );
        let spans = &r.scope_spans[0].spans;
        assert_eq!(spans.iter().map(|s| s.span_id[7]).collect::<Vec<_>>(), ids);
        for s in spans {
            let n = s.span_id[7];
            assert_eq!(
                s.trace_id,
                [0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, n]
            );
            assert_eq!(s.span_id, [0x22, 0, 0, 0, 0, 0, 0, n]);
            assert_eq!(s.name, "GET /items");
            let start = 1_700_000_000_123_456_789_u64 + u64::from(n) * 1_000_000_000;
            assert_eq!(
                (s.start_time_unix_nano, s.end_time_unix_nano),
                (start, start + 12_345_678)
            );
        }
    }
    let root = &by_service["s:checkout"].scope_spans[0].spans[0];
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.kind, ProtoKind::Server as i32);
    assert_eq!(root.status.as_ref().unwrap().code, StatusCode::Unset as i32);
    assert_eq!(
        root.flags & 0x300,
        0x100,
        "has-is-remote set, is-remote clear"
    );
    assert_eq!(
        attrs(&root.attributes),
        map(&[
            ("http.request.method", "s:GET"),
            ("http.response.status_code", "i:200")
        ])
    );
    let child = &by_service["s:payments"].scope_spans[0].spans[0];
    assert_eq!(child.parent_span_id, [7; 8]);
    assert_eq!(child.flags & 0x3ff, 0x301, "sampled, parent remote");
    assert_eq!(child.trace_state, "vendor=x");
    assert_eq!(child.kind, ProtoKind::Client as i32);
    let status = child.status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "timeout")
    );
    assert_eq!(attrs(&child.attributes)["kspan.flag"], "b:true");

    assert!(
        got.iter()
            .all(|c| c.header("x-kspan-test") == Some("a b=c")),
        "{got:#?}"
    );
    assert_eq!(metrics.spans_exported.load(Ordering::Relaxed), 3);
    // One request per batch, carrying both resources.
    assert_eq!(metrics.export_requests.load(Ordering::Relaxed), 1);
    assert_eq!(got.len(), 1);
    assert_eq!(metrics.export_errors.load(Ordering::Relaxed), 0);
    got
}

#[tokio::test]
async fn grpc_export_keeps_resources_apart() {
    two_resources_round_trip(OtlpProtocol::Grpc, test_receiver::grpc).await;
}

#[tokio::test]
async fn http_protobuf_export_keeps_resources_apart() {
    let got = two_resources_round_trip(OtlpProtocol::HttpProtobuf, test_receiver::http).await;
    assert!(got.iter().all(|c| c.path == "/v1/traces"));
    assert!(
        got.iter()
            .all(|c| c.header("content-type") == Some("application/x-protobuf"))
    );
}

#[tokio::test]
async fn http_json_export_keeps_resources_apart() {
    let got = two_resources_round_trip(OtlpProtocol::HttpJson, test_receiver::http).await;
    assert!(
        got.iter()
            .all(|c| c.header("content-type") == Some("application/json"))
    );
    // Beyond round-tripping through the same serde code: the wire form must
    // be OTLP/JSON, i.e. lowerCamelCase names and hex (not base64) ids.
    let ids: Vec<String> = got
        .iter()
        .flat_map(|c| {
            let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
            let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"].clone();
            spans.as_array().cloned().unwrap_or_default()
        })
        .map(|s| {
            format!(
                "{}/{}",
                s["traceId"].as_str().unwrap(),
                s["spanId"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        ids.contains(&"abcd0000000000000000000000001101/2200000000000001".to_owned()),
        "{ids:?}"
    );
}

/// Nothing listens at first: exports fail and retry, the queue stays bounded
/// and `submit` stays instant. Once a receiver appears, new spans arrive
/// without restarting the exporter.
async fn collector_comes_up_later(protocol: OtlpProtocol, serve: fn(TcpListener) -> Receiver) {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let path = if protocol == OtlpProtocol::Grpc {
        ""
    } else {
        "/v1/traces"
    };
    let metrics = Arc::new(ExportMetrics::default());
    let cfg = config(
        format!("http://{addr}{path}"),
        protocol,
        Duration::from_millis(1000),
    );
    let exporter = Exporter::start(cfg, Arc::clone(&metrics)).unwrap();
    let r = resource(1, "late");

    let started = Instant::now();
    for i in 0..5_000_u32 {
        exporter.submit(span(&r, (i % 200) as u8));
    }
    let submit_time = started.elapsed();
    assert!(
        submit_time < Duration::from_millis(500),
        "submit must not block: {submit_time:?}"
    );
    let dropped = metrics.spans_dropped_queue_full.load(Ordering::Relaxed);
    assert!(
        dropped >= 5_000 - 100 - 50,
        "queue bound of 100 (+ one batch in flight) held: {dropped} dropped"
    );

    // Let at least one batch fail for good.
    let fail_deadline = Instant::now() + Duration::from_secs(5);
    while metrics.spans_failed.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < fail_deadline,
            "export never gave up on the dead collector"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed_at = started.elapsed();
    // 100 ms, then 200 ms of backoff (plus jitter) fit in the 1 s budget
    // before the exporter gives the first batch up.
    assert!(
        failed_at >= Duration::from_millis(250),
        "no retries? gave up after {failed_at:?}"
    );

    let mut rx = serve(TcpListener::bind(addr).await.unwrap());
    let up = Instant::now();
    exporter.submit(span(&r, 250));
    let mut arrived = None;
    while let Some(c) = rx.next(Duration::from_secs(10)).await {
        let ids: Vec<u8> = c
            .request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.span_id[7])
            .collect();
        if ids.contains(&250) {
            arrived = Some(up.elapsed());
            break;
        }
    }
    let arrived = arrived.expect("span submitted after the collector came up never arrived");
    eprintln!(
        "{protocol:?}: first failure after {failed_at:?}, delivered {arrived:?} after the collector came up"
    );
    assert!(metrics.export_errors.load(Ordering::Relaxed) >= 1);
    exporter.shutdown().await;
}

#[tokio::test]
async fn grpc_collector_comes_up_later() {
    collector_comes_up_later(OtlpProtocol::Grpc, test_receiver::grpc).await;
}

#[tokio::test]
async fn http_collector_comes_up_later() {
    collector_comes_up_later(OtlpProtocol::HttpProtobuf, test_receiver::http).await;
}

#[tokio::test]
async fn start_outside_runtime_is_an_error() {
    let cfg = config(
        "http://127.0.0.1:1".into(),
        OtlpProtocol::Grpc,
        Duration::from_secs(1),
    );
    let result = std::thread::spawn(move || Exporter::start(cfg, Arc::default()).err())
        .join()
        .unwrap();
    assert!(matches!(result, Some(ExportError::NoRuntime)), "{result:?}");
}
