//! Whole traces without code changes: three real services on one host, none
//! with tracing code and no `traceparent` from the caller, must arrive as one
//! trace with the right tree — also under concurrency.

mod support;

use std::{collections::HashMap, process::Command, time::Duration};

use support::*;

const WAIT: Duration = Duration::from_secs(60);

struct Chain {
    a: Server,
    b: Server,
    c: Server,
}

/// curl -> A (Flask) -> B (Flask) -> C (Node).
fn start_chain() -> Chain {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let mut node = Command::new("node");
    node.arg(repo_root().join("tests/peers/node_app.js")).arg(pc.to_string());
    let c = Server::spawn(node, pc).expect("node C");
    let flask = |port: u16, down: String| {
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/peers/chain_app.py")).arg(port.to_string()).arg(down);
        Server::spawn(cmd, port).expect("flask")
    };
    let b = flask(pb, format!("http://127.0.0.1:{pc}/items"));
    let a = flask(pa, format!("http://127.0.0.1:{pb}/hop"));
    Chain { a, b, c }
}

fn prerequisites() -> bool {
    require_root() && require_bpf() && require_python() && require_cmd("curl").is_some() && require_cmd("node").is_some()
}

fn kspan_for(chain: &Chain, receiver: &Receiver) -> Kspan {
    let ports = format!("{},{},{}", chain.a.port(), chain.b.port(), chain.c.port());
    Kspan::start(
        &["--open-ports", &ports],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .expect("kspan starts")
}

/// The six spans of request `n`, checked to form the expected tree.
fn check_trace(spans: &[ReceivedSpan], chain: &Chain, n: u32) {
    let root = spans
        .iter()
        .find(|s| s.kind == "CLIENT" && s.resource_str("service.name") == Some("curl") && s.attr_str("url.path") == Some(&format!("/hop/{n}")))
        .unwrap_or_else(|| panic!("no curl span for /hop/{n}"));
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == root.trace_id).collect();
    let dump = || trace.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
    assert_eq!(trace.len(), 6, "request {n}: one trace of six spans, got:\n{}", dump());
    let pid = |s: &ReceivedSpan| s.resource_i64("process.pid").unwrap_or_default() as u32;
    let one = |kind: &str, process: u32| -> &ReceivedSpan {
        let found: Vec<_> = trace.iter().filter(|s| s.kind == kind && pid(s) == process).collect();
        assert_eq!(found.len(), 1, "request {n}: one {kind} span of pid {process}:\n{}", dump());
        found[0]
    };
    let a_server = one("SERVER", chain.a.pid());
    let a_client = one("CLIENT", chain.a.pid());
    let b_server = one("SERVER", chain.b.pid());
    let b_client = one("CLIENT", chain.b.pid());
    let c_server = one("SERVER", chain.c.pid());
    assert!(root.is_root(), "curl's span is the root");
    for (child, parent) in [(a_server, root), (a_client, a_server), (b_server, a_client), (b_client, b_server), (c_server, b_client)] {
        assert_eq!(child.parent_span_id, parent.span_id, "request {n}: {} under {}:\n{}", child.name, parent.name, dump());
        assert!(
            parent.start <= child.start && child.end <= parent.end,
            "request {n}: {} [{}, {}] not inside {} [{}, {}]",
            child.name, child.start, child.end, parent.name, parent.start, parent.end
        );
    }
    assert_eq!(c_server.attr_str("url.path"), Some(format!("/items/{n}").as_str()), "no cross-request links");
    assert_eq!(b_server.attr_str("url.path"), Some(format!("/hop/{n}").as_str()));
}

#[test]
fn three_services_form_one_trace() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let chain = start_chain();
    let kspan = kspan_for(&chain, &receiver);
    let out = Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{}/hop/7", chain.a.port())]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "7>7>item-7");
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.kind == "SERVER" && s.attr_str("url.path") == Some("/items/7")) && s.len() >= 6)
        .expect("spans arrive");
    let spans = receiver.wait_for(Duration::from_secs(5), |s| s.len() >= 6).unwrap_or(spans);
    check_trace(&spans, &chain, 7);
    drop(kspan);
}

#[test]
fn concurrent_requests_never_cross_link() {
    if !prerequisites() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let chain = start_chain();
    let kspan = kspan_for(&chain, &receiver);
    // Twenty clients at once: A and B serve them on parallel threads.
    let children: Vec<_> = (0..20)
        .map(|n| {
            Command::new("curl")
                .args(["-sS", "--max-time", "20", &format!("http://127.0.0.1:{}/hop/{n}", chain.a.port())])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (n, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{n}>{n}>item-{n}"));
    }
    let spans = receiver
        .wait_for(WAIT, |s| {
            let mut per_path: HashMap<&str, usize> = HashMap::new();
            for span in s.iter().filter(|s| s.kind == "SERVER") {
                if let Some(p) = span.attr_str("url.path") {
                    *per_path.entry(p).or_default() += 1;
                }
            }
            (0..20).all(|n| per_path.get(format!("/items/{n}").as_str()) == Some(&1))
                && s.iter().filter(|s| s.resource_str("service.name") == Some("curl")).count() >= 20
        })
        .expect("all spans arrive");
    for n in 0..20 {
        check_trace(&spans, &chain, n);
    }
    drop(kspan);
}

/// curl -> Java front -> Java leaf, both `JavaChain.java`.
fn start_java_chain() -> (Server, Server) {
    let (front, leaf) = (free_port(), free_port());
    let java = |port: u16, down: Option<String>| {
        let mut cmd = Command::new("java");
        cmd.arg(repo_root().join("tests/peers/JavaChain.java")).arg(port.to_string());
        cmd.args(down);
        Server::spawn_with(cmd, port, Probe::Listening, Duration::from_secs(60)).expect("java peer")
    };
    let leaf = java(leaf, None);
    let front = java(front, Some(format!("http://127.0.0.1:{}", leaf.port())));
    (front, leaf)
}

/// Java's HttpClient writes a handler's call on its own I/O threads, so the
/// call's thread serves no request: the process's one request in flight is
/// its parent. (HttpURLConnection, on the handler's thread, is the control.)
#[test]
fn java_http_client_calls_stay_in_the_callers_trace() {
    if !(prerequisites() && require_cmd("java").is_some()) {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let (front, leaf) = start_java_chain();
    let kspan = Kspan::start(
        &["--open-ports", &format!("{},{}", front.port(), leaf.port())],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .expect("kspan starts");
    let paths = ["client/1", "url/2", "client/3", "client/4", "url/5"];
    for path in paths {
        let out = Command::new("curl").args(["-sS", "--max-time", "30", &format!("http://127.0.0.1:{}/{path}", front.port())]).output().unwrap();
        let n = &path[path.find('/').unwrap() + 1..];
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{n}>leaf-{n}"));
    }
    let leaf_paths = |s: &[ReceivedSpan]| s.iter().filter(|s| s.kind == "SERVER" && s.attr_str("url.path").is_some_and(|p| p.starts_with("/leaf/"))).count();
    let spans = receiver.wait_for(WAIT, |s| leaf_paths(s) >= paths.len() && s.len() >= 4 * paths.len()).expect("spans arrive");
    let pid = |s: &ReceivedSpan| s.resource_i64("process.pid").unwrap_or_default() as u32;
    for path in paths {
        let n = &path[path.find('/').unwrap() + 1..];
        let root = spans
            .iter()
            .find(|s| s.kind == "CLIENT" && s.resource_str("service.name") == Some("curl") && s.attr_str("url.path") == Some(&format!("/{path}")))
            .unwrap_or_else(|| panic!("no curl span for /{path}"));
        let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == root.trace_id).collect();
        let dump = || spans.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
        let one = |kind: &str, process: u32| -> &ReceivedSpan {
            let found: Vec<_> = trace.iter().filter(|s| s.kind == kind && pid(s) == process).collect();
            assert_eq!(found.len(), 1, "/{path}: one {kind} span of pid {process} in curl's trace, all spans:\n{}", dump());
            found[0]
        };
        let (front_server, front_client, leaf_server) = (one("SERVER", front.pid()), one("CLIENT", front.pid()), one("SERVER", leaf.pid()));
        assert_eq!(trace.len(), 4, "/{path}: one trace of four spans:\n{}", dump());
        for (child, parent) in [(front_server, root), (front_client, front_server), (leaf_server, front_client)] {
            assert_eq!(child.parent_span_id, parent.span_id, "/{path}: {} under {}:\n{}", child.name, parent.name, dump());
        }
        assert_eq!(leaf_server.attr_str("url.path"), Some(format!("/leaf/{n}").as_str()));
        for span in [front_server, front_client, leaf_server] {
            assert_eq!(span.resource_str("service.name"), Some("JavaChain"), "{}", span.pretty());
        }
    }
    drop(kspan);
}

/// Under concurrency the front serves many requests at once: its
/// HttpClient calls may go unlinked, but never under another request.
#[test]
fn java_http_client_calls_never_cross_link_under_concurrency() {
    if !(prerequisites() && require_cmd("java").is_some()) {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let (front, leaf) = start_java_chain();
    let kspan = Kspan::start(
        &["--open-ports", &format!("{},{}", front.port(), leaf.port())],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .expect("kspan starts");
    const N: usize = 16;
    let children: Vec<_> = (0..N)
        .map(|n| {
            Command::new("curl")
                .args(["-sS", "--max-time", "30", &format!("http://127.0.0.1:{}/client/{n}", front.port())])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (n, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{n}>leaf-{n}"));
    }
    let front_calls = |s: &[ReceivedSpan]| s.iter().filter(|s| s.kind == "CLIENT" && s.attr_str("url.path").is_some_and(|p| p.starts_with("/leaf/"))).count();
    let spans = receiver.wait_for(WAIT, |s| front_calls(s) >= N && s.iter().filter(|s| s.kind == "SERVER").count() >= 2 * N).expect("spans arrive");
    let by_id: HashMap<_, _> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    for call in spans.iter().filter(|s| s.kind == "CLIENT" && s.attr_str("url.path").is_some_and(|p| p.starts_with("/leaf/"))) {
        if call.parent_span_id.is_empty() {
            continue;
        }
        let parent = by_id.get(&call.parent_span_id).unwrap_or_else(|| panic!("{}: parent not among the spans", call.pretty()));
        let n = call.attr_str("url.path").unwrap().trim_start_matches("/leaf/");
        assert_eq!(parent.attr_str("url.path"), Some(format!("/client/{n}").as_str()), "{} under {}", call.pretty(), parent.pretty());
    }
    drop(kspan);
}
