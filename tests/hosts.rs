//! Two "hosts" (network namespaces joined by a veth pair), one kspan each,
//! restricted with `--netns`. With `--propagate headers` a call from A to B
//! is one trace; without it, two. Injection must leave every request
//! intact: keep-alive, pipelined, chunked and plain bodies arrive exactly.

mod support;

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const B_ADDR: &str = "192.0.2.2";
const A_ADDR: &str = "192.0.2.1";

/// A pair of namespaces with a veth between them, removed on drop.
struct Hosts {
    a: Netns,
    b: Netns,
}

impl Hosts {
    fn create() -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!("{}{}", std::process::id() % 100000, N.fetch_add(1, Ordering::Relaxed));
        let hosts = Self { a: Netns::create(format!("ksa{id}"))?, b: Netns::create(format!("ksb{id}"))? };
        let (va, vb) = (format!("va{id}"), format!("vb{id}"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", hosts.a.name()])?;
        ip(&["link", "set", &vb, "netns", hosts.b.name()])?;
        for (ns, dev, addr) in [(&hosts.a, &va, A_ADDR), (&hosts.b, &vb, B_ADDR)] {
            ip(&["-n", ns.name(), "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns.name(), "link", "set", dev, "up"])?;
            ip(&["-n", ns.name(), "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }
}

fn prerequisites() -> bool {
    require_root() && require_bpf() && require_python() && require_cmd("curl").is_some() && require_cmd("ip").is_some()
}

/// A listening server inside a namespace: waits by polling that
/// namespace's TCP table (the port is not reachable from here).
fn spawn_in(ns: &Netns, args: &[String], port: u16) -> Server {
    let mut cmd = ns.exec(&python().to_string_lossy());
    cmd.args(args).env("BIND", "0.0.0.0");
    Server::spawn(cmd, port).unwrap_or_else(|e| panic!("server in {}: {e}", ns.name()))
}

fn kspan_on(ns: &Netns, receiver: &Receiver, propagate: bool) -> Kspan {
    let netns = ns.path();
    let mut args = vec!["--netns", &netns];
    if propagate {
        args.extend(["--propagate", "headers"]);
    }
    let kspan = Kspan::exporting_to(receiver, &args);
    // Propagation adds code to the socket programs: were they too big for
    // the verifier, kspan would fall back to the syscall path, and only be
    // slower for it (as it was, unnoticed, for a while).
    assert!(!kspan.log().contains("socket capture programs did not load"), "{}", kspan.log());
    kspan
}

/// nginx on host A, port 8081, its configuration and temp files in `dir`.
fn nginx_on_a(hosts: &Hosts, dir: &TempDir, upstream: &str, server: &str) -> Server {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir.path(), upstream, server)).unwrap();
    let mut nginx = hosts.a.exec("nginx");
    nginx.arg("-c").arg(&conf);
    Server::spawn(nginx, 8081).expect("nginx on host A")
}

fn curl_in(ns: &Netns, args: &[&str]) -> String {
    let out = ns.exec("curl").args(["-sS", "--max-time", "10"]).args(args).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A in host A calls B in host B; returns the spans of request `n`.
fn call_across(propagate: bool, n: u32) -> (Vec<ReceivedSpan>, u32, u32) {
    let hosts = Hosts::create().expect("network namespaces");
    let receiver = Receiver::start().expect("receiver");
    let app = repo_root().join("tests/peers/chain_app.py").to_string_lossy().into_owned();
    let b = spawn_in(&hosts.b, &[app.clone(), "8080".into()], 8080);
    let a = spawn_in(&hosts.a, &[app, "8080".into(), format!("http://{B_ADDR}:8080/hop")], 8080);
    let ka = kspan_on(&hosts.a, &receiver, propagate);
    let kb = kspan_on(&hosts.b, &receiver, propagate);
    assert_eq!(curl_in(&hosts.a, &[&format!("http://127.0.0.1:8080/hop/{n}")]), format!("{n}>leaf-{n}"));
    let path = format!("/hop/{n}");
    let spans = receiver
        .wait_for(WAIT, |s| {
            s.iter().filter(|s| s.attr_str("url.path") == Some(path.as_str())).count() >= 4
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan A:\n{}\nkspan B:\n{}", ka.log(), kb.log()));
    let (pa, pb) = (a.pid(), b.pid());
    drop((ka, kb, a, b));
    (spans, pa, pb)
}

fn by(spans: &[ReceivedSpan], kind: &str, pid: u32) -> ReceivedSpan {
    spans
        .iter()
        .find(|s| s.kind == kind && s.resource_i64("process.pid") == Some(i64::from(pid)))
        .unwrap_or_else(|| panic!("no {kind} span of {pid}: {spans:#?}"))
        .clone()
}

#[test]
fn propagation_joins_hosts_into_one_trace() {
    if !prerequisites() {
        return;
    }
    let (spans, a, b) = call_across(true, 41);
    let curl = spans.iter().find(|s| s.kind == "CLIENT" && s.resource_str("service.name") == Some("curl")).expect("curl");
    let (a_server, a_client, b_server) = (by(&spans, "SERVER", a), by(&spans, "CLIENT", a), by(&spans, "SERVER", b));
    assert_eq!(a_server.parent_span_id, curl.span_id, "same-host link on host A");
    assert_eq!(a_client.parent_span_id, a_server.span_id, "in-process link");
    assert_eq!(b_server.parent_span_id, a_client.span_id, "host B continues host A's client span");
    for s in [&a_server, &a_client, &b_server] {
        assert_eq!(s.trace_id, curl.trace_id, "one trace across hosts");
    }
    assert_eq!(b_server.attr_str("network.peer.address"), Some(A_ADDR));
}

/// Go runs each request on a goroutine that any thread may run, so a
/// thread's last incoming request says nothing about the call it sends
/// next. Under concurrency, what host A injects must never put host B's
/// span into another request's trace.
#[test]
fn go_calls_across_hosts_never_join_another_requests_trace() {
    if !(prerequisites() && require_cmd("go").is_some()) {
        return;
    }
    let build = TempDir::new().unwrap();
    let bin = build_go_chain(&build, &[]);
    let hosts = Hosts::create().expect("network namespaces");
    let receiver = Receiver::start().expect("receiver");
    let go = |ns: &Netns, args: &[&str]| {
        let mut cmd = ns.exec(&bin.to_string_lossy());
        cmd.args(args).env("BIND", "0.0.0.0");
        Server::spawn(cmd, 8080).unwrap_or_else(|e| panic!("go_chain in {}: {e}", ns.name()))
    };
    let b = go(&hosts.b, &["8080"]);
    let a = go(&hosts.a, &["8080", &format!("http://{B_ADDR}:8080")]);
    let ka = kspan_on(&hosts.a, &receiver, true);
    let kb = kspan_on(&hosts.b, &receiver, true);
    let parallel = 24;
    let curls: Vec<_> = (0..parallel)
        .map(|i| {
            hosts.a.exec("curl")
                .args(["-sS", "--max-time", "20", &format!("http://127.0.0.1:8080/client/c{i}")])
                .stdout(Stdio::piped())
                .spawn()
                .expect("curl runs")
        })
        .collect();
    for (i, curl) in curls.into_iter().enumerate() {
        let out = curl.wait_with_output().expect("curl finishes");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("c{i}>leaf-c{i}"));
    }
    let server_of = |s: &ReceivedSpan, pid: u32, path: &str| {
        s.kind == "SERVER" && s.resource_i64("process.pid") == Some(i64::from(pid)) && s.attr_str("url.path") == Some(path)
    };
    let spans = receiver
        .wait_for(WAIT, |s| {
            (0..parallel).all(|i| {
                s.iter().any(|s| server_of(s, a.pid(), &format!("/client/c{i}")))
                    && s.iter().any(|s| server_of(s, b.pid(), &format!("/leaf/c{i}")))
            })
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan A:\n{}\nkspan B:\n{}", ka.log(), kb.log()));
    for i in 0..parallel {
        let b_server = spans.iter().find(|s| server_of(s, b.pid(), &format!("/leaf/c{i}"))).expect("waited for");
        // B's span may start a trace of its own, never join another's.
        for a_server in spans.iter().filter(|s| s.kind == "SERVER" && s.trace_id == b_server.trace_id) {
            assert!(
                a_server.attr_str("url.path") == Some(format!("/client/c{i}").as_str())
                    || a_server.resource_i64("process.pid") == Some(i64::from(b.pid())),
                "{} is in the trace of {}",
                b_server.pretty(),
                a_server.pretty()
            );
        }
    }
    drop((ka, kb, a, b));
}

#[test]
fn without_propagation_hosts_make_two_traces() {
    if !prerequisites() {
        return;
    }
    let (spans, a, b) = call_across(false, 42);
    let (a_client, b_server) = (by(&spans, "CLIENT", a), by(&spans, "SERVER", b));
    assert_ne!(b_server.trace_id, a_client.trace_id);
    assert_eq!(b_server.parent_span_id, "", "B's span is a root");
}

/// A caller's request head arrives in two segments, its `traceparent` in
/// the second, so the server's first read has only the request line. What
/// A injects downstream must still continue the caller's trace, and A's
/// outgoing call stay the child of A's server span.
#[test]
fn head_split_across_reads_keeps_the_callers_trace() {
    if !prerequisites() {
        return;
    }
    let hosts = Hosts::create().expect("network namespaces");
    let receiver = Receiver::start().expect("receiver");
    let peers = repo_root().join("tests/peers");
    let leaf = peers.join("http_app.py").to_string_lossy().into_owned();
    let chain = peers.join("chain_app.py").to_string_lossy().into_owned();
    let b = spawn_in(&hosts.b, &[leaf, "8080".into()], 8080);
    let a = spawn_in(&hosts.a, &[chain, "8080".into(), format!("http://{B_ADDR}:8080/users")], 8080);
    let ka = kspan_on(&hosts.a, &receiver, true);
    let kb = kspan_on(&hosts.b, &receiver, true);
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    // From B, untraced by A's kspan. The pause is what splits the head:
    // with TCP_NODELAY each part leaves as its own segment.
    let client = format!(
        "import socket,time\ns=socket.create_connection(('{A_ADDR}',8080))\n\
         s.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n\
         s.sendall(b'GET /hop/61 HTTP/1.1\\r\\n')\ntime.sleep(0.2)\n\
         s.sendall(b'traceparent: 00-{trace}-{parent}-01\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n')\n\
         d=b''\nwhile True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\nprint(d.decode())\n"
    );
    let out = hosts.b.exec(&python().to_string_lossy()).args(["-c", &client]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#"61>{"id": "61"}"#), "{out:?}");
    // A's server span ends after its client span, and may come in a later
    // export batch: wait for all three.
    let of = |s: &ReceivedSpan, kind: &str, pid: u32| s.kind == kind && s.resource_i64("process.pid") == Some(i64::from(pid));
    let spans = receiver
        .wait_for(WAIT, |s| {
            [("SERVER", a.pid()), ("CLIENT", a.pid()), ("SERVER", b.pid())]
                .iter()
                .all(|(kind, pid)| s.iter().any(|span| of(span, kind, *pid)))
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan A:\n{}\nkspan B:\n{}", ka.log(), kb.log()));
    let (a_server, a_client, b_server) = (by(&spans, "SERVER", a.pid()), by(&spans, "CLIENT", a.pid()), by(&spans, "SERVER", b.pid()));
    assert_eq!((a_server.trace_id.as_str(), a_server.parent_span_id.as_str()), (trace, parent), "A continues its caller");
    assert_eq!(a_client.parent_span_id, a_server.span_id, "in-process link");
    assert_eq!(b_server.parent_span_id, a_client.span_id, "B continues A's client span");
    for s in [&a_client, &b_server] {
        assert_eq!(s.trace_id, trace, "one trace, the caller's");
    }
}

/// With propagation on, the kernel gives each request a thread reads its
/// trace id just after the read that began it. nginx on A serves two
/// requests on one keep-alive connection: the first through B (injected,
/// so the kernel's trace id is the one B continues), the second locally.
/// The second must start its own trace, not join the first one's. The
/// client runs on B, untraced, so nginx's requests carry no traceparent.
#[test]
fn keep_alive_requests_each_start_their_own_trace() {
    if !prerequisites() || require_cmd("nginx").is_none() {
        return;
    }
    let hosts = Hosts::create().expect("network namespaces");
    let receiver = Receiver::start().expect("receiver");
    let app = repo_root().join("tests/peers/http_app.py").to_string_lossy().into_owned();
    let _b = spawn_in(&hosts.b, &[app, "8080".into()], 8080);
    let dir = TempDir::new().unwrap();
    let upstream = format!("upstream b {{ server {B_ADDR}:8080; }}");
    let server = format!(
        "listen {A_ADDR}:8081;\n\
         location /via/ {{ proxy_pass http://b/; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
         location = /local {{ return 200 local; }}"
    );
    let nginx = nginx_on_a(&hosts, &dir, &upstream, &server);
    let ka = kspan_on(&hosts.a, &receiver, true);
    let urls = [format!("http://{A_ADDR}:8081/via/users/51"), format!("http://{A_ADDR}:8081/local")];
    assert_eq!(curl_in(&hosts.b, &[&urls[0], &urls[1]]), r#"{"id": "51"}local"#);
    let nginx_server = |s: &&ReceivedSpan| s.kind == "SERVER" && s.resource_str("service.name") == Some("nginx");
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().filter(nginx_server).count() >= 2)
        .unwrap_or_else(|e| panic!("{e}\nkspan A:\n{}", ka.log()));
    let server_span = |path: &str| spans.iter().filter(nginx_server).find(|s| s.attr_str("url.path") == Some(path)).expect(path);
    let (via, local) = (server_span("/via/users/51"), server_span("/local"));
    assert_eq!(via.attr_i64("network.peer.port"), local.attr_i64("network.peer.port"), "curl kept the connection");
    let upstream_call = spans.iter().find(|s| s.kind == "CLIENT" && s.parent_span_id == via.span_id).expect("nginx's upstream call");
    assert_eq!(upstream_call.trace_id, via.trace_id);
    assert_ne!(local.trace_id, via.trace_id, "two requests, two traces");
    drop(nginx);
}

/// Requests from host A to B's echo service with injection on: every body
/// and response must be exactly what was sent.
#[test]
fn injection_never_corrupts_requests() {
    if !prerequisites() {
        return;
    }
    let hosts = Hosts::create().expect("network namespaces");
    let receiver = Receiver::start().expect("receiver");
    let app = repo_root().join("tests/peers/http_app.py").to_string_lossy().into_owned();
    let _b = spawn_in(&hosts.b, &[app, "8080".into()], 8080);
    let _ka = kspan_on(&hosts.a, &receiver, true);
    let url = format!("http://{B_ADDR}:8080/headers");
    let echo = |args: &[&str]| -> Vec<Value> {
        curl_in(&hosts.a, args)
            .replace("}{", "}\n{")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad answer {l:?}: {e}")))
            .collect()
    };
    // Keep-alive: both requests on one connection get a header.
    let both = echo(&[&url, &url]);
    assert_eq!(both.len(), 2);
    for answer in &both {
        assert!(answer["traceparent"].as_str().is_some_and(|t| t.len() == 55), "{answer}");
    }
    assert_ne!(both[0]["traceparent"], both[1]["traceparent"]);
    // Bodies, plain and chunked, arrive byte-identical.
    let body: String = (0..3000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let sha = |s: &str| {
        let out = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        out.stdin.as_ref().unwrap().write_all(s.as_bytes()).unwrap();
        String::from_utf8_lossy(&out.wait_with_output().unwrap().stdout).split_whitespace().next().unwrap().to_owned()
    };
    let plain = &echo(&["--data-binary", &body, &url])[0];
    assert_eq!(plain["x-body-sha256"], sha(&body).as_str());
    assert!(plain["traceparent"].is_string());
    let chunked = &echo(&["-H", "Transfer-Encoding: chunked", "--data-binary", &body, &url])[0];
    assert_eq!(chunked["x-body-sha256"], sha(&body).as_str());
    // A caller's own traceparent is never duplicated or replaced.
    let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let kept = &echo(&["-H", &format!("traceparent: {own}"), &url])[0];
    assert_eq!(kept["traceparent"], own);
    // Pipelined: two requests in one write. The first may be injected; the
    // second starts mid-message and must arrive untouched.
    let raw = format!(
        "import socket\ns=socket.create_connection(('{B_ADDR}',8080))\n\
         s.sendall(b'GET /headers HTTP/1.1\\r\\nHost: p\\r\\n\\r\\nGET /headers HTTP/1.1\\r\\nHost: q\\r\\nConnection: close\\r\\n\\r\\n')\n\
         d=b''\nwhile True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\nprint(d.decode())\n"
    );
    let out = hosts.a.exec(&python().to_string_lossy()).args(["-c", &raw]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains("\"Host\": \"p\"") && text.contains("\"Host\": \"q\""), "{text}");
    // nginx as a keep-alive proxy client (it sizes reads with FIONREAD, which
    // the sockmap regression under-reports): all answers arrive, intact.
    if require_cmd("nginx").is_some() {
        let dir = TempDir::new().unwrap();
        let upstream = format!("upstream b {{ server {B_ADDR}:8080; keepalive 4; }}");
        let server = "listen 127.0.0.1:8081;\n\
             location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }";
        let _nginx = nginx_on_a(&hosts, &dir, &upstream, server);
        let urls: Vec<String> = (0..20).map(|_| "http://127.0.0.1:8081/headers".to_owned()).collect();
        let args: Vec<&str> = urls.iter().map(String::as_str).collect();
        let answers = echo(&args);
        assert_eq!(answers.len(), 20);
        assert!(answers.iter().all(|a| a["Host"] == "b"), "{answers:?}");
        assert!(answers.iter().filter(|a| a["traceparent"].is_string()).count() >= 1, "nginx's upstream requests injected");
    }
    // Many sequential keep-alive requests from Node.js (epoll client, the
    // one the sockmap receive regression stalls): all complete, fast.
    if require_cmd("node").is_some() {
        let script = format!(
            "const http=require('http');const agent=new http.Agent({{keepAlive:true,maxSockets:1}});\n\
             let n=0;const t0=Date.now();function go(){{http.get({{host:'{B_ADDR}',port:8080,path:'/headers',agent}},r=>{{\n\
             let b='';r.on('data',c=>b+=c);r.on('end',()=>{{if(!JSON.parse(b).traceparent)process.exit(3);\n\
             if(++n<50)go();else{{console.log(Date.now()-t0);process.exit(0);}}}});}}).on('error',e=>{{console.error(e);process.exit(2);}});}}go();"
        );
        // Bounded: a stalled read would otherwise hang the test.
        let mut node = hosts.a.exec("timeout");
        node.args(["30", "node", "-e", &script]);
        let mut child = node.stdout(Stdio::piped()).spawn().unwrap();
        let mut ms = String::new();
        child.stdout.as_mut().unwrap().read_to_string(&mut ms).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "node keep-alive client failed: {status}");
        let ms: u64 = ms.trim().parse().unwrap();
        assert!(ms < 10_000, "50 keep-alive requests took {ms} ms: stalled reads?");
    }
}
