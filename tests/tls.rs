//! TLS plaintext through uprobes on OpenSSL and Go's crypto/tls: real
//! HTTPS servers and clients (Python's ssl module and asyncio, Node.js, Go,
//! curl, nginx), no tracing code, no keys given to kspan; checked on what
//! the OTLP receiver got.

mod support;

use std::{process::Command, time::Duration};

use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn prerequisites() -> bool {
    require_root() && require_bpf() && require_python() && require_cmd("curl").is_some()
}

fn kspan_on_ports(ports: &[u16], receiver: &Receiver, extra: &[&str]) -> Kspan {
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let mut args = vec!["--open-ports", &ports];
    args.extend_from_slice(extra);
    Kspan::exporting_to(receiver, &args)
}

/// A test CA with server and client certificates, in a fresh directory.
fn test_pki() -> TempDir {
    let dir = TempDir::new().unwrap();
    write_pki(dir.path());
    dir
}

/// chain_app.py serving HTTPS with the test PKI's server certificate,
/// calling `downstream` (verified against the test CA) when given.
fn https_app(pki: &TempDir, port: u16, downstream: Option<String>) -> Server {
    https_app_with(pki, port, downstream, &[])
}

fn https_app_with(pki: &TempDir, port: u16, downstream: Option<String>, envs: &[(&str, &std::path::Path)]) -> Server {
    let mut cmd = Command::new(python());
    cmd.envs(envs.iter().copied());
    cmd.arg(repo_root().join("tests/peers/chain_app.py")).arg(port.to_string());
    if let Some(down) = downstream {
        cmd.arg(down);
    }
    cmd.env("TLS_CERT", pki.join("server.pem"))
        .env("TLS_KEY", pki.join("server.key"))
        .env("REQUESTS_CA_BUNDLE", pki.join("ca.pem"));
    Server::spawn(cmd, port).expect("https app starts")
}

/// SERVER span of process `pid` for `GET /hop/{n}`.
fn hop_server(s: &ReceivedSpan, pid: u32, n: u32) -> bool {
    s.kind == "SERVER"
        && s.resource_i64("process.pid") == Some(i64::from(pid))
        && s.attr_str("url.path") == Some(format!("/hop/{n}").as_str())
}

/// `count` requests with a secret query value `query` through curl -> A
/// -> B (servers `a`, `b`; B's path `/hop/N`): each must be one trace of
/// four spans (`assert_https_chain`), and nothing else may be made, such as
/// spans of the handshakes' and records' ciphertext. Returns the spans.
fn requests_form_https_chains(
    receiver: &Receiver,
    kspan: &Kspan,
    pki: &TempDir,
    (a, b): (&Server, &Server),
    count: u32,
    query: &str,
) -> Vec<ReceivedSpan> {
    for n in 1..=count {
        let body = curl_https(pki, &[&format!("https://127.0.0.1:{}/hop/{n}?{query}=secret", a.port())]);
        assert_eq!(body, format!("{n}>leaf-{n}"));
    }
    let all = 4 * count as usize;
    let spans = receiver
        .wait_for(WAIT, |s| {
            (1..=count).all(|n| s.iter().any(|s| hop_server(s, b.pid(), n)) && s.iter().any(|s| hop_server(s, a.pid(), n)))
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    // The clients' spans may trail their servers' by an export batch.
    let spans = receiver.wait_for(Duration::from_secs(10), |s| s.len() >= all).unwrap_or(spans);
    for n in 1..=count {
        assert_https_chain(&spans, a.pid(), b.pid(), b.port(), n, query);
    }
    let dump = || spans.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
    assert_eq!(spans.len(), all, "only the spans of the {count} requests:\n{}", dump());
    spans
}

/// curl -> A -> B (listening on `b_port`) for `/hop/{n}?{query}=secret`:
/// exactly curl's, A's, A's call's and B's spans in one trace, each under
/// the one before, read as HTTPS, the query value redacted.
fn assert_https_chain(spans: &[ReceivedSpan], a: u32, b: u32, b_port: u16, n: u32, query: &str) {
    let dump = || spans.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
    let find = |pid| {
        spans.iter().find(|s| hop_server(s, pid, n)).unwrap_or_else(|| panic!("request {n}: {pid}'s span:\n{}", dump()))
    };
    let (a_server, b_server) = (find(a), find(b));
    for server in [a_server, b_server] {
        assert_eq!(server.name, "GET /hop/{id}", "{}", dump());
        assert_eq!(server.attr_str("url.scheme"), Some("https"), "{}", dump());
        assert_eq!(server.attr_i64("http.response.status_code"), Some(200), "{}", dump());
    }
    assert_eq!(
        a_server.attr_str("url.query"),
        Some(format!("{query}=REDACTED").as_str()),
        "query values redacted over TLS too"
    );
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == a_server.trace_id).collect();
    assert_eq!(trace.len(), 4, "request {n}: curl, A, A's call, B:\n{}", dump());
    let client_of = |service: Option<&str>, pid: Option<u32>| {
        trace
            .iter()
            .find(|s| {
                s.kind == "CLIENT"
                    && service.is_none_or(|name| s.resource_str("service.name") == Some(name))
                    && pid.is_none_or(|pid| s.resource_i64("process.pid") == Some(i64::from(pid)))
            })
            .copied()
            .unwrap_or_else(|| {
                panic!("request {n}: the CLIENT span of {service:?}{pid:?} is in the trace:\n{}", dump())
            })
    };
    let (curl, a_client) = (client_of(Some("curl"), None), client_of(None, Some(a)));
    assert!(curl.is_root(), "curl's span is the root");
    for (child, parent) in [(a_server, curl), (a_client, a_server), (b_server, a_client)] {
        assert_eq!(
            child.parent_span_id,
            parent.span_id,
            "request {n}: {} under {}:\n{}",
            child.name,
            parent.name,
            dump()
        );
    }
    assert_eq!(a_client.attr_str("url.full"), Some(format!("https://127.0.0.1:{b_port}/hop/{n}").as_str()));
}

/// curl -> A -> B, every hop over TLS: the same spans and the same one
/// trace as in plaintext, read from OpenSSL rather than from the sockets.
#[test]
fn https_chain_is_one_trace() {
    if !prerequisites() {
        return;
    }
    let pki = test_pki();
    let receiver = Receiver::start().expect("receiver");
    let (pa, pb) = (free_port(), free_port());
    let b = https_app(&pki, pb, None);
    let a = https_app(&pki, pa, Some(format!("https://127.0.0.1:{pb}/hop")));
    let kspan = kspan_on_ports(&[pa, pb], &receiver, &[]);
    requests_form_https_chains(&receiver, &kspan, &pki, (&a, &b), 2, "token");
    drop(kspan);
}

/// node_https.js: Node.js carries OpenSSL in its executable and runs it
/// over memory BIOs, doing the socket I/O outside SSL_read/SSL_write.
fn node_https(node: &std::path::Path, pki: &TempDir, port: u16, downstream: Option<String>) -> Server {
    let mut cmd = Command::new(node);
    cmd.arg(repo_root().join("tests/peers/node_https.js")).arg(port.to_string());
    if let Some(down) = downstream {
        cmd.arg(down);
    }
    cmd.env("TLS_CERT", pki.join("server.pem"))
        .env("TLS_KEY", pki.join("server.key"))
        .env("NODE_EXTRA_CA_CERTS", pki.join("ca.pem"));
    Server::spawn(cmd, port).expect("node https app starts")
}

/// curl -> Node.js -> Node.js over HTTPS, both apps started after kspan
/// (their executable is attached when they exec): one whole trace per
/// request, from the first request of each fresh connection on.
#[test]
fn node_https_chain_is_one_trace() {
    if !prerequisites() {
        return;
    }
    let Some(node) = require_cmd("node") else {
        return;
    };
    let pki = test_pki();
    let receiver = Receiver::start().expect("receiver");
    let (pa, pb) = (free_port(), free_port());
    let kspan = kspan_on_ports(&[pa, pb], &receiver, &[]);
    let b = node_https(&node, &pki, pb, None);
    // Attached when it exec'd: it has opened no connection yet. (A request
    // made before would race the attach, as it does for a user's.)
    let line = format!("path=/proc/{}/exe", b.pid());
    assert!(wait_until(WAIT, POLL, || kspan.log().contains(&line)), "node attached at exec:\n{}", kspan.log());
    let a = node_https(&node, &pki, pa, Some(format!("https://127.0.0.1:{pb}/hop")));
    requests_form_https_chains(&receiver, &kspan, &pki, (&a, &b), 3, "key");
    drop(kspan);
}

/// `tests/peers/go_chain` serving HTTPS with the test PKI, calling
/// `downstream` (verified against the test CA) when given.
fn go_https(bin: &std::path::Path, pki: &TempDir, port: u16, downstream: Option<String>) -> Server {
    let mut cmd = Command::new(bin);
    cmd.arg(port.to_string());
    if let Some(down) = downstream {
        cmd.arg(down);
    }
    cmd.env("GO_CHAIN_TLS_CERT", pki.join("server.pem"))
        .env("GO_CHAIN_TLS_KEY", pki.join("server.key"))
        .env("SSL_CERT_FILE", pki.join("ca.pem"));
    Server::spawn(cmd, port).expect("go https app starts")
}

/// Go links crypto/tls into each executable and speaks HTTP/2 over it by
/// default (ALPN), to curl and to its own client: curl -> Go -> Go, with
/// no OpenSSL on the Go side.
#[test]
fn go_https_chain_is_one_trace() {
    if !(prerequisites() && require_cmd("go").is_some()) {
        return;
    }
    let pki = test_pki();
    let build = TempDir::new().unwrap();
    // As production images are built: position-independent, and without
    // the ELF symbol table (the functions are found through the pclntab).
    let bin = build_go_chain(&build, &["-buildmode=pie", "-ldflags=-s -w"]);
    let receiver = Receiver::start().expect("receiver");
    let (pa, pb) = (free_port(), free_port());
    let kspan = kspan_on_ports(&[pa, pb], &receiver, &[]);
    let b = go_https(&bin, &pki, pb, None);
    // Attached when it exec'd, before it served anything; Read's bytes
    // taken at its call to memmove.
    let line = format!("path=/proc/{}/exe read_exit=\"memmove\"", b.pid());
    assert!(wait_until(WAIT, POLL, || kspan.log().contains(&line)), "go attached at exec:\n{}", kspan.log());
    let a = go_https(&bin, &pki, pa, Some(format!("https://127.0.0.1:{pb}")));
    let spans = requests_form_https_chains(&receiver, &kspan, &pki, (&a, &b), 3, "key");
    for span in spans.iter().filter(|s| s.resource_str("service.name") == Some("go_chain")) {
        assert_eq!(span.attr_str("network.protocol.version"), Some("2"), "HTTP/2 by ALPN: {}", span.pretty());
    }
    // HTTP/1.1 over the same crypto/tls, where the client asks for it.
    assert_eq!(curl_https(&pki, &["--http1.1", &format!("https://127.0.0.1:{pa}/hop/50")]), "50>leaf-50");
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| hop_server(s, a.pid(), 50)))
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    let h1 = spans.iter().find(|s| hop_server(s, a.pid(), 50)).expect("waited for");
    assert_eq!(h1.attr_str("network.protocol.version"), Some("1.1"), "{}", h1.pretty());
    assert_eq!(h1.attr_str("url.scheme"), Some("https"), "{}", h1.pretty());

    // At once: A multiplexes its calls as streams of one connection to B,
    // written and read by different goroutines on whichever threads.
    let parallel = 16;
    let curls: Vec<_> = (100..100 + parallel)
        .map(|n| {
            Command::new("curl")
                .args(["-sS", "--max-time", "20", "--cacert"])
                .arg(pki.join("ca.pem"))
                .arg(format!("https://127.0.0.1:{pa}/hop/{n}"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl runs")
        })
        .collect();
    for (n, curl) in (100..).zip(curls) {
        let out = curl.wait_with_output().expect("curl finishes");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{n}>leaf-{n}"));
    }
    let spans = receiver
        .wait_for(WAIT, |s| (100..100 + parallel).all(|n| s.iter().any(|s| hop_server(s, b.pid(), n))))
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    let by_id: std::collections::HashMap<_, _> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for n in 100..100 + parallel {
        let b_server = spans.iter().find(|s| hop_server(s, b.pid(), n)).expect("found above");
        let a_client = by_id.get(b_server.parent_span_id.as_str()).unwrap_or_else(|| panic!("{}'s parent", b_server.pretty()));
        assert_eq!(a_client.kind, "CLIENT", "{}", a_client.pretty());
        assert_eq!(a_client.attr_str("url.path"), Some(format!("/hop/{n}").as_str()), "{}", a_client.pretty());
        // The in-process link may be missing under concurrency, never wrong.
        if let Some(a_server) = by_id.get(a_client.parent_span_id.as_str()) {
            assert!(hop_server(a_server, a.pid(), n), "{} under {}", a_client.pretty(), a_server.pretty());
        }
    }
    drop(kspan);
}

/// Where `(*Conn).Read` has no call to memmove to probe (another Go
/// version may compile it otherwise), its bytes are taken at its RETs.
#[test]
fn go_https_read_returns_stand_in_for_memmove() {
    if !(prerequisites() && require_cmd("go").is_some()) {
        return;
    }
    let pki = test_pki();
    let build = TempDir::new().unwrap();
    let bin = build_go_chain(&build, &[]);
    let receiver = Receiver::start().expect("receiver");
    let (pa, pb) = (free_port(), free_port());
    let ports = format!("{pa},{pb}");
    let kspan = Kspan::start(
        &["--open-ports", &ports],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("KSPAN_SIMULATE_GO_READ_WITHOUT_MEMMOVE", "1"),
        ],
    )
    .expect("kspan starts");
    let b = go_https(&bin, &pki, pb, None);
    let line = format!("path=/proc/{}/exe read_exit=\"returns\"", b.pid());
    assert!(wait_until(WAIT, POLL, || kspan.log().contains(&line)), "RET probes attached:\n{}", kspan.log());
    let a = go_https(&bin, &pki, pa, Some(format!("https://127.0.0.1:{pb}")));
    requests_form_https_chains(&receiver, &kspan, &pki, (&a, &b), 2, "key");
    drop(kspan);
}

/// Python's asyncio runs its TLS over memory BIOs too (ssl.MemoryBIO):
/// requests on a kept-alive connection and on a second one.
#[test]
fn asyncio_https_server_spans() {
    if !prerequisites() {
        return;
    }
    let pki = test_pki();
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let kspan = kspan_on_ports(&[port], &receiver, &[]);
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/peers/asyncio_https.py"))
        .arg(port.to_string())
        .env("TLS_CERT", pki.join("server.pem"))
        .env("TLS_KEY", pki.join("server.key"));
    let app = Server::spawn(cmd, port).expect("asyncio https app starts");

    let base = format!("https://127.0.0.1:{port}");
    let kept_alive = curl_https(&pki, &["--http1.1", &format!("{base}/hop/1"), &format!("{base}/hop/2")]);
    assert_eq!(kept_alive, "leaf-1leaf-2");
    assert_eq!(curl_https(&pki, &["--http1.1", &format!("{base}/hop/3")]), "leaf-3");
    curl_https(&pki, &["--http1.1", &format!("{base}/nothing")]);

    let paths = ["/hop/1", "/hop/2", "/hop/3", "/nothing"];
    let server_span = |s: &ReceivedSpan, path: &str| {
        s.kind == "SERVER"
            && s.resource_i64("process.pid") == Some(i64::from(app.pid()))
            && s.attr_str("url.path") == Some(path)
    };
    let spans = receiver
        .wait_for(WAIT, |s| paths.iter().all(|p| s.iter().any(|s| server_span(s, p))) && s.len() >= 8)
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    let dump = || spans.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
    for path in paths {
        let server = spans.iter().find(|s| server_span(s, path)).unwrap();
        assert_eq!(server.attr_str("url.scheme"), Some("https"), "{}", dump());
        let status = if path == "/nothing" { 404 } else { 200 };
        assert_eq!(server.attr_i64("http.response.status_code"), Some(status), "{}", dump());
        let client = spans
            .iter()
            .find(|s| s.kind == "CLIENT" && s.span_id == server.parent_span_id)
            .unwrap_or_else(|| panic!("{path} is under curl's span:\n{}", dump()));
        assert_eq!(client.resource_str("service.name"), Some("curl"));
    }
    assert_eq!(spans.len(), 8, "a SERVER and a CLIENT span per request, nothing made of ciphertext:\n{}", dump());
    drop(kspan);
}

/// nginx over TLS with HTTP/2 (ALPN) and HTTP/1.1, curl as the client; and
/// a request sent along with the handshake's end.
#[test]
fn nginx_https_http2_and_http1() {
    if !prerequisites() || require_cmd("nginx").is_none() {
        return;
    }
    let pki = test_pki();
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let dir = TempDir::new().unwrap();
    let server = format!(
        "listen 127.0.0.1:{port} ssl http2;\n\
         ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;\n\
         location /items/ {{ return 200 \"item\\n\"; }}\n\
         location /boom {{ return 503; }}",
        cert = pki.join("server.pem").display(),
        key = pki.join("server.key").display(),
    );
    let _nginx = start_nginx(dir.path(), "", &server, port).expect("nginx starts");
    let kspan = kspan_on_ports(&[port], &receiver, &[]);

    let base = format!("https://127.0.0.1:{port}");
    assert_eq!(curl_https(&pki, &["--http2", &format!("{base}/items/7")]), "item\n");
    curl_https(&pki, &["--http2", &format!("{base}/boom")]);
    assert_eq!(curl_https(&pki, &["--http1.1", &format!("{base}/items/8")]), "item\n");
    // The request rides with the handshake's last message: nginx's
    // handshake reads it, and its first SSL_read does no socket I/O.
    let eager = Command::new(python())
        .arg(repo_root().join("tests/peers/tls_eager_client.py"))
        .args([&port.to_string(), "/items/9"])
        .arg(pki.join("ca.pem"))
        .output()
        .expect("eager client runs");
    assert_eq!(
        String::from_utf8_lossy(&eager.stdout).trim(),
        "HTTP/1.1 200 OK",
        "{}",
        String::from_utf8_lossy(&eager.stderr)
    );

    let server_span = |s: &ReceivedSpan, path: &str| s.kind == "SERVER" && s.attr_str("url.path") == Some(path);
    let spans = receiver
        .wait_for(WAIT, |s| {
            ["/items/7", "/boom", "/items/8", "/items/9"].iter().all(|p| s.iter().any(|s| server_span(s, p)))
                && s.iter().filter(|s| s.kind == "CLIENT").count() >= 3
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    let dump = || spans.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
    let find = |path: &str| spans.iter().find(|s| server_span(s, path)).unwrap();
    let h2 = find("/items/7");
    assert_eq!(h2.name, "GET /items/{id}");
    assert_eq!(h2.attr_str("network.protocol.version"), Some("2"));
    assert_eq!(h2.attr_str("url.scheme"), Some("https"));
    assert_eq!(h2.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(h2.resource_str("service.name"), Some("nginx"));
    assert_eq!(find("/boom").status.code, "ERROR", "a 503 fails the server span");
    let h1 = find("/items/8");
    assert_eq!(h1.attr_str("network.protocol.version"), Some("1.1"));
    assert_eq!(h1.attr_str("url.scheme"), Some("https"));
    for server in [h2, h1] {
        let client = spans
            .iter()
            .find(|s| s.kind == "CLIENT" && s.span_id == server.parent_span_id)
            .unwrap_or_else(|| panic!("{} is under curl's span:\n{}", server.pretty(), dump()));
        assert_eq!(client.resource_str("service.name"), Some("curl"));
        assert_eq!(client.trace_id, server.trace_id);
    }
    drop(kspan);
}

/// `--tls off`: TLS connections are seen as ciphertext and make no spans
/// (nothing misparsed), while plaintext is traced as before.
#[test]
fn tls_off_makes_no_spans_of_ciphertext() {
    if !prerequisites() {
        return;
    }
    let pki = test_pki();
    let receiver = Receiver::start().expect("receiver");
    let (tls_port, plain_port) = (free_port(), free_port());
    let _tls = https_app(&pki, tls_port, None);
    let mut plain = Command::new(python());
    plain.arg(repo_root().join("tests/peers/chain_app.py")).arg(plain_port.to_string());
    let _plain = Server::spawn(plain, plain_port).expect("plain app starts");
    let kspan = kspan_on_ports(&[tls_port, plain_port], &receiver, &["--tls", "off"]);

    assert_eq!(curl_https(&pki, &[&format!("https://127.0.0.1:{tls_port}/hop/1")]), "leaf-1");
    assert_eq!(curl_https(&pki, &[&format!("http://127.0.0.1:{plain_port}/hop/2")]), "leaf-2");
    let spans = receiver
        .wait_for(WAIT, |s| s.iter().any(|s| s.kind == "SERVER" && s.attr_str("url.path") == Some("/hop/2")))
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    // The plaintext request's spans went out after the TLS one's would have.
    let spans = receiver.wait_for(Duration::from_secs(5), |s| s.len() >= 2).unwrap_or(spans);
    let dump = spans.iter().map(|s| s.pretty()).collect::<Vec<_>>().join("\n");
    assert!(spans.iter().all(|s| s.attr_str("url.path") == Some("/hop/2")), "only the plaintext request:\n{dump}");
    drop(kspan);
}

/// The host's libssl, as the Python the tests run links it.
fn host_libssl() -> std::path::PathBuf {
    let so = Command::new(python()).args(["-c", "import _ssl; print(_ssl.__file__)"]).output().expect("python runs");
    let ldd = Command::new("ldd").arg(String::from_utf8_lossy(&so.stdout).trim()).output().expect("ldd runs");
    let text = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let path = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("libssl.so.3 => ")?.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| panic!("python's _ssl links no libssl.so.3:\n{text}"));
    path.into()
}

/// A libssl that is not the host's (a container's, a vendored copy) is
/// found in the maps of the processes using it: at start-up for those
/// already running, at their first connection for later ones.
#[test]
fn private_libssl_copies_are_found_in_process_maps() {
    if !prerequisites() || require_cmd("ldd").is_none() {
        return;
    }
    let pki = test_pki();
    let libs = [TempDir::new().unwrap(), TempDir::new().unwrap()];
    for dir in &libs {
        std::fs::copy(host_libssl(), dir.join("libssl.so.3")).expect("copy libssl");
    }
    let receiver = Receiver::start().expect("receiver");
    let (early_port, late_port) = (free_port(), free_port());
    let early = https_app_with(&pki, early_port, None, &[("LD_LIBRARY_PATH", libs[0].path())]);
    let kspan = kspan_on_ports(&[early_port, late_port], &receiver, &[]);
    let attached = |dir: &TempDir, pid: u32| {
        let line = format!("path=/proc/{pid}/root{}", dir.join("libssl.so.3").display());
        wait_until(WAIT, POLL, || kspan.log().contains(&line))
    };
    assert!(attached(&libs[0], early.pid()), "the running app's copy attached at start:\n{}", kspan.log());
    assert_eq!(curl_https(&pki, &[&format!("https://127.0.0.1:{early_port}/hop/1")]), "leaf-1");

    let late = https_app_with(&pki, late_port, None, &[("LD_LIBRARY_PATH", libs[1].path())]);
    // Its first connection makes kspan look at its maps; that request may
    // be done before the probes are in.
    curl_https(&pki, &[&format!("https://127.0.0.1:{late_port}/hop/2")]);
    assert!(attached(&libs[1], late.pid()), "the later app's copy attached at its first connection:\n{}", kspan.log());
    assert_eq!(curl_https(&pki, &[&format!("https://127.0.0.1:{late_port}/hop/3")]), "leaf-3");

    let server = |s: &ReceivedSpan, pid: u32, path: &str| {
        s.kind == "SERVER"
            && s.resource_i64("process.pid") == Some(i64::from(pid))
            && s.attr_str("url.path") == Some(path)
    };
    let spans = receiver
        .wait_for(WAIT, |s| {
            s.iter().any(|s| server(s, early.pid(), "/hop/1")) && s.iter().any(|s| server(s, late.pid(), "/hop/3"))
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    let early_span = spans.iter().find(|s| server(s, early.pid(), "/hop/1")).unwrap();
    assert_eq!(early_span.attr_str("url.scheme"), Some("https"));
    drop(kspan);
}
