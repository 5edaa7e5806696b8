//! The deployment files, run the way they say: the systemd unit's
//! capability set and command line, the DaemonSet's arguments, environment
//! and liveness probe, and what the image is built from. Each test reads
//! the file itself, so an edit there is what gets tested.

mod support;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::Duration,
};

use serde::Deserialize as _;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn prerequisites() -> bool {
    require_root() && require_bpf() && require_python() && require_cmd("curl").is_some()
}

fn deploy_file(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("deploy").join(name)).expect("deploy file readable")
}

/// Values of `key=` lines of a unit file, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=')).collect()
}

/// `CAP_BPF CAP_SYS_ADMIN` as setpriv's `-all,+bpf,+sys_admin`.
fn setpriv_caps(caps: &str) -> String {
    let mut spec = String::from("-all");
    for cap in caps.split_whitespace() {
        spec.push_str(",+");
        spec.push_str(&cap.trim_start_matches("CAP_").to_ascii_lowercase());
    }
    spec
}

/// kspan's bounding set, as `/proc/PID/status` shows it.
fn bounding_set(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status readable");
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).expect("CapBnd line");
    u64::from_str_radix(hex.trim(), 16).expect("CapBnd is hex")
}

/// kspan under `setpriv`: root, holding only the capabilities `caps` (none
/// inheritable, so the exec cannot regain the rest), with the unit's own
/// arguments plus `extra`.
fn kspan_with_caps(receiver: &Receiver, caps: &str, unit_args: &[&str], extra: &[&str]) -> Kspan {
    let bin = kspan_bin();
    let bounding = format!("--bounding-set={}", setpriv_caps(caps));
    let mut args = vec![bounding.as_str(), "--inh-caps=-all", "--"];
    let bin_arg = bin.to_string_lossy();
    args.push(&bin_arg);
    args.extend_from_slice(unit_args);
    args.extend_from_slice(extra);
    let setpriv = which("setpriv").expect("setpriv (util-linux)");
    Kspan::start_bin(
        &setpriv,
        &args,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        KSPAN_READY_TIMEOUT,
    )
    .expect("kspan starts under setpriv")
}

/// chain_app.py named by its environment; over HTTPS (OpenSSL uprobes)
/// with `pki`.
fn named_app(pki: Option<&TempDir>, port: u16, service: &str) -> Server {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/peers/chain_app.py")).arg(port.to_string()).env("OTEL_SERVICE_NAME", service);
    if let Some(pki) = pki {
        cmd.env("TLS_CERT", pki.join("server.pem")).env("TLS_KEY", pki.join("server.key"));
    }
    Server::spawn(cmd, port).expect("app starts")
}

/// The unit passes `systemd-analyze verify`, and kspan holding exactly its
/// `CapabilityBoundingSet` does the whole job without a warning: programs
/// and OpenSSL uprobes load, `--exe-path` selects a root-owned service (its
/// `exe` takes CAP_SYS_PTRACE to read), and that service's HTTPS request
/// becomes a span named from its environment. Without CAP_SYS_PTRACE,
/// kspan says what it cannot do.
#[test]
fn systemd_unit_runs_with_only_its_capabilities() {
    if !prerequisites() {
        return;
    }
    let (Some(analyze), Some(_)) = (require_cmd("systemd-analyze"), require_cmd("setpriv")) else {
        return;
    };
    let unit = deploy_file("systemd/kspan.service");

    let exec_start = unit_values(&unit, "ExecStart");
    assert_eq!(exec_start.len(), 1, "one ExecStart");
    let mut exec = exec_start[0].split_whitespace();
    let installed = exec.next().expect("ExecStart names the binary");
    let unit_args: Vec<&str> = exec.collect();
    let dir = TempDir::new().unwrap();
    let copy = dir.join("kspan.service");
    std::fs::write(&copy, unit.replace(installed, &kspan_bin().to_string_lossy())).unwrap();
    let verify = Command::new(analyze).arg("verify").arg(&copy).output().expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && !said.contains("kspan.service:"), "systemd-analyze verify: {said}");

    let caps = unit_values(&unit, "CapabilityBoundingSet");
    assert_eq!(caps.len(), 1, "the unit bounds kspan's capabilities");
    let caps = caps[0];
    assert!(caps.contains("CAP_SYS_PTRACE"), "the unit keeps CAP_SYS_PTRACE: {caps}");

    let pki = TempDir::new().unwrap();
    write_pki(pki.path());
    let receiver = Receiver::start().expect("receiver");
    let port = free_port();
    let _app = named_app(Some(&pki), port, "unit-probe");
    let plain_port = free_port();
    let _plain_app = named_app(None, plain_port, "unit-probe");
    let ports = plain_port.to_string();

    let python = std::fs::canonicalize(python()).expect("the venv's python resolves");
    let python = python.to_string_lossy();
    let kspan = kspan_with_caps(&receiver, caps, &unit_args, &["--exe-path", &python]);
    assert_eq!(
        bounding_set(kspan.pid()).count_ones() as usize,
        caps.split_whitespace().count(),
        "kspan holds only the unit's capabilities"
    );
    curl_https(&pki, &[&format!("https://127.0.0.1:{port}/hop/1")]);
    let named = |name: &str| {
        let name = name.to_owned();
        move |s: &ReceivedSpan| {
            s.kind == "SERVER"
                && s.attr_str("url.path") == Some("/hop/1")
                && s.resource_str("service.name") == Some(name.as_str())
        }
    };
    receiver.wait_for_matching(WAIT, 1, named("unit-probe")).unwrap_or_else(|e| panic!("{e}\n{}", kspan.log()));
    let log = kspan.stop().expect("kspan stops").log();
    assert!(!log.contains(" WARN "), "kspan warned with the unit's capabilities:\n{log}");

    let without_ptrace = caps.split_whitespace().filter(|c| *c != "CAP_SYS_PTRACE").collect::<Vec<_>>().join(" ");
    let kspan = kspan_with_caps(&receiver, &without_ptrace, &unit_args, &["--open-ports", &ports]);
    // Plain HTTP and selected by port: opening a process's libssl through
    // its /proc/PID/root takes ptrace access too.
    let status = http_get(plain_port, "/hop/1");
    assert_eq!(status, 200);
    let plain = |s: &ReceivedSpan| s.kind == "SERVER" && s.attr_str("url.scheme") == Some("http");
    receiver.wait_for_matching(WAIT, 1, plain).unwrap_or_else(|e| panic!("{e}\n{}", kspan.log()));
    let log = kspan.stop().expect("kspan stops").log();
    assert!(log.contains("running without CAP_SYS_PTRACE"), "no word of the missing capability:\n{log}");
}

/// The DaemonSet's container: its arguments and environment (with
/// `$(VAR)` expanded as the kubelet does) start kspan, its node name
/// reaches the spans' resource, and its liveness probe's path answers on
/// the port its arguments open. The collector address is the test's.
#[test]
fn daemonset_container_starts_and_answers_its_liveness_probe() {
    if !prerequisites() {
        return;
    }
    let manifest = deploy_file("kubernetes/daemonset.yaml");
    let daemonset = serde_yaml_ng::Deserializer::from_str(&manifest)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect("valid YAML"))
        .find(|doc| doc["kind"] == "DaemonSet")
        .expect("a DaemonSet document");
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    let probe_path = container["livenessProbe"]["httpGet"]["path"].as_str().expect("probe path");
    let probe_port_name = container["livenessProbe"]["httpGet"]["port"].as_str().expect("probe port name");
    let ports = container["ports"].as_sequence().expect("container ports");
    let probe_port = ports
        .iter()
        .find(|p| p["name"] == probe_port_name)
        .and_then(|p| p["containerPort"].as_u64())
        .expect("the probe's port is declared");

    // The manifest's port is that of a node; a free one stands in for it.
    let port = free_port();
    let mut args: Vec<String> = container["args"]
        .as_sequence()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").replace(&format!(":{probe_port}"), &format!(":{port}")))
        .collect();
    assert!(args.iter().any(|a| a.ends_with(&format!(":{port}"))), "the args open the probe's port: {args:?}");

    let receiver = Receiver::start().expect("receiver");
    let mut env: HashMap<String, String> = HashMap::new();
    for var in container["env"].as_sequence().expect("container env") {
        let name = var["name"].as_str().expect("env name").to_owned();
        let value = match (var["value"].as_str(), &var["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Some(v), _) => expand(v, &env),
            (None, field) if *field == "spec.nodeName" => "deploy-test-node".to_owned(),
            (None, field) => panic!("env {name}: unexpected source {field:?}"),
        };
        env.insert(name, value);
    }
    assert!(env.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"), "the manifest names a collector");
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.grpc_endpoint.clone());
    env.insert("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into());
    // The container traces the whole node; here that is one test server.
    let app_port = free_port();
    args.extend(["--open-ports".to_owned(), app_port.to_string()]);

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let kspan = Kspan::start(&args, &env).expect("kspan starts with the DaemonSet's args and env");

    let status = http_get(port, probe_path);
    assert_eq!(status, 200, "liveness probe {probe_path} on :{port}\n{}", kspan.log());

    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/peers/http_app.py")).arg(app_port.to_string());
    let _app = Server::spawn(cmd, app_port).expect("python app starts");
    let status = http_get(app_port, "/users/7");
    assert_eq!(status, 200);
    let spans = receiver
        .wait_for_matching(WAIT, 1, |s| s.kind == "SERVER" && s.attr_str("url.path") == Some("/users/7"))
        .unwrap_or_else(|e| panic!("{e}\n{}", kspan.log()));
    let span = &spans[0];
    assert_eq!(span.resource_str("k8s.node.name"), Some("deploy-test-node"), "{}", span.pretty());
}

/// `$(VAR)` references to variables defined earlier, as the kubelet
/// expands them; anything else is left as written.
fn expand(value: &str, defined: &HashMap<String, String>) -> String {
    let mut out = value.to_owned();
    for (name, v) in defined {
        out = out.replace(&format!("$({name})"), v);
    }
    out
}

/// Status code of a plain HTTP/1.1 GET on loopback.
fn http_get(port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reads the answer");
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The image the DaemonSet runs is built from the release binary alone
/// (the build context admits nothing else), onto a base that has every
/// library the binary links: glibc's and libgcc's, which any Debian image
/// has. A new dynamic dependency (libssl, say) would break the image.
#[test]
fn image_is_the_release_binary_on_a_debian_base() {
    let dockerfile = deploy_file("kubernetes/Dockerfile");
    let from = dockerfile.lines().find_map(|l| l.strip_prefix("FROM ")).expect("FROM line");
    assert!(from.starts_with("debian:"), "a Debian base: {from}");
    let copy = dockerfile.lines().find_map(|l| l.strip_prefix("COPY ")).expect("COPY line");
    let (source, target) = copy.split_once(' ').expect("COPY source target");
    assert_eq!(source, "target/release/kspan", "the image takes the release build");
    assert!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{target}\"]")),
        "the DaemonSet passes only args: the entrypoint must be kspan"
    );
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    let admitted: Vec<&str> = ignore.lines().filter_map(|l| l.strip_prefix('!')).collect();
    assert!(ignore.lines().any(|l| l.trim() == "*") && admitted == [source], "context is the binary alone: {ignore}");

    let Some(ldd) = require_cmd("ldd") else {
        return;
    };
    let bin = kspan_bin();
    let out = Command::new(ldd).arg(&bin).output().expect("ldd runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    for line in listing.lines() {
        let lib = line.split_whitespace().next().unwrap_or("");
        let base = Path::new(lib).file_name().and_then(|n| n.to_str()).unwrap_or(lib);
        assert!(
            ["linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2"].contains(&base),
            "{} links {lib}, which a bare Debian image lacks:\n{listing}",
            bin.display()
        );
    }
}
