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
            compression: super::config::Compression::None,
            tls: super::tls::TlsConfig::default(),
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

/// What the exporter is told to trust and present, as the variables would
/// name it.
struct ClientTls<'a> {
    ca: &'a str,
    identity: bool,
}

/// Exports one span over TLS with gzip to a receiver that demands a client
/// certificate; returns what arrived and the exporter's metrics.
async fn tls_export(
    protocol: OtlpProtocol,
    client: ClientTls<'_>,
) -> (Vec<Captured>, Arc<ExportMetrics>) {
    let pki = super::test_pki::pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = test_receiver::ServerTls {
        cert_pem: pki.server_cert_pem.clone(),
        key_pem: pki.server_key_pem.clone(),
        client_ca_pem: Some(pki.ca_pem.clone()),
    };
    let (mut rx, path) = match protocol {
        OtlpProtocol::Grpc => (test_receiver::grpc_tls(listener, &server), ""),
        _ => (test_receiver::https(listener, &server), "/v1/traces"),
    };
    let mut vars = vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.path(client.ca))];
    if client.identity {
        vars.push(("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.path("client.pem")));
        vars.push(("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki.path("client.key")));
    }
    let lookup = |k: &str| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone());
    let mut cfg = config(format!("https://{addr}{path}"), protocol, Duration::from_millis(1500));
    if let Some(otlp) = cfg.otlp.as_mut() {
        otlp.tls = super::tls::TlsConfig::from_lookup(&lookup).unwrap();
        otlp.compression = super::config::Compression::Gzip;
    }
    let metrics = Arc::new(ExportMetrics::default());
    let exporter = Exporter::start(cfg, Arc::clone(&metrics)).unwrap();
    exporter.submit(span(&resource(1, "secure"), 9));
    exporter.shutdown().await;
    let mut got = Vec::new();
    while let Some(c) = rx.next(Duration::from_millis(200)).await {
        got.push(c);
    }
    (got, metrics)
}

fn span_ids(got: &[Captured]) -> Vec<u8> {
    got.iter()
        .flat_map(|c| &c.request.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.span_id[7])
        .collect()
}

#[tokio::test]
async fn grpc_exports_over_mutual_tls_with_gzip() {
    let (got, metrics) = tls_export(OtlpProtocol::Grpc, ClientTls { ca: "ca.pem", identity: true }).await;
    assert_eq!(span_ids(&got), vec![9], "{:?}", metrics.spans_failed);
    assert_eq!(got[0].header("grpc-encoding"), Some("gzip"), "{:?}", got[0].headers);
}

#[tokio::test]
async fn https_exports_over_mutual_tls_with_gzip() {
    let (got, _) = tls_export(OtlpProtocol::HttpProtobuf, ClientTls { ca: "ca.pem", identity: true }).await;
    assert_eq!(span_ids(&got), vec![9]);
    assert_eq!(got[0].header("content-encoding"), Some("gzip"));
    assert_eq!(got[0].body.get(..2), Some(&[0x1f, 0x8b][..]), "a gzip stream");
}

/// A server kspan was not told to trust, or one that wants a client
/// certificate kspan lacks: nothing is delivered, and the loss is counted.
#[tokio::test]
async fn tls_refusals_are_counted_not_delivered() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        for client in [ClientTls { ca: "other-ca.pem", identity: true }, ClientTls { ca: "ca.pem", identity: false }] {
            let (ca, identity) = (client.ca, client.identity);
            let (got, metrics) = tls_export(protocol, client).await;
            assert!(span_ids(&got).is_empty(), "{protocol:?} {ca} identity={identity}: delivered anyway");
            assert_eq!(
                metrics.spans_failed.load(Ordering::Relaxed),
                1,
                "{protocol:?} {ca} identity={identity}: the lost span is counted"
            );
        }
    }
}
