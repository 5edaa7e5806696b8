//! Command line, `KSPAN_*` environment and config file, merged in that order
//! of precedence. A config file uses the long flag names as keys.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::export::PrintMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Print {
    /// Print spans when no OTLP endpoint is configured.
    Auto,
    /// One readable line per span.
    Text,
    /// One JSON object per span and line.
    Json,
    /// Print nothing.
    None,
}

impl From<Print> for PrintMode {
    fn from(p: Print) -> Self {
        match p {
            Print::Auto => PrintMode::Auto,
            Print::Text => PrintMode::Text,
            Print::Json => PrintMode::Json,
            Print::None => PrintMode::None,
        }
    }
}

/// Cross-host context propagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagate {
    /// Link only what arrives with `traceparent` or meets on this host.
    None,
    /// Insert `traceparent` into outgoing plaintext HTTP/1.x requests that
    /// have none (sk_msg), so the callee's kspan continues the trace.
    Headers,
}

/// Where the kernel programs capture socket data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureHook {
    /// `sockets` where the kernel has it, else `syscalls`; also `syscalls`,
    /// with a warning, when the kernel refuses to load the `sockets` programs.
    Auto,
    /// The `sock_send_length`/`sock_recv_length` tracepoints (Linux >= 6.13,
    /// x86_64): only socket I/O pays, and other syscalls keep their fast path.
    Sockets,
    /// Enter and exit tracepoints of the data syscalls: every kernel, but
    /// every syscall on the host takes the tracing slow path.
    Syscalls,
}

/// Whether TLS connections are read through their library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsCapture {
    /// Uprobes on OpenSSL's `SSL_read`/`SSL_write` (and `_ex`) in each
    /// libssl found; TLS capture is left off, with a warning, if the kernel
    /// refuses them.
    Auto,
    /// No uprobes: TLS connections are seen as ciphertext and not parsed.
    Off,
}

/// kspan: OpenTelemetry traces for every service on this host, from the
/// kernel, with no code changes. OTLP export is configured with the standard
/// OTEL_EXPORTER_OTLP_* variables; without an endpoint, spans are printed.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "kspan", version, about, long_about = None)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Cli {
    /// Config file (YAML or TOML) with the same keys as the long flags.
    #[arg(long, env = "KSPAN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Trace only these processes (comma-separated or repeated). Their
    /// children are traced too.
    #[arg(long, env = "KSPAN_PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Trace only executables whose path matches: a glob (`*/python3*`; `*` also matches `/`), or
    /// a regex when prefixed with `re:` (`re:^/usr/sbin/(nginx|haproxy)$`).
    #[arg(long, env = "KSPAN_EXE_PATH")]
    pub exe_path: Option<String>,

    /// Trace processes that listen on or connect to these ports
    /// (`80,8000-8999`).
    #[arg(long, env = "KSPAN_OPEN_PORTS")]
    pub open_ports: Option<String>,

    /// Trace only processes in this network namespace
    /// (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
    #[arg(long, env = "KSPAN_NETNS")]
    pub netns: Option<PathBuf>,

    /// Cross-host context propagation: `none` or `headers`.
    #[arg(long, env = "KSPAN_PROPAGATE", value_enum)]
    pub propagate: Option<Propagate>,

    /// Span printing on stdout.
    #[arg(long, env = "KSPAN_PRINT", value_enum)]
    pub print: Option<Print>,

    /// Route template for span names (`/users/{id}`, `/static/*`);
    /// repeatable; wins over the built-in heuristic.
    #[arg(long = "route", env = "KSPAN_ROUTE", value_delimiter = ',')]
    #[serde(alias = "routes")]
    pub route: Vec<String>,

    /// Payload bytes captured per socket syscall (1..=16384).
    #[arg(long, env = "KSPAN_CAPTURE_SIZE")]
    pub capture_size: Option<u32>,

    /// Where socket data is captured: `auto`, `sockets` or `syscalls`.
    #[arg(long, env = "KSPAN_CAPTURE_HOOK", value_enum)]
    pub capture_hook: Option<CaptureHook>,

    /// TLS plaintext from OpenSSL and Go's crypto/tls: `auto` attaches
    /// uprobes to every libssl traced processes map and to every Go
    /// executable; `off` leaves TLS connections unparsed.
    #[arg(long, env = "KSPAN_TLS", value_enum)]
    pub tls: Option<TlsCapture>,

    /// Kernel ring buffer size in bytes (a power of two, >= 4096).
    #[arg(long, env = "KSPAN_RINGBUF_SIZE")]
    pub ringbuf_size: Option<u32>,

    /// Most connections tracked at once; older ones are evicted.
    #[arg(long, env = "KSPAN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Seconds between self-metrics log lines (0 = only at exit).
    #[arg(long, env = "KSPAN_METRICS_INTERVAL")]
    pub metrics_interval: Option<u64>,

    /// Serve kspan's counters for Prometheus (`GET /metrics`) and a liveness
    /// check (`GET /healthz`) on this address, e.g. `0.0.0.0:9464`; off when unset.
    #[arg(long, env = "KSPAN_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Write every kernel event as a JSON line to this file (debugging;
    /// contains payload bytes).
    #[arg(long, env = "KSPAN_EVENTS_LOG")]
    pub events_log: Option<PathBuf>,

    /// Kernel BTF file to read struct layouts from.
    #[arg(long, env = "KSPAN_BTF")]
    pub btf: Option<PathBuf>,

    /// The kubelet's container log links (`<pod>_<namespace>_<container>-<id>.log`):
    /// where present, a pod's processes are named after the workload that owns
    /// the pod and get `k8s.*` attributes. Default `/var/log/containers`.
    #[arg(long, env = "KSPAN_POD_LOGS")]
    pub pod_logs: Option<PathBuf>,

    /// Docker's container configs (`<id>/config.v2.json`): where present,
    /// processes in Docker containers get `container.name` and
    /// `container.image.name`, and a Compose service's are named after it.
    /// Default `/var/lib/docker/containers`.
    #[arg(long, env = "KSPAN_DOCKER_CONTAINERS")]
    pub docker_containers: Option<PathBuf>,

    /// Log filter (`info`, `debug`, `kspan=debug`...).
    #[arg(long, env = "KSPAN_LOG")]
    pub log: Option<String>,
}

/// The merged, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub pids: Vec<u32>,
    pub exe_path: Option<ExeMatcher>,
    pub open_ports: Option<String>,
    pub netns: Option<PathBuf>,
    pub propagate: Propagate,
    pub print: Print,
    pub routes: Vec<String>,
    pub capture_size: u32,
    pub capture_hook: CaptureHook,
    pub tls: TlsCapture,
    pub ringbuf_size: u32,
    pub max_connections: usize,
    pub metrics_interval: u64,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub events_log: Option<PathBuf>,
    pub btf: PathBuf,
    pub pod_logs: PathBuf,
    pub docker_containers: PathBuf,
    pub log: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("--exe-path {pattern:?}: {message}")]
    ExePath { pattern: String, message: String },
    #[error("--ringbuf-size {0} must be a power of two >= 4096")]
    RingbufSize(u32),
}

impl Cli {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => Cli::default(),
        };
        let ringbuf_size = self.ringbuf_size.or(file.ringbuf_size).unwrap_or(16 * 1024 * 1024);
        if !ringbuf_size.is_power_of_two() || ringbuf_size < 4096 {
            return Err(ConfigError::RingbufSize(ringbuf_size));
        }
        let exe_path = self.exe_path.or(file.exe_path).map(|p| ExeMatcher::new(&p)).transpose()?;
        Ok(Config {
            pids: pick_vec(self.pid, file.pid),
            exe_path,
            open_ports: self.open_ports.or(file.open_ports),
            netns: self.netns.or(file.netns),
            propagate: self.propagate.or(file.propagate).unwrap_or(Propagate::None),
            print: self.print.or(file.print).unwrap_or(Print::Auto),
            routes: pick_vec(self.route, file.route),
            capture_size: self.capture_size.or(file.capture_size).unwrap_or(kspan_common::DEFAULT_CAPTURE),
            capture_hook: self.capture_hook.or(file.capture_hook).unwrap_or(CaptureHook::Auto),
            tls: self.tls.or(file.tls).unwrap_or(TlsCapture::Auto),
            ringbuf_size,
            max_connections: self.max_connections.or(file.max_connections).unwrap_or(65536),
            metrics_interval: self.metrics_interval.or(file.metrics_interval).unwrap_or(30),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            events_log: self.events_log.or(file.events_log),
            btf: self.btf.or(file.btf).unwrap_or_else(|| PathBuf::from(crate::capture::btf::VMLINUX_BTF)),
            pod_logs: self.pod_logs.or(file.pod_logs).unwrap_or_else(|| PathBuf::from("/var/log/containers")),
            docker_containers: self
                .docker_containers
                .or(file.docker_containers)
                .unwrap_or_else(|| PathBuf::from("/var/lib/docker/containers")),
            log: self.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
        })
    }
}

/// A list from the command line replaces the file's list entirely.
fn pick_vec<T>(cli: Vec<T>, file: Vec<T>) -> Vec<T> {
    if cli.is_empty() { file } else { cli }
}

fn load_file(path: &Path) -> Result<Cli, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    let parse_err = |message: String| ConfigError::Parse { path: path.display().to_string(), message };
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).map_err(|e| parse_err(e.to_string())),
        Some("yaml" | "yml") => serde_yaml_ng::from_str(&text).map_err(|e| parse_err(e.to_string())),
        _ => toml::from_str(&text)
            .or_else(|_| serde_yaml_ng::from_str(&text))
            .map_err(|e: serde_yaml_ng::Error| parse_err(format!("neither TOML nor YAML: {e}"))),
    }
}

/// `--exe-path`: a glob, or a regex after `re:`.
#[derive(Debug, Clone)]
pub struct ExeMatcher {
    regex: regex::Regex,
}

impl ExeMatcher {
    pub fn new(pattern: &str) -> Result<Self, ConfigError> {
        let source = match pattern.strip_prefix("re:") {
            Some(re) => re.to_owned(),
            None => glob_to_regex(pattern),
        };
        regex::Regex::new(&source)
            .map(|regex| Self { regex })
            .map_err(|e| ConfigError::ExePath { pattern: pattern.to_owned(), message: e.to_string() })
    }

    pub fn matches(&self, exe: &str) -> bool {
        self.regex.is_match(exe)
    }
}

/// `*` matches any run of characters (slashes too: `*/nginx` should find
/// `/usr/sbin/nginx`), `?` one character; everything else is literal.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kspan").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn cli_beats_file_and_defaults_apply() {
        let dir = std::env::temp_dir().join(format!("kspan-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_path = dir.join("k.toml");
        std::fs::write(
            &toml_path,
            "open-ports = \"80,8000-8999\"\nroute = [\"/users/{id}\"]\ncapture-size = 2048\nprint = \"json\"\n",
        )
        .unwrap();
        let cfg = parse(&["--config", toml_path.to_str().unwrap(), "--capture-size", "1024"]).into_config().unwrap();
        assert_eq!(cfg.capture_size, 1024);
        assert_eq!(cfg.open_ports.as_deref(), Some("80,8000-8999"));
        assert_eq!(cfg.routes, vec!["/users/{id}"]);
        assert_eq!(cfg.print, Print::Json);
        assert_eq!(cfg.ringbuf_size, 16 * 1024 * 1024);

        let yaml_path = dir.join("k.yaml");
        std::fs::write(&yaml_path, "pid: [1, 2]\nexe-path: \"*/nginx\"\n").unwrap();
        let cfg = parse(&["--config", yaml_path.to_str().unwrap()]).into_config().unwrap();
        assert_eq!(cfg.pids, vec![1, 2]);
        assert!(cfg.exe_path.unwrap().matches("/usr/sbin/nginx"));

        std::fs::write(&yaml_path, "no-such-key: 1\n").unwrap();
        let err = parse(&["--config", yaml_path.to_str().unwrap()]).into_config().unwrap_err();
        assert!(err.to_string().contains("no-such-key"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn exe_globs_and_regexes() {
        let g = ExeMatcher::new("/usr/*/python3.1?").unwrap();
        assert!(g.matches("/usr/bin/python3.11"));
        assert!(g.matches("/usr/local/bin/python3.12"));
        assert!(!g.matches("/usr/bin/python3.9"));
        assert!(!g.matches("/opt/usr/bin/python3.11"), "anchored");
        assert!(ExeMatcher::new("*/node").unwrap().matches("/opt/x/y/node"));
        let r = ExeMatcher::new("re:/(nginx|redis-server)$").unwrap();
        assert!(r.matches("/usr/sbin/nginx") && !r.matches("/usr/sbin/nginx2"));
        assert!(ExeMatcher::new("re:(").is_err());
    }

    #[test]
    fn bad_ringbuf_size_is_rejected() {
        assert!(matches!(parse(&["--ringbuf-size", "5000"]).into_config(), Err(ConfigError::RingbufSize(5000))));
    }

    #[test]
    fn every_flag_has_an_env_var_and_help() {
        use clap::CommandFactory;
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert!(env.as_deref().is_some_and(|e| e.starts_with("KSPAN_")), "--{id} has no KSPAN_ variable");
            assert!(arg.get_help().is_some(), "--{id} has no help");
        }
    }
}
