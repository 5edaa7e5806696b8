//! Shared helpers for kspan's integration tests.
//!
//! Include from a test file with `mod support;` (the module must sit at the
//! test crate's root under that name: `skip_or_fail!` refers to
//! `$crate::support`).
//!
//! What is here:
//! * paths: [`repo_root`], [`python`], [`receiver_script`], [`kspan_bin`];
//! * gatekeeping: [`is_ci`], [`skip_or_fail!`], [`require`], [`require_root`],
//!   [`require_bpf`], [`require_cmd`], [`require_python`] — a missing
//!   prerequisite skips the test locally but fails it under `CI=true|1`, so CI
//!   can never go green by skipping everything;
//! * processes: [`Receiver`] (tests/otlp_receiver.py), [`Kspan`] (the agent),
//!   [`Server`] (peer servers), all killed on Drop, all with logs in a
//!   [`TempDir`] that their error messages quote;
//! * polling: [`wait_until`], [`free_port`], [`wait_listening`], [`wait_connectable`].
//!
//! Synchronisation is always "poll a condition with a deadline", never a
//! fixed sleep: fast machines stay fast and slow CI gets the full deadline.
//!
//! Environment knobs:
//! * `CI=true|1`           missing prerequisites fail instead of skipping;
//! * `KSPAN_TEST_VENV`     venv holding tests/requirements.txt
//!   (default `<repo>/target/test-venv`);
//! * `KSPAN_BIN`           kspan binary to run instead of the cargo-built one;
//! * `KSPAN_REPO_ROOT`     repository root (default: parent of the package dir);
//! * `KSPAN_TEST_KEEP=1`   keep temp dirs (logs, span files) for post-mortems.

// Each integration test compiles its own copy of this module and uses a
// subset of it; without this every test binary would warn about the rest.
#![allow(dead_code, unused_macros, unused_imports)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Poll interval for every wait in this module: short enough to add no
/// noticeable latency, long enough not to burn a CPU on a 2-core CI box.
pub const POLL: Duration = Duration::from_millis(50);
/// How long the Python receiver may take to bind (imports grpc: ~0.5 s).
pub const RECEIVER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long kspan may take to load/attach its eBPF programs and say ready.
/// Debug builds verifying large programs on a busy CI machine are slow.
pub const KSPAN_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a peer server may take to start listening.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace period between SIGTERM and SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Error messages quote at most this much of each log (the end of it).
const LOG_TAIL_BYTES: u64 = 64 * 1024;

// ---------------------------------------------------------------------------
// paths
// ---------------------------------------------------------------------------

/// The repository root: `$KSPAN_REPO_ROOT`, else the parent of the package
/// directory (`CARGO_MANIFEST_DIR` is `<repo>/agent` for kspan's tests).
pub fn repo_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KSPAN_REPO_ROOT") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The test venv: `$KSPAN_TEST_VENV`, default `<repo>/target/test-venv`.
pub fn venv() -> PathBuf {
    match std::env::var_os("KSPAN_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join("target/test-venv"),
    }
}

/// The test venv's interpreter (`<venv>/bin/python3`).
pub fn python() -> PathBuf {
    venv().join("bin/python3")
}

/// `<repo>/tests/otlp_receiver.py`.
pub fn receiver_script() -> PathBuf {
    repo_root().join("tests/otlp_receiver.py")
}

/// The kspan binary: `$KSPAN_BIN`, else the one cargo built for this
/// integration test (`CARGO_BIN_EXE_kspan`), else `<repo>/target/debug/kspan`.
pub fn kspan_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KSPAN_BIN") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_kspan") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("target/debug/kspan"),
    }
}

// ---------------------------------------------------------------------------
// gatekeeping
// ---------------------------------------------------------------------------

/// True when `CI` is `true`/`1`/`yes` (any case): prerequisites are mandatory.
pub fn is_ci() -> bool {
    std::env::var("CI")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(false)
}

/// Handles a missing prerequisite: panics under CI, otherwise prints
/// `SKIPPED: <reason>` to stderr. Returns normally only when not in CI, so
/// the caller should `return` right after (or use [`skip_or_fail!`]).
#[track_caller]
pub fn skip_or_fail_reason(reason: &str) {
    if is_ci() {
        panic!("prerequisite missing under CI (CI=true makes this a failure): {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// `skip_or_fail!("no {thing}")`: fail the test under CI, otherwise print
/// `SKIPPED: ...` and `return` from the calling test function (which must
/// return `()`).
macro_rules! skip_or_fail {
    ($($arg:tt)+) => {{
        $crate::support::skip_or_fail_reason(&format!($($arg)+));
        return;
    }};
}
pub(crate) use skip_or_fail;

/// Unwraps a prerequisite check: `Some(value)` if it holds; otherwise fails
/// (CI) or prints `SKIPPED: <what>: <error>` and gives `None`:
/// `let Some(x) = require("nginx", which("nginx")) else { return };`
#[track_caller]
pub fn require<T, E: Display>(what: &str, result: Result<T, E>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            skip_or_fail_reason(&format!("{what}: {e:#}"));
            None
        }
    }
}

/// `if !require_root() { return; }` — kspan loads eBPF programs.
#[track_caller]
pub fn require_root() -> bool {
    require("must run as root", check_root()).is_some()
}

/// Root, kernel BTF, and a BPF map can actually be created (catches
/// containers/seccomp profiles that deny bpf(2) even to root).
#[track_caller]
pub fn require_bpf() -> bool {
    require("eBPF unavailable", check_bpf()).is_some()
}

/// `let Some(nginx) = require_cmd("nginx") else { return };`
#[track_caller]
pub fn require_cmd(name: &str) -> Option<PathBuf> {
    require(&format!("peer program `{name}` missing"), which(name))
}

/// The test venv exists and imports what the receiver needs.
#[track_caller]
pub fn require_python() -> bool {
    require("python test venv unusable", check_python()).is_some()
}

pub fn check_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        bail!("effective uid is {euid}, not 0")
    }
}

pub fn check_bpf() -> Result<()> {
    check_root()?;
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    if !btf.exists() {
        bail!(
            "{} missing: kernel built without CONFIG_DEBUG_INFO_BTF",
            btf.display()
        );
    }
    // BPF_MAP_CREATE of a 1-entry array map: the cheapest real bpf(2) call.
    // union bpf_attr is zero-padded; the kernel accepts a larger-than-known
    // attr as long as the tail is zero.
    let mut attr = [0u32; 32];
    attr[0] = 2; // map_type = BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key_size
    attr[2] = 4; // value_size
    attr[3] = 1; // max_entries
    const BPF_MAP_CREATE: libc::c_long = 0;
    // SAFETY: attr outlives the call and its size is passed alongside.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        bail!("bpf(BPF_MAP_CREATE) failed: {err}");
    }
    // SAFETY: fd was just returned to us by the kernel.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

pub fn check_python() -> Result<PathBuf> {
    let py = python();
    if !py.exists() {
        bail!(
            "{} not found; create it with `python3 -m venv {v} && {v}/bin/pip install -r {r}` \
             (or point KSPAN_TEST_VENV at one)",
            py.display(),
            v = venv().display(),
            r = repo_root().join("tests/requirements.txt").display()
        );
    }
    let out = Command::new(&py)
        .args(["-c", "import grpc, google.protobuf, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import the receiver's modules (pip install -r tests/requirements.txt): {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(py)
}

/// `$PATH` lookup of an executable.
pub fn which(name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if fs::metadata(&p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
        {
            return Ok(p);
        }
    }
    bail!("`{name}` not found in PATH")
}

// ---------------------------------------------------------------------------
// small utilities
// ---------------------------------------------------------------------------

/// Calls `f` every `interval` until it returns true (→ true) or `timeout`
/// has passed (→ false). `f` always runs at least once, and once more at the
/// deadline, so a condition that becomes true during the last sleep counts.
pub fn wait_until(timeout: Duration, interval: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

/// A currently free TCP port on 127.0.0.1 (bind :0, read, close). Another
/// process could grab it before the caller binds it; with the kernel's
/// ephemeral-port rotation that is rare enough for tests.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A directory `/tmp/kspan-test-<pid>-<n>`, removed (recursively) on Drop
/// unless `KSPAN_TEST_KEEP=1`.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kspan-test-{}-{n}", std::process::id()));
        // A leftover from an earlier process with a recycled pid is stale.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KSPAN_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("KSPAN_TEST_KEEP=1: keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The last [`LOG_TAIL_BYTES`] of a file, lossily decoded ("" if unreadable).
pub fn read_log(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut prefix = String::new();
    if len > LOG_TAIL_BYTES {
        let _ = f.seek(SeekFrom::Start(len - LOG_TAIL_BYTES));
        prefix = format!("[... first {} bytes omitted ...]\n", len - LOG_TAIL_BYTES);
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    prefix + &String::from_utf8_lossy(&buf)
}

/// Opens `path` for a child's stdout+stderr (one file, both streams).
fn log_stdio(path: &Path) -> Result<(Stdio, Stdio)> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let g = f.try_clone()?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

/// Sends `sig` to `pid` and all its descendants. Children are not put in
/// their own process group (so Ctrl-C on `cargo test` still reaches them);
/// instead the tree is found through /proc, so e.g. `sh -c 'server'` wrappers
/// don't leave the real server behind. Descendants are collected before any
/// signal is sent, because they get re-parented as soon as a parent dies.
pub fn signal_tree(pid: u32, sig: libc::c_int) {
    let mut parent_of: HashMap<u32, u32> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may contain
            // spaces and parens, so split after the *last* ')'.
            if let Ok(stat) = fs::read_to_string(e.path().join("stat"))
                && let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..])
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok())
            {
                parent_of.insert(p, ppid);
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let cur = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|&(_, &pp)| pp == cur)
                .map(|(&c, _)| c),
        );
        i += 1;
    }
    for p in tree {
        // SAFETY: kill(2) with a pid we observed; ESRCH (already gone) is fine.
        unsafe { libc::kill(p as libc::pid_t, sig) };
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL the whole tree. Returns the exit
/// status and whether SIGKILL was needed.
fn terminate(child: &mut Child, grace: Duration) -> (Option<ExitStatus>, bool) {
    if let Ok(Some(st)) = child.try_wait() {
        return (Some(st), false);
    }
    // SIGTERM only to the direct child: it is the one expected to shut down
    // cleanly (kspan detaching its programs, the receiver closing its file).
    // SAFETY: the child has not been reaped (try_wait above returned None),
    // so its pid cannot have been recycled.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut status = None;
    wait_until(grace, POLL, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if let Some(st) = status {
        return (Some(st), false);
    }
    signal_tree(child.id(), libc::SIGKILL);
    (child.wait().ok(), true)
}

// ---------------------------------------------------------------------------
// Receiver: tests/otlp_receiver.py
// ---------------------------------------------------------------------------

/// A running tests/otlp_receiver.py on ephemeral ports.
pub struct Receiver {
    /// `http://127.0.0.1:P` for OTLP/gRPC.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:P` base for OTLP/HTTP (append `/v1/traces` yourself
    /// if the client wants the full URL; OTEL_EXPORTER_OTLP_ENDPOINT doesn't).
    pub http_endpoint: String,
    pub grpc_port: u16,
    pub http_port: u16,
    out: PathBuf,
    log: PathBuf,
    // Mutex: wait_for takes &self but must try_wait() to notice a dead receiver.
    child: Mutex<Child>,
    dir: TempDir,
}

#[derive(Deserialize)]
struct ReadyInfo {
    grpc: u16,
    http: u16,
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        Self::start_with(&[])
    }

    /// Extra receiver arguments, e.g. `&["--fail-first", "2"]`.
    pub fn start_with(args: &[&str]) -> Result<Receiver> {
        let py = check_python()?;
        let script = receiver_script();
        let dir = TempDir::new()?;
        let out = dir.join("spans.jsonl");
        let ready = dir.join("receiver-ready.json");
        let log = dir.join("receiver.log");
        let (so, se) = log_stdio(&log)?;
        let mut child = Command::new(&py)
            .arg(&script)
            .args(["--grpc-port", "0", "--http-port", "0", "--out"])
            .arg(&out)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            // Unbuffered so the log is complete even if we SIGKILL it.
            .env("PYTHONUNBUFFERED", "1")
            .spawn()
            .with_context(|| format!("spawning {} {}", py.display(), script.display()))?;

        let mut info: Option<ReadyInfo> = None;
        let mut exited = None;
        wait_until(RECEIVER_READY_TIMEOUT, POLL, || {
            // The receiver renames the file into place, so a read either
            // fails or sees the whole JSON document.
            if let Ok(text) = fs::read_to_string(&ready) {
                info = serde_json::from_str(&text).ok();
            }
            if info.is_none() {
                exited = child.try_wait().ok().flatten();
            }
            info.is_some() || exited.is_some()
        });
        let Some(info) = info else {
            let why = match exited {
                Some(st) => format!("exited with {st} before becoming ready"),
                None => {
                    terminate(&mut child, Duration::ZERO);
                    format!("not ready after {RECEIVER_READY_TIMEOUT:?}")
                }
            };
            bail!(
                "otlp receiver {why}; its log ({}):\n{}",
                log.display(),
                read_log(&log)
            );
        };
        Ok(Receiver {
            grpc_endpoint: format!("http://127.0.0.1:{}", info.grpc),
            http_endpoint: format!("http://127.0.0.1:{}", info.http),
            grpc_port: info.grpc,
            http_port: info.http,
            out,
            log,
            child: Mutex::new(child),
            dir,
        })
    }

    /// The JSON-lines file the receiver appends spans to.
    pub fn out_path(&self) -> &Path {
        &self.out
    }

    /// The receiver's stdout+stderr (one line per export request received).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// All spans received so far, in arrival order. Panics on a malformed
    /// line: that is a receiver bug, not something a test should tolerate.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.try_spans().unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn try_spans(&self) -> Result<Vec<ReceivedSpan>> {
        let text = match fs::read_to_string(&self.out) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.out.display())),
        };
        // Only newline-terminated lines are complete; the receiver writes
        // whole lines, but never trust a reader/writer race to be atomic.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| {
                    format!(
                        "{} line {}: malformed span record: {l}",
                        self.out.display(),
                        i + 1
                    )
                })
            })
            .collect()
    }

    /// Polls until `pred(all spans so far)` holds and returns those spans.
    /// On timeout (or if the receiver died) the error lists every span seen,
    /// pretty-printed, plus the receiver's log.
    pub fn wait_for<F: Fn(&[ReceivedSpan]) -> bool>(
        &self,
        timeout: Duration,
        pred: F,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.try_spans()?;
            if pred(&spans) {
                return Ok(spans);
            }
            let dead = !self.is_running();
            if dead || Instant::now() >= deadline {
                let why = if dead {
                    "the receiver exited".to_string()
                } else {
                    format!("timed out after {timeout:?}")
                };
                bail!(
                    "wait_for: {why}; condition not met by the {} span(s) received:\n{}\n--- receiver log ---\n{}",
                    spans.len(),
                    pretty(&spans),
                    self.log()
                );
            }
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// Waits until at least `n` spans matching `pred` arrived; returns them.
    pub fn wait_for_matching<F: Fn(&ReceivedSpan) -> bool>(
        &self,
        timeout: Duration,
        n: usize,
        pred: F,
    ) -> Result<Vec<ReceivedSpan>> {
        let all = self.wait_for(timeout, |s| s.iter().filter(|x| pred(x)).count() >= n)?;
        Ok(all.into_iter().filter(|x| pred(x)).collect())
    }

    /// Still running?
    pub fn is_running(&self) -> bool {
        matches!(
            self.child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait(),
            Ok(None)
        )
    }

    /// SIGTERM and wait; errors if it needed SIGKILL or exited non-zero.
    pub fn stop(self) -> Result<ExitStatus> {
        let (status, killed) = terminate(
            &mut self.child.lock().unwrap_or_else(|e| e.into_inner()),
            STOP_TIMEOUT,
        );
        let status = status.ok_or_else(|| anyhow!("could not reap the otlp receiver"))?;
        if killed || !status.success() {
            bail!(
                "otlp receiver did not exit cleanly on SIGTERM ({status}{}); log:\n{}",
                if killed { ", needed SIGKILL" } else { "" },
                self.log()
            );
        }
        Ok(status)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // No grace period: nothing of the receiver's is needed after the test.
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            signal_tree(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("<unserialisable: {e}>"))
}

/// One line of the receiver's output file: one span, flattened with the
/// resource/scope it came in and the request's transport and headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSpan {
    /// "grpc" | "http".
    pub transport: String,
    /// "protobuf" | "json" (request body encoding).
    #[serde(default)]
    pub encoding: String,
    /// 1-based index of the export request among all requests the receiver
    /// got, rejected ones included (so > N with `--fail-first N`).
    #[serde(default)]
    pub request_seq: u64,
    /// Request headers / gRPC metadata, lowercased keys.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub resource: BTreeMap<String, Value>,
    #[serde(default)]
    pub resource_schema_url: String,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub scope_schema_url: String,
    /// Lowercase hex, 32 chars.
    pub trace_id: String,
    /// Lowercase hex, 16 chars.
    pub span_id: String,
    /// Lowercase hex, "" for a root span.
    #[serde(default)]
    pub parent_span_id: String,
    #[serde(default)]
    pub trace_state: String,
    #[serde(default)]
    pub flags: u32,
    pub name: String,
    /// "SERVER" | "CLIENT" | "INTERNAL" | "PRODUCER" | "CONSUMER" | "UNSPECIFIED".
    pub kind: String,
    /// Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    pub status: SpanStatus,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    #[serde(default)]
    pub events: Vec<SpanEvent>,
    #[serde(default)]
    pub links: Vec<SpanLink>,
    #[serde(default)]
    pub dropped_attributes_count: u32,
    #[serde(default)]
    pub dropped_events_count: u32,
    #[serde(default)]
    pub dropped_links_count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanStatus {
    /// "UNSET" | "OK" | "ERROR".
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub name: String,
    pub time: u64,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default)]
    pub trace_state: String,
    #[serde(default)]
    pub flags: u32,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
    /// Only OTLP int values (a string "200" is not an int: catches exporters
    /// that stringify numbers).
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }
    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        self.attributes.get(key).and_then(Value::as_bool)
    }
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource.get(key).and_then(Value::as_str)
    }
    pub fn resource_i64(&self, key: &str) -> Option<i64> {
        self.resource.get(key).and_then(Value::as_i64)
    }
    /// A request header / gRPC metadata value (key matched lowercased).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end.saturating_sub(self.start))
    }
    /// Pretty JSON, for assertion messages.
    pub fn pretty(&self) -> String {
        pretty(self)
    }
}

// ---------------------------------------------------------------------------
// Kspan: the agent under test
// ---------------------------------------------------------------------------

/// A running kspan. Output goes to files in a [`TempDir`]; Drop stops it
/// (SIGTERM, then SIGKILL) so no eBPF program outlives a test.
pub struct Kspan {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    dir: TempDir,
}

/// What a stopped kspan left behind.
#[derive(Debug)]
pub struct KspanExit {
    pub status: ExitStatus,
    /// True if it ignored SIGTERM for [`STOP_TIMEOUT`] and was SIGKILLed.
    pub killed: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KspanExit {
    /// Exited by itself with status 0 after SIGTERM.
    pub fn clean(&self) -> bool {
        !self.killed && self.status.success()
    }
    pub fn log(&self) -> String {
        format!(
            "--- kspan stderr ---\n{}\n--- kspan stdout ---\n{}",
            self.stderr, self.stdout
        )
    }
}

impl Kspan {
    /// The line kspan prints (stdout or stderr) once it is attached and exporting.
    pub const READY_MARKER: &'static str = "kspan ready";

    /// Runs [`kspan_bin`] with `args`, the inherited environment minus any
    /// `OTEL_*` variables (so the developer's shell can't change what a test
    /// sees), plus `envs`; waits for [`Self::READY_MARKER`].
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Result<Kspan> {
        Self::start_with_timeout(args, envs, KSPAN_READY_TIMEOUT)
    }

    pub fn start_with_timeout(
        args: &[&str],
        envs: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Kspan> {
        Self::start_bin(&kspan_bin(), args, envs, timeout)
    }

    /// Like [`Self::start`] with an explicit binary (e.g. a release build).
    pub fn start_bin(
        bin: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Kspan> {
        if !bin.exists() {
            bail!(
                "kspan binary {} not found (build it, or set KSPAN_BIN)",
                bin.display()
            );
        }
        let dir = TempDir::new()?;
        let stdout = dir.join("kspan.stdout");
        let stderr = dir.join("kspan.stderr");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("OTEL_")) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut k = Kspan {
            child: Some(child),
            stdout,
            stderr,
            dir,
        };

        let mut exited = None;
        let ready = wait_until(timeout, POLL, || {
            if k.log_contains(Self::READY_MARKER) {
                return true;
            }
            exited = k.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            // Re-check: it may have printed the marker and then exited.
            exited.is_some() || k.log_contains(Self::READY_MARKER)
        });
        if ready && exited.is_none() {
            return Ok(k);
        }
        let cmdline = format!("{} {}", bin.display(), args.join(" "));
        match exited {
            Some(st) => {
                k.child = None; // already reaped; keep Drop from reporting it again
                bail!(
                    "kspan exited with {st} before becoming ready\ncommand: {cmdline}\n{}",
                    k.log()
                )
            }
            None => {
                let exit = k.stop_inner();
                bail!(
                    "kspan printed no `{}` within {timeout:?} (stopped: {})\ncommand: {cmdline}\n{}",
                    Self::READY_MARKER,
                    exit.as_ref()
                        .map(|e| e.status.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                    exit.map(|e| e.log()).unwrap_or_else(|_| k.log())
                )
            }
        }
    }

    fn log_contains(&self, needle: &str) -> bool {
        read_log(&self.stderr).contains(needle) || read_log(&self.stdout).contains(needle)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Still running (not exited)?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// stderr then stdout so far, labelled.
    pub fn log(&self) -> String {
        format!(
            "--- kspan stderr ({}) ---\n{}\n--- kspan stdout ({}) ---\n{}",
            self.stderr.display(),
            read_log(&self.stderr),
            self.stdout.display(),
            read_log(&self.stdout)
        )
    }

    /// Waits until kspan's output contains `needle` (e.g. a log line proving
    /// it saw something); the error carries the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        if wait_until(timeout, POLL, || self.log_contains(needle)) {
            Ok(())
        } else {
            bail!(
                "kspan did not log {needle:?} within {timeout:?}\n{}",
                self.log()
            )
        }
    }

    /// Sends SIGTERM (so kspan flushes its exporter and detaches), waits up
    /// to [`STOP_TIMEOUT`], then SIGKILLs. Check [`KspanExit::clean`].
    pub fn stop(mut self) -> Result<KspanExit> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<KspanExit> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("kspan already stopped"))?;
        let (status, killed) = terminate(&mut child, STOP_TIMEOUT);
        let status = status
            .ok_or_else(|| anyhow!("could not reap kspan (pid {})\n{}", child.id(), self.log()))?;
        Ok(KspanExit {
            status,
            killed,
            stdout: read_log(&self.stdout),
            stderr: read_log(&self.stderr),
        })
    }
}

impl Drop for Kspan {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Ok(exit) = self.stop_inner()
            && !exit.clean()
        {
            eprintln!(
                "kspan (dropped) did not stop cleanly: {}\n{}",
                exit.status,
                exit.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Server: peers the tests talk to
// ---------------------------------------------------------------------------

/// How [`Server::spawn_with`] decides a peer is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A TCP socket in LISTEN on the port, seen in /proc/<child>/net/tcp{,6}
    /// (the child's own network namespace). Sends no packet, so a kspan that
    /// is already running traces no probe connection. The default.
    Listening,
    /// A TCP connect to 127.0.0.1:port succeeds. Generates a connection that
    /// kspan would see if running; use for servers that listen before they
    /// can really serve.
    Connect,
    /// A UDP socket bound to the port (/proc/<child>/net/udp{,6}).
    UdpBound,
}

/// A peer server process, killed (with its descendants) on Drop.
pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl Server {
    /// Spawns `cmd` (its stdout/stderr are redirected to a log file) and
    /// waits until something in its network namespace listens on TCP `port`.
    pub fn spawn(cmd: Command, port: u16) -> Result<Server> {
        Self::spawn_with(cmd, port, Probe::Listening, SERVER_READY_TIMEOUT)
    }

    pub fn spawn_with(
        mut cmd: Command,
        port: u16,
        probe: Probe,
        timeout: Duration,
    ) -> Result<Server> {
        let dir = TempDir::new()?;
        let log = dir.join("server.log");
        let (so, se) = log_stdio(&log)?;
        let desc = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            .spawn()
            .with_context(|| format!("spawning peer server {desc}"))?;
        let pid = child.id();
        let mut exited = None;
        let up = wait_until(timeout, POLL, || {
            let ok = match probe {
                Probe::Listening => proc_has_socket(pid, &["tcp", "tcp6"], port, Some("0A")),
                Probe::UdpBound => proc_has_socket(pid, &["udp", "udp6"], port, None),
                Probe::Connect => connectable(port),
            };
            if !ok {
                exited = child.try_wait().ok().flatten();
            }
            ok || exited.is_some()
        });
        if up && exited.is_none() {
            return Ok(Server {
                child,
                port,
                log,
                dir,
            });
        }
        let why = match exited {
            Some(st) => format!("exited with {st}"),
            None => {
                terminate(&mut child, Duration::ZERO);
                format!("was not up ({probe:?}) within {timeout:?}")
            }
        };
        bail!(
            "peer server {desc} on port {port} {why}; its output:\n{}",
            read_log(&log)
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The server's stdout+stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_tree(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Waits until TCP `port` is in LISTEN in this process's network namespace.
/// Sends no packets (see [`Probe::Listening`]).
pub fn wait_listening(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, POLL, || {
        proc_has_socket(std::process::id(), &["tcp", "tcp6"], port, Some("0A"))
    })
}

/// Waits until a TCP connect to 127.0.0.1:`port` succeeds.
pub fn wait_connectable(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, POLL, || connectable(port))
}

fn connectable(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Is there a socket with local port `port` (and state `state`, hex as in
/// /proc/net/tcp: "0A" = LISTEN) in /proc/<pid>/net/<table>?
fn proc_has_socket(pid: u32, tables: &[&str], port: u16, state: Option<&str>) -> bool {
    let want_port = format!("{port:04X}");
    tables.iter().any(|t| {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{t}")) else {
            return false;
        };
        text.lines().skip(1).any(|line| {
            // "  sl  local_address rem_address   st ..." ; local is ADDR:PORT in hex.
            let mut f = line.split_whitespace();
            let (Some(_sl), Some(local), Some(_rem), Some(st)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return false;
            };
            local.rsplit(':').next() == Some(want_port.as_str()) && state.is_none_or(|s| st == s)
        })
    })
}
