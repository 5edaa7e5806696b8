//! Child processes that are always cleaned up, readiness polling, and the
//! /proc readings the benchmarks take (CPU time, RSS, listening ports).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// Poll period for every readiness wait: short enough not to add visible
/// time to a run, long enough not to burn a core the benchmark needs.
pub const POLL: Duration = Duration::from_millis(20);

/// A started process, stopped with SIGTERM (then SIGKILL, children
/// included) when dropped, so an error anywhere in a benchmark never leaves
/// a server, kspan or receiver behind.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    /// Where stdout and stderr go (one file: the order of lines is kept).
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log fd")?;
        // Same process group as xtask: a Ctrl-C at the terminal, which ends
        // xtask without running its Drop guards, reaches these too.
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc { name: name.to_string(), child: Some(child), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log tail when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else { anyhow::bail!("{} already stopped", self.name) };
        if let Some(st) = child.try_wait()? {
            self.child = None;
            anyhow::bail!("{} exited early ({st}); log {}:\n{}", self.name, self.log.display(), tail(&self.log_text()));
        }
        Ok(())
    }

    /// Waits until `ready()` holds, failing if the process dies or `timeout` passes.
    pub fn wait_ready(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            self.check_running()?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not ready ({what}) after {timeout:?}; log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log_text())
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL it and its children. Returns the
    /// exit status and whether it had to be killed.
    pub fn stop(&mut self, grace: Duration) -> Option<(ExitStatus, bool)> {
        let mut child = self.child.take()?;
        let pid = child.id();
        if let Ok(Some(st)) = child.try_wait() {
            return Some((st, false));
        }
        signal(pid, "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some((st, false));
            }
            std::thread::sleep(POLL);
        }
        // Children first (nginx's worker would outlive a killed master).
        let kids = children(pid);
        signal(pid, "KILL");
        for k in kids {
            signal(k, "KILL");
        }
        child.wait().ok().map(|st| (st, true))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some((st, killed)) = self.stop(Duration::from_secs(10))
            && killed
        {
            eprintln!("bench: {} did not stop on SIGTERM ({st}); killed", self.name);
        }
    }
}

/// `kill` via the command: xtask has no libc dependency, and these calls
/// are rare. The pid is one of our unreaped children, so it is not recycled.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// Direct children of `pid` (parent pid, field 4 of /proc/PID/stat).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| stat_field(*p, 1) == Some(pid))
        .collect()
}

/// Numeric field `n` (0 = state) after the comm of /proc/PID/stat.
fn stat_field(pid: u32, n: usize) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.split_whitespace().nth(n)?.parse().ok()
}

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Polls `f` every [`POLL`] until it returns `Some`, or `None` after `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `read` until it returns the same value for `quiet` in a row (a
/// counter that stopped moving), at most `timeout`; returns the last value.
pub fn settle<T: PartialEq + Copy>(quiet: Duration, timeout: Duration, mut read: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = read();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(POLL.max(quiet / 10));
        let v = read();
        if v != last {
            last = v;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

/// Whether some socket is in LISTEN on 127.0.0.1/0.0.0.0/any `port`. Read
/// from /proc/net/tcp{,6} so no probe connection is made (kspan, if running,
/// would see and trace it).
pub fn listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3
                    && cols[3] == "0A"
                    && cols[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
            })
        })
    })
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised comm (which may contain spaces):
    // state is field 3, utime 14 and stime 15 (1-based), i.e. 11 and 12 here.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).context("no utime")?.parse::<u64>()? + f.get(12).context("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

/// CPU seconds of a process and its live children: nginx's master and
/// worker are read as one.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    std::iter::once(pid).chain(children(pid)).filter_map(|p| cpu_seconds(p).ok()).sum()
}

fn clock_ticks() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// VmRSS in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    line.split_whitespace().nth(1).context("empty VmRSS")?.parse().context("VmRSS value")
}

/// Output of a command that must succeed.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
