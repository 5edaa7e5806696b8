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
    kspan_on_ports(&[chain.a.port(), chain.b.port(), chain.c.port()], receiver)
}

/// kspan tracing whatever listens on `ports`, exporting to `receiver`.
fn kspan_on_ports(ports: &[u16], receiver: &Receiver) -> Kspan {
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    Kspan::exporting_to(receiver, &["--open-ports", &ports])
}

/// curl's CLIENT span for `path` and every span of its trace.
fn curl_trace<'a>(spans: &'a [ReceivedSpan], path: &str) -> (&'a ReceivedSpan, Vec<&'a ReceivedSpan>) {
    let root = spans
        .iter()
        .find(|s| s.kind == "CLIENT" && s.resource_str("service.name") == Some("curl") && s.attr_str("url.path") == Some(path))
        .unwrap_or_else(|| panic!("no curl span for {path}"));
    (root, spans.iter().filter(|s| s.trace_id == root.trace_id).collect())
}

/// The one span of `kind` that process `pid` has in `trace`.
fn one_in<'a>(trace: &[&'a ReceivedSpan], kind: &str, pid: u32, context: &dyn Fn() -> String) -> &'a ReceivedSpan {
    let found: Vec<_> = trace.iter().filter(|s| s.kind == kind && s.resource_i64("process.pid") == Some(i64::from(pid))).collect();
    assert_eq!(found.len(), 1, "one {kind} span of pid {pid} expected in the trace:\n{}", context());
    found[0]
}

/// The six spans of request `n`, checked to form the expected tree.
fn check_trace(spans: &[ReceivedSpan], chain: &Chain, n: u32) {
    let (root, trace) = curl_trace(spans, &format!("/hop/{n}"));
    let dump = || trace.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
    assert_eq!(trace.len(), 6, "request {n}: one trace of six spans, got:\n{}", dump());
    let one = |kind: &str, process: u32| one_in(&trace, kind, process, &dump);
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

/// `count` curls at once, each for `/hop/N` on `port` (the chain, or a
/// proxy in front of it), each checked to get the chain's answer.
fn get_hops_at_once(port: u16, count: usize) {
    let children: Vec<_> = (0..count)
        .map(|n| {
            Command::new("curl")
                .args(["-sS", "--max-time", "20", &format!("http://127.0.0.1:{port}/hop/{n}")])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (n, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{n}>{n}>item-{n}"));
    }
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
    get_hops_at_once(chain.a.port(), 20);
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

/// nginx in front of the chain: its one worker serves many requests at once
/// and forwards each over kept-alive upstream connections, so neither its
/// thread nor the process names the request a call belongs to. Each call
/// repeats its request's line, and that ties them (with no `traceparent`
/// from the caller and no header injection).
#[test]
fn nginx_reverse_proxy_keeps_concurrent_requests_whole() {
    if !prerequisites() || require_cmd("nginx").is_none() {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let chain = start_chain();
    let dir = TempDir::new().unwrap();
    let port = free_port();
    let upstream = format!("upstream chain {{ server 127.0.0.1:{}; keepalive 8; }}", chain.a.port());
    let server = format!(
        "listen 127.0.0.1:{port}; location / {{ proxy_pass http://chain; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }}"
    );
    let nginx = start_nginx(dir.path(), &upstream, &server, port).expect("nginx");
    let kspan = kspan_on_ports(&[port, chain.a.port(), chain.b.port(), chain.c.port()], &receiver);

    let requests = 16;
    get_hops_at_once(port, requests);
    // The worker's spans: it is the master's child.
    let of_nginx = |s: &ReceivedSpan| s.resource_i64("process.parent_pid") == Some(i64::from(nginx.pid()));
    let spans = receiver
        .wait_for(WAIT, |s| {
            let leaves = s.iter().filter(|s| s.kind == "SERVER" && s.attr_str("url.path").is_some_and(|p| p.starts_with("/items/")));
            leaves.count() >= requests && s.iter().filter(|s| of_nginx(s)).count() >= 2 * requests
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    let worker = spans.iter().find(|s| of_nginx(s)).and_then(|s| s.resource_i64("process.pid")).expect("nginx worker pid");
    let worker = u32::try_from(worker).expect("a pid");
    for n in 0..requests {
        let (root, trace) = curl_trace(&spans, &format!("/hop/{n}"));
        let dump = || trace.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
        assert_eq!(trace.len(), 8, "request {n}: curl, nginx (2), A (2), B (2) and C in one trace:\n{}", dump());
        let one = |kind: &str, pid: u32| one_in(&trace, kind, pid, &dump);
        let nginx_server = one("SERVER", worker);
        let nginx_client = one("CLIENT", worker);
        let a_server = one("SERVER", chain.a.pid());
        for (child, parent) in [(nginx_server, root), (nginx_client, nginx_server), (a_server, nginx_client)] {
            assert_eq!(child.parent_span_id, parent.span_id, "request {n}: {} under {}:\n{}", child.name, parent.name, dump());
        }
        assert_eq!(nginx_client.attr_str("url.path"), Some(format!("/hop/{n}").as_str()), "no cross-request links");
    }
    drop(kspan);
}

/// A front and a leaf of one runtime, from the same program: GET
/// /client/N on the front calls the leaf's /leaf/N with the runtime's own
/// HTTP client and answers `N>leaf-N`.
struct RuntimeChain {
    front: Server,
    leaf: Server,
    service: &'static str,
}

impl RuntimeChain {
    fn start(service: &'static str, command: impl Fn(u16) -> Command) -> Self {
        let spawn = |port: u16, down: Option<String>| {
            let mut cmd = command(port);
            cmd.args(down);
            // The JVM compiles the source first.
            Server::spawn_with(cmd, port, Probe::Listening, Duration::from_secs(60)).expect("peer server")
        };
        let leaf = spawn(free_port(), None);
        let front = spawn(free_port(), Some(format!("http://127.0.0.1:{}", leaf.port())));
        Self { front, leaf, service }
    }

    /// Java: `JavaChain.java` by the source launcher (`/url/N` calls with
    /// HttpURLConnection instead, on the handler's own thread).
    fn java() -> Self {
        Self::start("JavaChain", |port| {
            let mut cmd = Command::new("java");
            cmd.arg(repo_root().join("tests/peers/JavaChain.java")).arg(port.to_string());
            cmd
        })
    }

    /// Go: `tests/peers/go_chain`, built here with the standard library only.
    fn go(dir: &TempDir) -> Self {
        let bin = build_go_chain(dir, &[]);
        Self::start("go_chain", |port| {
            let mut cmd = Command::new(&bin);
            cmd.arg(port.to_string());
            cmd
        })
    }

    fn kspan(&self, receiver: &Receiver) -> Kspan {
        kspan_on_ports(&[self.front.port(), self.leaf.port()], receiver)
    }

    fn get(&self, path: &str) -> std::process::Child {
        Command::new("curl")
            .args(["-sS", "--max-time", "30", &format!("http://127.0.0.1:{}/{path}", self.front.port())])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Requests `paths` (`kind/N`) one at a time: each must be one trace of
    /// curl -> front SERVER -> front CLIENT -> leaf SERVER.
    fn check_sequential(&self, receiver: &Receiver, paths: &[&str]) {
        let n_of = |path: &str| path[path.find('/').unwrap() + 1..].to_owned();
        for path in paths {
            let out = self.get(path).wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{0}>leaf-{0}", n_of(path)));
        }
        let leaf_spans = |s: &[ReceivedSpan]| s.iter().filter(|s| s.kind == "SERVER" && s.attr_str("url.path").is_some_and(|p| p.starts_with("/leaf/"))).count();
        let spans = receiver.wait_for(WAIT, |s| leaf_spans(s) >= paths.len() && s.len() >= 4 * paths.len()).expect("spans arrive");
        let dump = || spans.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
        for path in paths {
            let (root, trace) = curl_trace(&spans, &format!("/{path}"));
            let one = |kind: &str, process: u32| one_in(&trace, kind, process, &dump);
            let front_server = one("SERVER", self.front.pid());
            let front_client = one("CLIENT", self.front.pid());
            let leaf_server = one("SERVER", self.leaf.pid());
            assert_eq!(trace.len(), 4, "/{path}: one trace of four spans:\n{}", dump());
            for (child, parent) in [(front_server, root), (front_client, front_server), (leaf_server, front_client)] {
                assert_eq!(child.parent_span_id, parent.span_id, "/{path}: {} under {}:\n{}", child.name, parent.name, dump());
            }
            assert_eq!(leaf_server.attr_str("url.path"), Some(format!("/leaf/{}", n_of(path)).as_str()));
            for span in [front_server, front_client, leaf_server] {
                assert_eq!(span.resource_str("service.name"), Some(self.service), "{}", span.pretty());
            }
        }
    }

    /// Many requests at once: the front's calls may go unlinked, but a
    /// linked one is never under another request.
    fn check_concurrent(&self, receiver: &Receiver, n: usize) {
        // Ids of their own, apart from any earlier requests'.
        let children: Vec<_> = (0..n).map(|i| self.get(&format!("client/c{i}"))).collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("c{i}>leaf-c{i}"));
        }
        let count = |s: &[ReceivedSpan], kind: &str, prefix: &str| {
            s.iter().filter(|s| s.kind == kind && s.attr_str("url.path").is_some_and(|p| p.starts_with(prefix))).count()
        };
        let spans = receiver
            .wait_for(WAIT, |s| {
                count(s, "CLIENT", "/leaf/c") >= n && count(s, "SERVER", "/leaf/c") >= n && count(s, "SERVER", "/client/c") >= n
            })
            .expect("spans arrive");
        let by_id: HashMap<_, _> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
        let calls = spans.iter().filter(|s| s.kind == "CLIENT" && s.attr_str("url.path").is_some_and(|p| p.starts_with("/leaf/")));
        for call in calls.filter(|s| !s.parent_span_id.is_empty()) {
            let parent = by_id.get(&call.parent_span_id).unwrap_or_else(|| panic!("{}: parent not among the spans", call.pretty()));
            let i = call.attr_str("url.path").unwrap().trim_start_matches("/leaf/");
            assert_eq!(parent.attr_str("url.path"), Some(format!("/client/{i}").as_str()), "{} under {}", call.pretty(), parent.pretty());
        }
    }
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
    let chain = RuntimeChain::java();
    let kspan = chain.kspan(&receiver);
    chain.check_sequential(&receiver, &["client/1", "url/2", "client/3", "client/4", "url/5"]);
    drop(kspan);
}

#[test]
fn java_http_client_calls_never_cross_link_under_concurrency() {
    if !(prerequisites() && require_cmd("java").is_some()) {
        return;
    }
    let receiver = Receiver::start().expect("receiver");
    let chain = RuntimeChain::java();
    let kspan = chain.kspan(&receiver);
    chain.check_concurrent(&receiver, 16);
    drop(kspan);
}

/// Go: goroutines, not threads, serve requests, and net/http's transport
/// writes each call from a goroutine of its own.
#[test]
fn go_services_form_one_trace_and_never_cross_link() {
    if !(prerequisites() && require_cmd("go").is_some()) {
        return;
    }
    let dir = TempDir::new().unwrap();
    let receiver = Receiver::start().expect("receiver");
    let chain = RuntimeChain::go(&dir);
    let kspan = chain.kspan(&receiver);
    chain.check_sequential(&receiver, &["client/1", "client/2", "client/3", "client/4"]);
    chain.check_concurrent(&receiver, 24);
    drop(kspan);
}
