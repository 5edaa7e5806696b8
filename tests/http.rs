//! HTTP/1.x spans from real servers and clients, checked on what an OTLP
//! receiver (built from the official protos) actually received.

mod support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use support::*;

const WAIT: Duration = Duration::from_secs(30);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn prerequisites() -> bool {
    require_root() && require_bpf() && require_python() && require_cmd("curl").is_some()
}

fn python_app(port: u16) -> Server {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/peers/http_app.py")).arg(port.to_string());
    Server::spawn(cmd, port).expect("python app starts")
}

/// kspan exporting to `receiver` over `protocol`, tracing clients and
/// servers of `ports`.
fn kspan_exporting(receiver: &Receiver, protocol: &str, ports: &str) -> Kspan {
    let endpoint = if protocol == "grpc" { &receiver.grpc_endpoint } else { &receiver.http_endpoint };
    Kspan::start(
        &["--open-ports", ports],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-kspan-test=yes"),
        ],
    )
    .expect("kspan starts")
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn find<'a>(spans: &'a [ReceivedSpan], kind: &str, service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.kind == kind && s.resource_str("service.name") == Some(service) && s.name == name)
        .collect()
}

fn has(spans: &[ReceivedSpan], kind: &str, service: &str, name: &str, n: usize) -> bool {
    find(spans, kind, service, name).len() >= n
}

#[test]
fn python_server_and_curl_client_over_grpc() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let app = python_app(port);
    let kspan = kspan_exporting(&receiver, "grpc", &port.to_string());
    let base = format!("http://127.0.0.1:{port}");

    // Two requests on one keep-alive connection; a query with a secret.
    curl(&[&format!("{base}/users/123?token=secret&x=1"), &format!("{base}/users/456")]);
    curl(&[&format!("{base}/fail")]);
    let reset = Command::new("curl").args(["-sS", "--max-time", "10", &format!("{base}/reset")]).output().unwrap();
    assert!(!reset.status.success(), "curl sees the reset");
    curl(&[
        "-H",
        &format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"),
        "-H",
        "tracestate: vendor=abc",
        &format!("{base}/users/7"),
    ]);
    curl(&["-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "chunked-body", &format!("{base}/echo")]);
    curl(&[&format!("{base}/chunked")]);
    // Pipelining: two requests in one write, on a raw socket.
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.write_all(b"GET /users/1 HTTP/1.1\r\nHost: pipelined\r\n\r\nGET /users/2 HTTP/1.1\r\nHost: pipelined\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2);

    let service = "http_app";
    let spans = receiver
        .wait_for(WAIT, |s| {
            has(s, "SERVER", service, "GET /users/{id}", 5)
                && has(s, "SERVER", service, "GET /fail", 1)
                && has(s, "SERVER", service, "POST /echo", 1)
                && has(s, "SERVER", service, "GET /chunked", 1)
                && has(s, "CLIENT", "curl", "GET /users/{id}", 3)
                && has(s, "CLIENT", "curl", "GET /fail", 1)
                && has(s, "SERVER", service, "GET /reset", 1)
                && has(s, "CLIENT", "curl", "GET /reset", 1)
        })
        .expect("spans arrive");

    let users = find(&spans, "SERVER", service, "GET /users/{id}");
    let secret = users.iter().find(|s| s.attr_str("url.path") == Some("/users/123")).expect("/users/123 span");
    assert_eq!(secret.attr_str("url.query"), Some("token=REDACTED&x=REDACTED"), "query values redacted");
    assert_eq!(secret.attr_str("http.request.method"), Some("GET"));
    assert_eq!(secret.attr_str("url.scheme"), Some("http"));
    assert_eq!(secret.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(secret.attr_str("network.protocol.version"), Some("1.1"));
    assert_eq!(secret.attr_i64("server.port"), Some(i64::from(port)));
    assert_eq!(secret.attr_str("network.peer.address"), Some("127.0.0.1"));
    assert_eq!(secret.attr_str("client.address"), Some("127.0.0.1"));
    assert!(secret.attr_str("user_agent.original").is_some_and(|ua| ua.starts_with("curl/")));
    assert_eq!(secret.attr_i64("http.response.body.size"), Some(r#"{"id": "123"}"#.len() as i64));
    assert_eq!(secret.status.code, "UNSET");
    assert!(secret.start < secret.end);
    assert_eq!(secret.resource_i64("process.pid"), Some(i64::from(app.pid())));
    assert_eq!(secret.header("x-kspan-test"), Some("yes"), "OTEL_EXPORTER_OTLP_HEADERS sent");
    assert_eq!(secret.transport, "grpc");

    let fail = find(&spans, "SERVER", service, "GET /fail")[0];
    assert_eq!(fail.status.code, "ERROR");
    assert_eq!(fail.attr_i64("http.response.status_code"), Some(500));
    assert_eq!(fail.attr_str("error.type"), Some("500"));
    let fail_client = find(&spans, "CLIENT", "curl", "GET /fail")[0];
    assert_eq!(fail_client.status.code, "ERROR");
    assert_eq!(fail_client.trace_id.len(), 32);

    // W3C: the server joins the caller's trace; the caller's own client
    // span IS the header's parent-id.
    let joined = users.iter().find(|s| s.trace_id == TRACE_ID).expect("server span in the caller's trace");
    assert_eq!(joined.parent_span_id, PARENT_ID);
    assert_eq!(joined.trace_state, "vendor=abc");
    let propagating = find(&spans, "CLIENT", "curl", "GET /users/{id}")
        .into_iter()
        .find(|s| s.trace_id == TRACE_ID)
        .expect("client span takes the header's context");
    assert_eq!(propagating.span_id, PARENT_ID);

    // A CLIENT span encloses the SERVER span it caused.
    let client = find(&spans, "CLIENT", "curl", "GET /users/{id}")
        .into_iter()
        .find(|s| s.attr_str("url.full") == Some(&format!("{base}/users/123?token=REDACTED&x=REDACTED")))
        .expect("client span with url.full");
    assert!(client.start <= secret.start && secret.end <= client.end, "client {client:?} server {secret:?}");
    assert_eq!(client.attr_str("server.address"), Some("127.0.0.1"));
    assert_eq!(client.attr_i64("server.port"), Some(i64::from(port)));
    assert_ne!(client.resource_str("service.name"), secret.resource_str("service.name"), "one resource per process");

    // The server closed without answering; the client saw a reset.
    let reset_server = find(&spans, "SERVER", service, "GET /reset")[0];
    assert_eq!(reset_server.status.code, "ERROR");
    assert_eq!(reset_server.attr_str("error.type"), Some("connection_closed"));
    assert_eq!(reset_server.attr("http.response.status_code"), None);
    let reset_client = find(&spans, "CLIENT", "curl", "GET /reset")[0];
    assert_eq!(reset_client.status.code, "ERROR");
    assert_eq!(reset_client.attr_str("error.type"), Some("connection_reset"));
    assert!(reset_client.start <= reset_client.end);

    let echo = find(&spans, "SERVER", service, "POST /echo")[0];
    assert_eq!(echo.attr_i64("http.request.body.size"), Some("chunked-body".len() as i64));
    assert_eq!(echo.attr_i64("http.response.status_code"), Some(201));
    let chunked = find(&spans, "SERVER", service, "GET /chunked")[0];
    assert_eq!(chunked.attr_i64("http.response.body.size"), Some("first,second,third".len() as i64));
    let pipelined: Vec<_> = users.iter().filter(|s| s.attr_str("server.address") == Some("pipelined")).collect();
    assert_eq!(pipelined.len(), 2, "both pipelined requests");
    drop(kspan);
}

#[test]
fn node_and_nginx_over_http_protobuf() {
    if !prerequisites() || require_cmd("node").is_none() || require_cmd("nginx").is_none() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let node_port = free_port();
    let mut node = Command::new("node");
    node.arg(repo_root().join("tests/peers/node_app.js")).arg(node_port.to_string());
    let _node = Server::spawn(node, node_port).expect("node app starts");
    let nginx_port = free_port();
    let dir = TempDir::new().unwrap();
    let server = format!(
        "listen 127.0.0.1:{nginx_port};\n\
         location /static/ {{ return 200 \"static\\n\"; }}\n\
         location /empty {{ return 204; }}"
    );
    let _nginx = start_nginx(dir.path(), "", &server, nginx_port).expect("nginx starts");
    let kspan = kspan_exporting(&receiver, "http/protobuf", &format!("{node_port},{nginx_port}"));

    assert_eq!(curl(&[&format!("http://127.0.0.1:{node_port}/items/42")]), "item-42");
    curl(&["-X", "POST", "--data-binary", "0123456789", &format!("http://127.0.0.1:{node_port}/upload")]);
    curl(&[&format!("http://127.0.0.1:{nginx_port}/static/a.css"), &format!("http://127.0.0.1:{nginx_port}/empty")]);

    let spans = receiver
        .wait_for(WAIT, |s| {
            has(s, "SERVER", "node_app", "GET /items/{id}", 1)
                && has(s, "SERVER", "node_app", "POST /upload", 1)
                && has(s, "SERVER", "nginx", "GET /static/a.css", 1)
                && has(s, "SERVER", "nginx", "GET /empty", 1)
        })
        .expect("spans arrive");
    let item = find(&spans, "SERVER", "node_app", "GET /items/{id}")[0];
    assert_eq!(item.attr_i64("http.response.body.size"), Some("item-42".len() as i64), "chunked response decoded");
    assert_eq!(item.transport, "http");
    let upload = find(&spans, "SERVER", "node_app", "POST /upload")[0];
    assert_eq!(upload.attr_i64("http.request.body.size"), Some(10));
    let empty = find(&spans, "SERVER", "nginx", "GET /empty")[0];
    assert_eq!(empty.attr_i64("http.response.status_code"), Some(204));
    assert_eq!(empty.resource_str("process.executable.name"), Some("nginx"));
    drop(kspan);
}

/// nginx with `sendfile on`: response bodies never pass through user
/// memory. Each keep-alive response must still be its own span, with the
/// right size, and the request after them must still parse.
#[test]
fn nginx_sendfile_keepalive_responses() {
    if !prerequisites() || require_cmd("nginx").is_none() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let dir = TempDir::new().unwrap();
    let body = vec![b'x'; 65536];
    std::fs::create_dir_all(dir.join("www/files")).unwrap();
    std::fs::write(dir.join("www/files/big.bin"), &body).unwrap();
    let server = format!("listen 127.0.0.1:{port}; root {}/www; location /empty {{ return 204; }}", dir.path().display());
    let _nginx = start_nginx(dir.path(), "sendfile on;", &server, port).expect("nginx starts");
    let kspan = kspan_exporting(&receiver, "grpc", &port.to_string());
    let file = format!("http://127.0.0.1:{port}/files/big.bin");
    // One curl, one connection: the requests follow each other on it.
    curl(&[&file, &file, &file, &format!("http://127.0.0.1:{port}/empty")]);
    let spans = receiver
        .wait_for(WAIT, |s| {
            has(s, "SERVER", "nginx", "GET /files/big.bin", 3) && has(s, "SERVER", "nginx", "GET /empty", 1)
        })
        .expect("a span per response");
    for span in find(&spans, "SERVER", "nginx", "GET /files/big.bin") {
        assert_eq!(span.attr_i64("http.response.status_code"), Some(200));
        assert_eq!(span.attr_i64("http.response.body.size"), Some(body.len() as i64), "{span:?}");
    }
    let empty = find(&spans, "SERVER", "nginx", "GET /empty")[0];
    assert_eq!(empty.attr_i64("http.response.status_code"), Some(204));
    drop(kspan);
}

/// An inetd-style forking server (busybox httpd, classic daemons): the
/// parent accepts and closes its fd, the child reads the request on fd 0
/// and answers on fd 1, two fds of one socket. The answer must close the
/// request's span, as the request's own.
#[test]
fn forked_child_answering_on_stdout() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/peers/fork_server.py")).arg(port.to_string());
    let _server = Server::spawn(cmd, port).expect("forking server starts");
    let kspan = kspan_exporting(&receiver, "grpc", &port.to_string());
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/forked")]), "forked\n");
    let _ = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/missing")]).output();
    let spans = receiver
        .wait_for(WAIT, |s| {
            has(s, "SERVER", "fork_server", "GET /forked", 1) && has(s, "SERVER", "fork_server", "GET /missing", 1)
        })
        .expect("a SERVER span per request");
    let ok = find(&spans, "SERVER", "fork_server", "GET /forked")[0];
    assert_eq!(ok.attr_i64("http.response.status_code"), Some(200), "{ok:?}");
    assert_eq!(ok.attr_i64("http.response.body.size"), Some(7), "{ok:?}");
    let missing = find(&spans, "SERVER", "fork_server", "GET /missing")[0];
    assert_eq!(missing.attr_i64("http.response.status_code"), Some(404), "{missing:?}");
    drop(kspan);
}

#[test]
fn collector_down_at_start_receives_spans_once_up() {
    if !prerequisites() {
        return;
    }
    let grpc_port = free_port();
    let port = free_port();
    let _app = python_app(port);
    let endpoint = format!("http://127.0.0.1:{grpc_port}");
    let kspan = Kspan::start(
        &["--open-ports", &port.to_string()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .expect("kspan starts");
    curl(&[&format!("http://127.0.0.1:{port}/users/1")]);
    // Nobody listens yet: the export fails and is retried or dropped, and
    // kspan keeps running.
    let receiver = Receiver::start_with(&["--grpc-port", &grpc_port.to_string()]).expect("receiver comes up");
    // Keep sending until a span arrives: which requests made it depends on
    // when the retries gave up, but new ones must get through.
    let spans = receiver.wait_for(WAIT, |s| {
        if !has(s, "SERVER", "http_app", "GET /users/{id}", 1) {
            let _ = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/users/2")]).output();
            return false;
        }
        true
    });
    assert!(spans.is_ok(), "no span after the collector came up: {:?}\nkspan log:\n{}", spans.err(), kspan.log());
    drop(kspan);
}

#[test]
fn prints_spans_to_the_terminal_by_default() {
    if !prerequisites() {
        return;
    }
    let port = free_port();
    let _app = python_app(port);
    let kspan = Kspan::start(&["--open-ports", &port.to_string()], &[]).expect("kspan starts");
    curl(&[&format!("http://127.0.0.1:{port}/users/99")]);
    let line = "SERVER GET /users/{id}";
    kspan.wait_for_log(line, WAIT).unwrap_or_else(|e| panic!("{e}"));
    let log = kspan.log();
    let printed = log.lines().find(|l| l.contains(line)).unwrap();
    assert!(printed.contains("http_app") && printed.contains("200"), "{printed}");
}

/// A message whose `Content-Length` body fills its syscall is captured as
/// its head alone (the body is only counted); everything else, where the
/// body carries framing or another message follows, is captured whole. The
/// spans are the same either way.
#[test]
fn content_length_bodies_are_counted_not_captured() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let dir = TempDir::new().unwrap();
    let peer = |mode: &str| {
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/peers/http_bodies.py")).arg(mode).arg(port.to_string());
        cmd
    };
    let mut server_cmd = peer("server");
    server_cmd.arg(dir.path());
    let server = Server::spawn(server_cmd, port).expect("peer server");
    let log = dir.join("events.jsonl");
    let kspan = Kspan::start(
        &["--open-ports", &port.to_string(), "--events-log", log.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .expect("kspan starts");
    let status = peer("client").status().expect("client runs");
    assert!(status.success(), "client: {status}");

    let server_span = |s: &ReceivedSpan, name: &str| s.kind == "SERVER" && s.name == name;
    let gathered = ["iov", "iov-split", "iov-chunked", "iov-big"];
    let names = ["GET /cl", "GET /ows", "GET /chunked", "GET /long-head", "GET /p1", "GET /p2", "HEAD /cl", "POST /upload"]
        .into_iter()
        .map(str::to_owned)
        .chain(gathered.iter().map(|case| format!("GET /{case}")))
        .collect::<Vec<_>>();
    let spans = receiver
        .wait_for(WAIT, |spans| names.iter().all(|n| spans.iter().any(|s| server_span(s, n))))
        .unwrap_or_else(|err| panic!("a server span per request ({err}); got {:#?}", receiver.spans()));
    let span = |name: &str| spans.iter().find(|s| server_span(s, name)).unwrap();
    let sizes = [("GET /cl", 2000), ("GET /ows", 1500), ("GET /chunked", 1200), ("GET /long-head", 1000)];
    let gathered_sizes = [("GET /iov", 1800), ("GET /iov-split", 1800), ("GET /iov-chunked", 1200), ("GET /iov-big", 3000)];
    for (name, size) in sizes.into_iter().chain(gathered_sizes) {
        assert_eq!(span(name).attr_i64("http.response.status_code"), Some(200), "{name}");
        assert_eq!(span(name).attr_i64("http.response.body.size"), Some(size), "{name}: {:?}", span(name));
    }
    assert_eq!(span("GET /p1").attr_i64("http.response.body.size"), Some(600));
    assert_eq!(span("GET /p2").attr_i64("http.response.body.size"), Some(700));
    assert_eq!(span("HEAD /cl").attr_i64("http.response.status_code"), Some(200));
    let upload = span("POST /upload");
    assert_eq!(upload.attr_i64("http.response.status_code"), Some(201));
    assert_eq!(upload.attr_i64("http.request.body.size"), Some(3000));
    for s in spans.iter().filter(|s| s.kind == "SERVER") {
        assert_ne!(s.status.code, "ERROR", "{s:?}");
        assert!(s.attr("error.type").is_none(), "{s:?}");
    }

    // What the server's syscalls captured. Its writes and reads are whole
    // messages (one write each; on loopback, one read gets a whole write).
    let records = wait_for_close(&log, server.pid());
    let heads = |bytes: &[u8]| bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let mut trimmed = Vec::new();
    let mut gathered_seen = Vec::new();
    for r in &records {
        let captured = record_payload(r);
        let size = r["size"].as_u64().unwrap() as usize;
        let first_line = String::from_utf8_lossy(&captured[..captured.len().min(24)]).into_owned();
        // An answer written from several buffers names its case.
        let case = gathered.iter().find(|case| {
            let header = format!("\r\nX-Case: {case}\r\n");
            captured.windows(header.len()).any(|w| w == header.as_bytes())
        });
        if let Some(case) = case {
            gathered_seen.push(*case);
        }
        if r["truncated"] == true {
            assert_eq!(Some(captured.len()), heads(&captured), "a head and nothing more: {first_line:?}");
            assert!(size > captured.len());
            trimmed.push(first_line);
        } else {
            assert_eq!(captured.len(), size, "captured whole: {first_line:?}");
            // Copied in two goes (head first, then the rest): byte for byte
            // what the server sent.
            if let Some(case) = case {
                let sent = std::fs::read(dir.join(format!("{case}.bin"))).expect("the peer saved its answer");
                assert!(captured == sent, "{case}: captured bytes differ from those sent");
            }
        }
    }
    gathered_seen.sort();
    assert_eq!(gathered_seen, ["iov", "iov-big", "iov-chunked", "iov-split"], "one record per gathered answer");
    trimmed.sort();
    // The scan needs bpf_loop, which only the socket path may assume.
    let expected: &[&str] = if kspan.log().contains("capturing on socket tracepoints") {
        &[
            "HTTP/1.1 200 OK\r\nContent",
            "HTTP/1.1 200 OK\r\nX-Case:",
            "HTTP/1.1 200 OK\r\ncontent",
            "POST /upload HTTP/1.1\r\nH",
        ]
    } else {
        &[]
    };
    assert_eq!(trimmed, expected, "head-only records: the /cl, /iov and /ows answers, the upload");
    drop(kspan);
}

/// The data records of `pid` from the events log, once its connection closed.
fn wait_for_close(log: &std::path::Path, pid: u32) -> Vec<serde_json::Value> {
    let closed = wait_until(WAIT, POLL, || events_log(log).iter().any(|e| e["pid"] == pid && e["type"] == "close"));
    assert!(closed, "no close record for the server ({pid})");
    events_log(log).into_iter().filter(|e| e["pid"] == pid && e["type"] == "data").collect()
}

/// `https://` export with mutual TLS and gzip, over both transports, to the
/// Python receiver (grpcio and the ssl module, not kspan's own TLS stack):
/// what a collector behind TLS with client certificates would get.
#[test]
fn exports_over_mutual_tls_with_gzip() {
    if !prerequisites() {
        return;
    }
    let dir = TempDir::new().expect("temp dir");
    write_pki(dir.path());
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let receiver = Receiver::start_with(&[
        "--tls-cert",
        &file("server.pem"),
        "--tls-key",
        &file("server.key"),
        "--tls-client-ca",
        &file("ca.pem"),
    ])
    .expect("TLS receiver");
    assert!(receiver.grpc_endpoint.starts_with("https://"), "{}", receiver.grpc_endpoint);
    let port = free_port();
    let _app = python_app(port);
    for (protocol, endpoint) in [("grpc", &receiver.grpc_endpoint), ("http/protobuf", &receiver.http_endpoint)] {
        let kspan = Kspan::start(
            &["--open-ports", &port.to_string()],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &file("ca.pem")),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &file("client.pem")),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &file("client.key")),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        )
        .expect("kspan starts");
        let id = if protocol == "grpc" { 71 } else { 72 };
        curl(&[&format!("http://127.0.0.1:{port}/users/{id}")]);
        let path = format!("/users/{id}");
        let spans = receiver.wait_for(WAIT, |s| {
            s.iter().any(|s| s.kind == "SERVER" && s.attr_str("url.path") == Some(path.as_str()))
        });
        let spans = spans.unwrap_or_else(|e| panic!("{protocol}: {e}\nkspan log:\n{}\nreceiver log:\n{}", kspan.log(), receiver.log()));
        let span = spans.iter().find(|s| s.attr_str("url.path") == Some(path.as_str())).unwrap();
        assert_eq!(span.transport, if protocol == "grpc" { "grpc" } else { "http" });
        if protocol != "grpc" {
            assert_eq!(span.header("content-encoding"), Some("gzip"), "{span:?}");
        }
        drop(kspan);
    }
}

/// `--metrics-addr`: the counters a Prometheus scrape reads agree with what
/// the collector received, and `/healthz` answers while the loop runs.
#[test]
fn metrics_endpoint_counts_what_was_exported() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let _app = python_app(port);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let kspan = Kspan::start(
        &["--open-ports", &port.to_string(), "--metrics-addr", &metrics_addr],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .expect("kspan starts");
    for id in 1..=3 {
        curl(&[&format!("http://127.0.0.1:{port}/users/{id}")]);
    }
    let spans = receiver.wait_for(WAIT, |s| find(s, "SERVER", "http_app", "GET /users/{id}").len() >= 3);
    let received = spans.unwrap_or_else(|e| panic!("{e}\n{}", kspan.log())).len() as u64;
    let url = format!("http://{metrics_addr}/metrics");
    let exported = |text: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix("kspan_spans_exported_total ")).and_then(|v| v.trim().parse().ok())
    };
    let (mut text, mut now) = (String::new(), 0);
    // The reading is republished every second, and CLIENT spans (curl is
    // traced too) may still be on their way: compare at the same moment.
    let caught_up = wait_until(WAIT, POLL, || {
        text = curl(&[&url]);
        now = receiver.spans().len() as u64;
        now >= received && exported(&text) == Some(now)
    });
    assert!(caught_up, "kspan_spans_exported_total should match the {now} spans received:\n{text}");
    assert!(text.contains("# TYPE kspan_connections_tracked gauge"), "{text}");
    assert_eq!(curl(&[&format!("http://{metrics_addr}/healthz")]), "ok\n");
    drop(kspan);
}

/// A collector on the same host is just another process to kspan, but its
/// end of kspan's own export connection must not be traced: each export
/// would come back as a collector span in the next batch, forever, among
/// the user's own. Another client of the same collector still is traced.
#[test]
fn kspan_does_not_trace_its_own_exports() {
    if !prerequisites() {
        return;
    }
    for protocol in ["grpc", "http/protobuf"] {
        let receiver = Receiver::start().expect("receiver");
        let port = |endpoint: &str| endpoint.rsplit(':').next().unwrap_or_default().to_owned();
        let ports = format!("{},{}", port(&receiver.grpc_endpoint), port(&receiver.http_endpoint));
        let kspan = kspan_exporting(&receiver, protocol, &ports);
        let url = format!("{}/v1/traces", receiver.http_endpoint);
        // Each round's span reaches the receiver in a later export than the
        // last: were kspan's exports traced, the first ones' spans would
        // be in by the third.
        for round in 1..=3 {
            let agent = format!("other-exporter-{round}");
            curl(&["-o", "/dev/null", "-A", &agent, "-H", "Content-Type: application/x-protobuf", "--data-binary", "", &url]);
            receiver
                .wait_for_matching(WAIT, 1, |s| s.kind == "SERVER" && s.attr_str("user_agent.original") == Some(agent.as_str()))
                .unwrap_or_else(|e| panic!("{protocol}: {e}\nkspan log:\n{}", kspan.log()));
        }
        let spans = receiver.spans();
        let own: Vec<String> = spans
            .iter()
            .filter(|s| !s.attr_str("user_agent.original").is_some_and(|a| a.starts_with("other-exporter-")))
            .map(|s| s.pretty())
            .collect();
        assert!(own.is_empty(), "{protocol}: spans of kspan's own exports: {own:#?}");
    }
}

/// A cgroup as a container runtime makes one (the container id in its
/// name), for the processes started through `enter`; removed on drop.
struct ContainerCgroup {
    dir: std::path::PathBuf,
}

impl ContainerCgroup {
    /// `path`: the runtime's cgroup path under a test directory of its own.
    fn create(path: &str) -> ContainerCgroup {
        // cgroup v2, alone or beside v1 (hybrid), else v1's pids hierarchy.
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids"]
            .iter()
            .map(std::path::Path::new)
            .find(|root| root.join("cgroup.procs").exists())
            .expect("a cgroup hierarchy to create the container's cgroup in");
        let dir = root.join(format!("kspan-test-{}", std::process::id())).join(path);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        ContainerCgroup { dir }
    }

    /// `cmd`, run from inside the cgroup from its first instruction on.
    fn enter(&self, cmd: &Command) -> Command {
        let mut shell = Command::new("sh");
        let argv: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect();
        shell.arg("-c").arg(format!("echo $$ > '{}/cgroup.procs' && exec {}", self.dir.display(), argv.join(" ")));
        shell
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // A cgroup can be removed once its last process has been reaped.
        wait_until(WAIT, POLL, || std::fs::remove_dir(&self.dir).is_ok());
        let test_dir = self
            .dir
            .ancestors()
            .find(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kspan-test-")));
        for parent in self.dir.ancestors().skip(1) {
            if std::fs::remove_dir(parent).is_err() || Some(parent) == test_dir {
                break;
            }
        }
    }
}

/// The python app, started inside `cgroup`, and a kspan tracing it with
/// `args`; the app's SERVER span and curl's CLIENT span for one request.
fn containerised_app_spans(cgroup: &ContainerCgroup, args: &[&str], service: &str) -> (ReceivedSpan, ReceivedSpan) {
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let mut app = Command::new(python());
    app.arg(repo_root().join("tests/peers/http_app.py")).arg(port.to_string());
    let app = Server::spawn(cgroup.enter(&app), port).expect("python app starts in its container's cgroup");
    let port_arg = port.to_string();
    let kspan = Kspan::start(
        &[&["--open-ports", &port_arg], args].concat(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .expect("kspan starts");
    curl(&[&format!("http://127.0.0.1:{port}/users/1")]);
    let spans = receiver
        .wait_for(WAIT, |s| {
            has(s, "SERVER", service, "GET /users/{id}", 1) && has(s, "CLIENT", "curl", "GET /users/{id}", 1)
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    drop(kspan);
    drop(app);
    let server = find(&spans, "SERVER", service, "GET /users/{id}")[0].clone();
    let client = find(&spans, "CLIENT", "curl", "GET /users/{id}")[0].clone();
    (server, client)
}

fn container_id(salt: u64) -> String {
    format!("{:064x}", u128::from(std::process::id()) << 64 | u128::from(salt))
}

/// On a Kubernetes node every pod may run `python app.py`: its processes
/// are named after the workload that owns the pod, which kspan learns from
/// the kubelet's log links and the container id in the process's cgroup.
#[test]
fn pod_processes_are_named_by_their_workload() {
    if !prerequisites() {
        return;
    }
    let id = container_id(0x6b7370616e);
    let pod_logs = TempDir::new().unwrap();
    let pod = "orders-5d78c9869d-x2kq9";
    std::fs::write(pod_logs.join(format!("{pod}_shop_app-{id}.log")), b"").unwrap();
    // A container of another pod, to be told apart.
    let other = id.replace('6', "7");
    std::fs::write(pod_logs.join(format!("web-0_shop_nginx-{other}.log")), b"").unwrap();
    // As the kubelet's systemd cgroup driver names them.
    let pod_uid = "0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5";
    let cgroup = ContainerCgroup::create(&format!(
        "kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        pod_uid.replace('-', "_")
    ));
    let pod_logs_arg = pod_logs.path().to_string_lossy().into_owned();
    let (server, client) = containerised_app_spans(&cgroup, &["--pod-logs", &pod_logs_arg], "orders");
    for (key, want) in [
        ("container.id", id.as_str()),
        ("k8s.pod.uid", pod_uid),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", pod),
        ("k8s.container.name", "app"),
        ("k8s.deployment.name", "orders"),
        ("service.namespace", "shop"),
    ] {
        assert_eq!(server.resource_str(key), Some(want), "{key}: {}", server.pretty());
    }
    // curl runs outside any container: named by what it runs.
    assert_eq!(client.resource_str("k8s.pod.name"), None, "{}", client.pretty());
}

/// Under Docker Compose every service may run `python app.py` too: the
/// Compose service label in the engine's container config names it.
#[test]
fn compose_services_are_named_by_their_label() {
    if !prerequisites() {
        return;
    }
    let id = container_id(0x636f6d706f7365);
    let containers = TempDir::new().unwrap();
    std::fs::create_dir_all(containers.join(&id)).unwrap();
    let config = r#"{"ID":"ID","Name":"/shop-billing-1","Config":{"Image":"team/billing:2.1",
        "Labels":{"com.docker.compose.project":"shop","com.docker.compose.service":"billing"}}}"#;
    std::fs::write(containers.join(&id).join("config.v2.json"), config.replace("ID", &id)).unwrap();
    let cgroup = ContainerCgroup::create(&format!("system.slice/docker-{id}.scope"));
    let containers_arg = containers.path().to_string_lossy().into_owned();
    let (server, client) = containerised_app_spans(&cgroup, &["--docker-containers", &containers_arg], "billing");
    for (key, want) in [
        ("container.id", id.as_str()),
        ("container.name", "shop-billing-1"),
        ("container.image.name", "team/billing"),
        ("service.namespace", "shop"),
    ] {
        assert_eq!(server.resource_str(key), Some(want), "{key}: {}", server.pretty());
    }
    assert_eq!(client.resource_str("container.name"), None, "{}", client.pretty());
}
