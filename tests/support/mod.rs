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
//! * polling: [`wait_until`], [`free_port`], [`wait_listening`], [`wait_connectable`];
//! * namespaces: [`Netns`] (deleted on Drop), [`ip`];
//! * TLS: [`write_pki`] (a CA, a server and a client certificate).
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
/// `tests/peers/go_chain`, built into `dir` with the standard library only
/// and `flags` given to `go build`.
pub fn build_go_chain(dir: &TempDir, flags: &[&str]) -> PathBuf {
    let bin = dir.join("go_chain");
    let built = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(repo_root().join("tests/peers/go_chain"))
        // One cache for every test: a cold build of net/http takes ~30 s.
        .env("GOCACHE", repo_root().join("target/go-cache"))
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "on")
        .status()
        .expect("go build runs");
    assert!(built.success(), "go build of tests/peers/go_chain failed");
    bin
}

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

/// A currently free TCP port on 127.0.0.1 (bind :0, read, close), never
/// one this test process was given before. The kernel can hand out a port
/// just closed again: two servers given one port then looked both started
/// (the readiness probe reads the namespace's socket table), and a Flask
/// hop sent its requests to a Node server. Another process could still grab
/// the port before the caller binds it; that is rare enough for tests.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
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

/// The records of a `--events-log` file written so far (one JSON object
/// per line; a line still being written is skipped).
pub fn events_log(path: &Path) -> Vec<Value> {
    fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The captured bytes of an events-log data record.
pub fn record_payload(record: &Value) -> Vec<u8> {
    let hex = record["payload_hex"].as_str().unwrap_or_default();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

mod kspan;
mod netns;
mod pki;
mod receiver;
mod server;

pub use kspan::*;
pub use netns::*;
pub use pki::*;
pub use receiver::*;
pub use server::*;
