//! HTTP/2 and gRPC spans from real grpcio and Node.js peers over h2c.

mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use support::*;

const WAIT: Duration = Duration::from_secs(30);
const PEER: &str = "tests/peers/grpc_peer.py";

fn prerequisites() -> bool {
    require_root() && require_bpf() && require_python()
}

fn grpc_server(port: u16) -> Server {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join(PEER)).arg("server").arg(port.to_string());
    Server::spawn(cmd, port).expect("grpc server")
}

fn grpc_client(port: u16, script: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join(PEER)).arg("client").arg(port.to_string()).args(script);
    cmd
}

fn kspan_exporting(receiver: &Receiver, args: &[&str]) -> Kspan {
    Kspan::exporting_to(receiver, args)
}

fn named<'a>(spans: &'a [ReceivedSpan], kind: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.kind == kind && s.name == name).collect()
}

#[test]
fn grpcio_calls_become_rpc_spans() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let server = grpc_server(port);
    let kspan = kspan_exporting(&receiver, &["--open-ports", &port.to_string()]);
    let out = grpc_client(port, &["unary:2", "stream:3", "fail", "internal", "deadline", "concurrent:50"]).output().unwrap();
    assert!(out.status.success(), "client: {}", String::from_utf8_lossy(&out.stderr));

    let spans = receiver
        .wait_for(WAIT, |s| {
            named(s, "SERVER", "demo.Greeter/SayHello").len() >= 52
                && named(s, "CLIENT", "demo.Greeter/SayHello").len() >= 52
                && named(s, "SERVER", "demo.Greeter/Slow").len() == 1
                && named(s, "CLIENT", "demo.Greeter/Slow").len() == 1
                && named(s, "SERVER", "demo.Greeter/Internal").len() == 1
                && named(s, "CLIENT", "demo.Greeter/Fail").len() == 1
                && named(s, "SERVER", "demo.Greeter/StreamHellos").len() == 1
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));

    let hello = named(&spans, "SERVER", "demo.Greeter/SayHello");
    for s in &hello {
        assert_eq!(s.attr_str("rpc.system"), Some("grpc"));
        assert_eq!(s.attr_str("rpc.service"), Some("demo.Greeter"));
        assert_eq!(s.attr_str("rpc.method"), Some("SayHello"));
        assert_eq!(s.attr_i64("rpc.grpc.status_code"), Some(0));
        assert_eq!(s.status.code, "UNSET");
        assert_eq!(s.attr_i64("server.port"), Some(i64::from(port)));
        assert_eq!(s.resource_i64("process.pid"), Some(i64::from(server.pid())));
    }
    // Same-host linking per stream: every server span is the child of
    // exactly one client span, in its trace (50 calls in flight on one
    // connection included).
    let clients: HashMap<&str, &ReceivedSpan> =
        named(&spans, "CLIENT", "demo.Greeter/SayHello").into_iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut parents = std::collections::HashSet::new();
    for s in &hello {
        let parent = clients.get(s.parent_span_id.as_str()).unwrap_or_else(|| panic!("server span without its client: {s:?}"));
        assert_eq!(parent.trace_id, s.trace_id);
        assert!(parent.start <= s.start && s.end <= parent.end, "server inside client");
        assert!(parents.insert(s.parent_span_id.clone()), "two server spans under one client span");
    }

    // Status rules: NOT_FOUND is the caller's problem (server OK, client
    // error); INTERNAL fails both; a missed deadline fails both.
    let fail_server = named(&spans, "SERVER", "demo.Greeter/Fail")[0];
    assert_eq!(fail_server.attr_i64("rpc.grpc.status_code"), Some(5));
    assert_eq!(fail_server.status.code, "UNSET");
    let fail_client = named(&spans, "CLIENT", "demo.Greeter/Fail")[0];
    assert_eq!((fail_client.attr_i64("rpc.grpc.status_code"), fail_client.status.code.as_str()), (Some(5), "ERROR"));
    for kind in ["SERVER", "CLIENT"] {
        let internal = named(&spans, kind, "demo.Greeter/Internal")[0];
        assert_eq!((internal.attr_i64("rpc.grpc.status_code"), internal.status.code.as_str()), (Some(13), "ERROR"));
        let slow = named(&spans, kind, "demo.Greeter/Slow")[0];
        assert_eq!(slow.attr_i64("rpc.grpc.status_code"), Some(4), "{kind} deadline: {slow:?}");
        assert_eq!(slow.status.code, "ERROR");
    }
    let stream = named(&spans, "SERVER", "demo.Greeter/StreamHellos")[0];
    assert_eq!(stream.attr_i64("rpc.grpc.status_code"), Some(0));
    drop(kspan);
}

#[test]
fn curl_over_h2c_gets_http_spans() {
    if !prerequisites() || require_cmd("node").is_none() || require_cmd("curl").is_none() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let mut node = Command::new("node");
    node.arg(repo_root().join("tests/peers/h2c_server.js")).arg(port.to_string());
    let _node = Server::spawn(node, port).expect("h2c server");
    let kspan = kspan_exporting(&receiver, &["--open-ports", &port.to_string()]);
    let base = format!("http://127.0.0.1:{port}");
    // One connection per URL: curl 7.88 and Node's h2c server disagree on
    // reusing one (a framing error without kspan too).
    for path in ["/items/7?key=secret", "/missing", "/boom"] {
        let out = Command::new("curl").args(["-sS", "--http2-prior-knowledge", &format!("{base}{path}")]).output().unwrap();
        assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().filter(|s| s.kind == "SERVER").count() >= 3 && s.iter().filter(|s| s.kind == "CLIENT").count() >= 3)
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    let server = |path: &str| -> &ReceivedSpan {
        spans.iter().find(|s| s.kind == "SERVER" && s.attr_str("url.path") == Some(path)).unwrap_or_else(|| panic!("no {path}"))
    };
    let ok = server("/items/7");
    assert_eq!(ok.name, "GET /items/{id}");
    assert_eq!(ok.attr_str("network.protocol.version"), Some("2"));
    assert_eq!(ok.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(ok.attr_str("url.query"), Some("key=REDACTED"));
    assert!(ok.attr_str("user_agent.original").is_some_and(|u| u.starts_with("curl/")));
    assert_eq!(server("/missing").attr_i64("http.response.status_code"), Some(404));
    assert_eq!(server("/missing").status.code, "UNSET");
    assert_eq!(server("/boom").status.code, "ERROR");
    let client = spans.iter().find(|s| s.kind == "CLIENT" && s.attr_str("url.path") == Some("/missing")).unwrap();
    assert_eq!(client.status.code, "ERROR", "4xx fails the client span");
    assert!(!ok.parent_span_id.is_empty(), "linked to curl's span");
    drop(kspan);
}

/// kspan starts while the channel is open: the connection is met
/// mid-stream, HPACK state unknown. Later calls still become spans, named
/// right or flagged partial — never named wrongly.
#[test]
fn joins_an_open_grpc_channel() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let server = grpc_server(port);
    let mut client = grpc_client(port, &["unary:2", "wait", "unary:5"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "waiting");
    let pids = format!("{},{}", server.pid(), client.id());
    let kspan = kspan_exporting(&receiver, &["--pid", &pids]);
    client.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert!(client.wait().unwrap().success());
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().filter(|s| s.kind == "SERVER").count() >= 5)
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    for s in spans.iter().filter(|s| s.kind == "SERVER") {
        let partial = s.attr_bool("kspan.partial") == Some(true);
        assert!(s.name == "demo.Greeter/SayHello" || partial, "wrongly named span: {s:?}");
        if !partial {
            assert_eq!(s.attr_i64("rpc.grpc.status_code"), Some(0));
        }
    }
    drop(kspan);
}
