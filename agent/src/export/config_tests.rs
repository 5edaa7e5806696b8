use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn parse(vars: &[(&str, &str)]) -> Result<ExportConfig, ExportError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ExportConfig::from_lookup(PrintMode::Auto, |k| map.get(k).cloned())
}

fn otlp(vars: &[(&str, &str)]) -> OtlpConfig {
    match parse(vars) {
        Ok(ExportConfig { otlp: Some(o), .. }) => o,
        other => panic!("expected an OTLP config, got {other:?}"),
    }
}

/// Asserts the error names `var` and mentions `needle`.
fn err(vars: &[(&str, &str)], var: &str, needle: &str) {
    match parse(vars) {
        Err(e @ ExportError::InvalidEnv { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(var) && msg.contains(needle),
                "{msg:?} should name {var} and {needle:?}"
            );
        }
        other => panic!("expected InvalidEnv for {var}, got {other:?}"),
    }
}

#[test]
fn defaults_without_any_variable() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.otlp, None);
    assert_eq!(c.print, PrintMode::Auto);
    assert_eq!(c.max_queue_size, 2048);
    assert_eq!(c.schedule_delay, Duration::from_millis(1000));
    assert_eq!(c.max_export_batch_size, 512);
    assert_eq!(c.export_timeout, Duration::from_millis(30_000));
}

#[test]
fn bsp_variables_are_honoured() {
    let c = parse(&[
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ("OTEL_BSP_SCHEDULE_DELAY", " 250 "),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "700"),
    ])
    .unwrap();
    assert_eq!(c.max_queue_size, 100);
    assert_eq!(c.schedule_delay, Duration::from_millis(250));
    assert_eq!(c.max_export_batch_size, 10);
    assert_eq!(c.export_timeout, Duration::from_millis(700));
}

#[test]
fn batch_size_is_capped_at_queue_size() {
    let c = parse(&[
        ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
    ])
    .unwrap();
    assert_eq!(c.max_export_batch_size, 8);
}

#[test]
fn invalid_numbers_name_their_variable() {
    for var in [
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_BSP_EXPORT_TIMEOUT",
    ] {
        err(&[(var, "abc")], var, "positive integer");
        err(&[(var, "-5")], var, "positive integer");
        err(&[(var, "0")], var, "greater than 0");
        err(&[(var, "18446744073709551615")], var, "at most 86400000");
        err(&[(var, "99999999999999999999")], var, "positive integer");
    }
    let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    err(
        &[ep, ("OTEL_EXPORTER_OTLP_TIMEOUT", "1.5s")],
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "positive integer",
    );
    err(
        &[ep, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "x")],
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "positive",
    );
}

#[test]
fn empty_values_count_as_unset() {
    let c = parse(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ("OTEL_BSP_MAX_QUEUE_SIZE", " "),
    ])
    .unwrap();
    assert_eq!(c.otlp, None);
    assert_eq!(c.max_queue_size, 2048);
}

#[test]
fn generic_http_endpoint_gets_signal_path_once() {
    let o = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
    assert_eq!(o.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf, "spec default");
    let o = otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/base/")]);
    assert_eq!(o.endpoint, "http://collector:4318/base/v1/traces");
}

#[test]
fn signal_endpoint_is_used_as_is_and_wins() {
    let o = otlp(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://traces:9999/custom",
        ),
    ]);
    assert_eq!(o.endpoint, "http://traces:9999/custom");
}

#[test]
fn grpc_endpoint_gets_no_path() {
    let o = otlp(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ]);
    assert_eq!(
        (o.endpoint.as_str(), o.protocol),
        ("http://c:4317", OtlpProtocol::Grpc)
    );
}

#[test]
fn protocol_signal_variable_wins_and_json_is_accepted() {
    let ep = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://c:4318/v1/traces",
    );
    let o = otlp(&[
        ep,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
    ]);
    assert_eq!(o.protocol, OtlpProtocol::HttpJson);
    err(
        &[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")],
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "expected grpc",
    );
}

#[test]
fn schemeless_grpc_endpoint_follows_insecure() {
    let base = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
    ];
    let o = otlp(&[base[0], base[1], ("OTEL_EXPORTER_OTLP_INSECURE", "true")]);
    assert_eq!(o.endpoint, "http://c:4317");
    // The spec's default is secure.
    assert_eq!(otlp(&base).endpoint, "https://c:4317");
}

#[test]
fn bad_endpoints_are_rejected() {
    let var = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    err(&[(var, "collector:4318")], var, "URL");
    err(&[(var, "ftp://c")], var, "scheme");
    err(&[(var, "http://")], var, "host");
    assert_eq!(otlp(&[(var, "https://c:4318/v1/traces")]).endpoint, "https://c:4318/v1/traces");
}

#[test]
fn compression_signal_variable_wins() {
    let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    assert_eq!(otlp(&[ep]).compression, Compression::None);
    assert_eq!(otlp(&[ep, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).compression, Compression::Gzip);
    let o = otlp(&[
        ep,
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
    ]);
    assert_eq!(o.compression, Compression::None);
    err(&[ep, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")], "OTEL_EXPORTER_OTLP_COMPRESSION", "gzip or none");
}

#[test]
fn headers_merge_decode_and_signal_wins() {
    let o = otlp(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=generic, x-tenant = t1",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "API-Key=Bearer%20s3cr%3Dt,,",
        ),
    ]);
    assert_eq!(
        o.headers,
        vec![
            ("x-tenant".to_owned(), "t1".to_owned()),
            ("API-Key".to_owned(), "Bearer s3cr=t".to_owned())
        ]
    );
}

#[test]
fn bad_headers_are_rejected_without_echoing_values() {
    let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    let var = "OTEL_EXPORTER_OTLP_HEADERS";
    err(
        &[ep, (var, "a=1,secrettoken")],
        var,
        "entry 2 is not key=value",
    );
    err(&[ep, (var, "bad key=1")], var, "invalid header name");
    err(&[ep, (var, "k=line%0Abreak")], var, "printable ASCII");
    let Err(e) = parse(&[ep, (var, "secrettoken")]) else {
        panic!("should fail")
    };
    assert!(!e.to_string().contains("secrettoken"), "{e}");
}

#[test]
fn debug_output_hides_header_values() {
    let o = otlp(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret"),
    ]);
    let shown = format!("{o:?}");
    assert!(
        shown.contains("api-key") && !shown.contains("s3cret"),
        "{shown}"
    );
}

#[test]
fn otlp_timeout_signal_variable_wins() {
    let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
    assert_eq!(otlp(&[ep]).timeout, Duration::from_secs(10));
    let o = otlp(&[
        ep,
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500"),
    ]);
    assert_eq!(o.timeout, Duration::from_millis(1500));
}

#[test]
fn endpoint_port_is_explicit_or_the_schemes() {
    let port = |endpoint: &str| otlp(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)]).endpoint_port();
    assert_eq!(port("http://collector:4318/v1/traces"), Some(4318));
    assert_eq!(port("http://[::1]:9999/x"), Some(9999));
    assert_eq!(port("https://ingest.example.com/v1/traces"), Some(443));
    assert_eq!(port("HTTP://collector/v1/traces"), Some(80));
}
