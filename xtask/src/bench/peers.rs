//! The processes a benchmark runs: nginx, the Flask app (plain or under the
//! OpenTelemetry Python SDK), the OTLP receiver and kspan itself. Each is a
//! [`Proc`], so it is stopped when dropped, whatever happens.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;

use super::{
    json,
    procs::{self, Proc},
};

/// Servers listen within this; kspan attaches within its own bound.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const KSPAN_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// kspan flushes its export queue on SIGTERM; a slow receiver may need a while.
const KSPAN_STOP_GRACE: Duration = Duration::from_secs(60);

/// Body nginx serves: about the size of a small HTML page or JSON answer.
const STATIC_BYTES: usize = 1024;

pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    pub tls: bool,
}

impl Nginx {
    /// One worker (the other core runs wrk), keep-alive without a request
    /// cap, enough descriptors for the 10k-idle-connection test, no access
    /// log (disk I/O would be measured, not HTTP). `sendfile off` so the
    /// body goes through write/writev like most application servers'.
    pub fn start(dir: &Path) -> anyhow::Result<Nginx> {
        Self::start_with(dir, false)
    }

    /// The same server over HTTPS (TLS 1.3 with a self-signed P-256
    /// certificate): nginx reads and writes through OpenSSL's libssl.
    pub fn start_tls(dir: &Path) -> anyhow::Result<Nginx> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let mut req = Command::new("openssl");
        req.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert);
        let out = req.output().context("running openssl req (Debian package openssl)")?;
        anyhow::ensure!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        Self::start_with(dir, true)
    }

    fn start_with(dir: &Path, tls: bool) -> anyhow::Result<Nginx> {
        let port = procs::free_port()?;
        let www = dir.join("www");
        fs::create_dir_all(&www).context("creating the nginx web root")?;
        let mut page = String::from("<!doctype html><title>bench</title><p>");
        page.push_str(&"kspan ".repeat((STATIC_BYTES - page.len() - 1) / 6));
        page.push('\n');
        fs::write(www.join("index.html"), page).context("writing the static file")?;
        let d = dir.display();
        let listen = if tls {
            format!(
                "listen 127.0.0.1:{port} ssl backlog=4096; ssl_protocols TLSv1.3; \
                 ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;"
            )
        } else {
            format!("listen 127.0.0.1:{port} backlog=4096;")
        };
        let conf = format!(
            "daemon off; master_process on; worker_processes 1; worker_rlimit_nofile 65536;\n\
             pid {d}/nginx.pid; error_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 40000; }}\n\
             http {{ access_log off; sendfile off; keepalive_timeout 600s; keepalive_requests 100000000;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ {listen} root {d}/www;\n\
                 location / {{ index index.html; }} }} }}\n"
        );
        let path = dir.join("nginx.conf");
        fs::write(&path, conf).context("writing nginx.conf")?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(&path).arg("-e").arg(dir.join("nginx-error.log"));
        let mut proc = Proc::spawn("nginx", cmd, &dir.join("nginx.log"))?;
        proc.wait_ready("listening", START_TIMEOUT, || procs::listening(port))?;
        Ok(Nginx { proc, port, tls })
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/index.html", self.port)
    }
}

/// How the Flask app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyMode {
    /// `python chain_app.py`: no tracing code (kspan may watch it).
    Plain,
    /// `opentelemetry-instrument python chain_app.py`: the OpenTelemetry
    /// Python SDK's auto-instrumentation, exporting OTLP/gRPC.
    Otel { grpc_port: u16 },
}

pub struct PyApp {
    pub proc: Proc,
    pub port: u16,
}

impl PyApp {
    /// `tests/peers/chain_app.py` as a leaf (no downstream). Every mode uses
    /// the bench venv's interpreter and packages, so the only difference
    /// between modes is the instrumentation.
    pub fn start(venv: &Path, mode: PyMode, dir: &Path, tag: &str) -> anyhow::Result<PyApp> {
        let port = procs::free_port()?;
        let app = crate::workspace_root().join("tests/peers/chain_app.py");
        let mut cmd = match mode {
            PyMode::Plain => Command::new(venv.join("bin/python3")),
            PyMode::Otel { .. } => {
                let mut c = Command::new(venv.join("bin/opentelemetry-instrument"));
                c.args(["--traces_exporter", "otlp", "--metrics_exporter", "none", "--logs_exporter", "none"])
                    .args(["--service_name", "chain_app"])
                    .arg(venv.join("bin/python3"));
                c
            }
        };
        cmd.arg(&app).arg(port.to_string());
        // The SDK reads OTEL_* from the environment: none may leak in from the shell.
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        if let PyMode::Otel { grpc_port } = mode {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{grpc_port}"))
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .env("OTEL_EXPORTER_OTLP_INSECURE", "true");
        }
        cmd.env("PYTHONUNBUFFERED", "1");
        let mut proc = Proc::spawn("chain_app.py", cmd, &dir.join(format!("chain_app-{tag}.log")))?;
        proc.wait_ready("listening", START_TIMEOUT, || procs::listening(port))?;
        Ok(PyApp { proc, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hop/1", self.port)
    }
}

/// The count-only OTLP/gRPC sink (`cargo xtask otlp-sink`, this binary)
/// on an ephemeral port.
pub struct Receiver {
    pub proc: Proc,
    pub grpc_port: u16,
    pub spans: SpanCounter,
}

impl Receiver {
    pub fn start(sink: &Path, dir: &Path, tag: &str) -> anyhow::Result<Receiver> {
        let out = dir.join(format!("spans-{tag}.jsonl"));
        let ready = dir.join(format!("receiver-{tag}.ready"));
        let _ = fs::remove_file(&ready);
        let mut cmd = Command::new(sink);
        cmd.arg("otlp-sink").arg("--out").arg(&out).arg("--ready-file").arg(&ready);
        let mut proc = Proc::spawn("otlp-sink", cmd, &dir.join(format!("receiver-{tag}.log")))?;
        proc.wait_ready("ready file", START_TIMEOUT, || ready.exists())?;
        let info = json::parse(&fs::read_to_string(&ready).context("reading the receiver's ready file")?)?;
        let grpc_port = info.get("grpc").and_then(json::Json::as_f64).context("no grpc port in the ready file")? as u16;
        Ok(Receiver { proc, grpc_port, spans: SpanCounter::new(out) })
    }

    /// Counts after the receiver stopped growing for `quiet` (spans still in
    /// kspan's queue or in flight land meanwhile), bounded by `timeout`.
    pub fn settled(&mut self, quiet: Duration, timeout: Duration) -> anyhow::Result<SpanCounts> {
        let mut err = None;
        let counts = procs::settle(quiet, timeout, || match self.spans.poll() {
            Ok(c) => c,
            Err(e) => {
                err.get_or_insert(e);
                self.spans.counts
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(counts),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    pub total: u64,
    pub server: u64,
}

impl std::ops::Sub for SpanCounts {
    type Output = SpanCounts;
    fn sub(self, o: SpanCounts) -> SpanCounts {
        SpanCounts { total: self.total - o.total, server: self.server - o.server }
    }
}

/// Reads the receiver's per-request count lines incrementally.
pub struct SpanCounter {
    path: PathBuf,
    offset: u64,
    counts: SpanCounts,
}

impl SpanCounter {
    fn new(path: PathBuf) -> SpanCounter {
        SpanCounter { path, offset: 0, counts: SpanCounts::default() }
    }

    pub fn poll(&mut self) -> anyhow::Result<SpanCounts> {
        let Ok(mut f) = fs::File::open(&self.path) else { return Ok(self.counts) };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).context("reading the span file")?;
        // Only whole lines: the receiver writes a request's lines at once,
        // but a read may still land mid-write.
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else { return Ok(self.counts) };
        for line in buf[..end].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            // One line per export request (the receiver's --count-only).
            let batch = json::parse(std::str::from_utf8(line).context("receiver line is not UTF-8")?)?;
            let field = |name| batch.get(name).and_then(json::Json::as_f64).map(|n| n as u64);
            self.counts.total += field("batch_total").context("receiver line without batch_total")?;
            self.counts.server += field("batch_server").context("receiver line without batch_server")?;
        }
        self.offset += end as u64 + 1;
        Ok(self.counts)
    }

    /// Empties the file once everything in it has been counted, so a long
    /// run does not leave gigabytes of spans on disk. Call only while no
    /// export is in flight (after a settle); the receiver appends with
    /// O_APPEND, so its next write lands at the new end.
    pub fn discard_read(&mut self) -> anyhow::Result<()> {
        self.poll()?;
        let Ok(f) = fs::OpenOptions::new().write(true).open(&self.path) else { return Ok(()) };
        if f.metadata()?.len() == self.offset {
            f.set_len(0).context("truncating the span file")?;
            self.offset = 0;
        }
        Ok(())
    }
}

pub struct Kspan {
    pub proc: Proc,
}

impl Kspan {
    /// kspan tracing the server process and its children (`--pid`), as on a
    /// node whose clients are elsewhere: wrk shares this host only for want
    /// of a second one, so it is not traced. Prints nothing and exports
    /// OTLP/gRPC to `grpc_port` (`None`: no endpoint, spans are built and
    /// dropped).
    pub fn start(bin: &Path, server_pid: u32, grpc_port: Option<u16>, extra: &[&str], log: &Path) -> anyhow::Result<Kspan> {
        Self::spawn(bin, &["--pid", &server_pid.to_string()], grpc_port, extra, log)
    }

    /// kspan with no filter, as the DaemonSet runs it: every process on the
    /// host is traced, wrk (the clients) and the receiver included.
    pub fn start_whole_host(bin: &Path, grpc_port: Option<u16>, log: &Path) -> anyhow::Result<Kspan> {
        Self::spawn(bin, &[], grpc_port, &[], log)
    }

    fn spawn(bin: &Path, filter: &[&str], grpc_port: Option<u16>, extra: &[&str], log: &Path) -> anyhow::Result<Kspan> {
        let mut cmd = Command::new(bin);
        cmd.args(filter).args(["--print", "none"]).args(extra);
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k.starts_with("KSPAN_") {
                cmd.env_remove(k);
            }
        }
        if let Some(port) = grpc_port {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}")).env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        }
        cmd.env("NO_COLOR", "1");
        let mut proc = Proc::spawn("kspan", cmd, log)?;
        let log = log.to_path_buf();
        proc.wait_ready("`kspan ready` in its log", KSPAN_READY_TIMEOUT, || {
            fs::read_to_string(&log).is_ok_and(|t| t.contains("kspan ready"))
        })?;
        Ok(Kspan { proc })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Ids of kspan's BPF programs, from `prog_id:` in its fds' fdinfo
    /// (programs and the links that hold them both show one).
    pub fn prog_ids(&self) -> anyhow::Result<Vec<u32>> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let mut ids: Vec<u32> = fs::read_dir(&dir)
            .with_context(|| format!("listing {dir}"))?
            .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.strip_prefix("prog_id:").and_then(|v| v.trim().parse().ok()))
                    .collect::<Vec<u32>>()
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Latest `kspan metrics` counters in the log (periodic or final).
    pub fn metrics(&self) -> BTreeMap<String, u64> {
        parse_metrics(&self.proc.log_text())
    }

    /// SIGTERM (kspan flushes its queue and logs its final counters), then
    /// the final counters.
    pub fn stop(mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        let (status, killed) = self.proc.stop(KSPAN_STOP_GRACE).context("kspan was already stopped")?;
        let text = self.proc.log_text();
        anyhow::ensure!(!killed && status.success(), "kspan did not exit cleanly ({status}):\n{}", procs::tail(&text));
        let m = parse_metrics(&text);
        anyhow::ensure!(!m.is_empty(), "kspan logged no `kspan metrics` line:\n{}", procs::tail(&text));
        Ok(m)
    }
}

/// `... kspan metrics events=1 events_dropped_ringbuf=0 ...` (last such line).
fn parse_metrics(log: &str) -> BTreeMap<String, u64> {
    let Some(line) = log.lines().rev().find(|l| l.contains("kspan metrics")) else { return BTreeMap::new() };
    strip_ansi(line)
        .split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// tracing colours its output unless told not to; NO_COLOR is set, but a
/// stray escape must not break the parse.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_metrics_line() {
        let log = "x INFO kspan::metrics: kspan metrics events=1 spans=2\n\
                   y INFO kspan::metrics: \u{1b}[3mkspan metrics\u{1b}[0m events=5 events_dropped_ringbuf=0 spans=9\n";
        let m = parse_metrics(log);
        assert_eq!((m["events"], m["spans"], m["events_dropped_ringbuf"]), (5, 9, 0));
    }
}
