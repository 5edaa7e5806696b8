//! What machine the numbers come from, and the kernel's BPF run-time stats.

use std::{fs, process::Command};

use anyhow::Context as _;

use super::{json, procs};

/// Lines for the head of RESULTS.md.
pub fn describe_machine() -> Vec<(String, String)> {
    let cmd = |c: &mut Command| procs::output(c).map(|s| s.trim().to_string()).unwrap_or_else(|e| format!("? ({e})"));
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<u64>().ok());
    let root = crate::workspace_root();
    let rev = cmd(Command::new("git").arg("-C").arg(&root).args(["rev-parse", "--short=12", "HEAD"]));
    let dirty = procs::output(Command::new("git").arg("-C").arg(&root).args(["status", "--porcelain", "--untracked-files=no"]))
        .is_ok_and(|s| !s.trim().is_empty());
    vec![
        ("kernel (`uname -r`)".into(), cmd(Command::new("uname").arg("-r"))),
        ("CPUs (`nproc`)".into(), cmd(&mut Command::new("nproc"))),
        ("CPU model".into(), format!("{} (MHz {})", field("model name"), field("cpu MHz"))),
        ("memory".into(), mem_kib.map_or("?".into(), |k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))),
        ("date (UTC)".into(), cmd(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S"]))),
        ("kspan git rev".into(), if dirty { format!("{rev} + uncommitted changes") } else { rev }),
        ("wrk".into(), first_line(Command::new("wrk").arg("-v"))),
        ("nginx".into(), first_line(Command::new("nginx").arg("-v"))),
    ]
}

/// wrk and nginx print their version on stderr (and wrk exits 1 for `-v`).
fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or("?").trim().to_string()
        })
        .unwrap_or_else(|_| "?".into())
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while alive, previous value restored on
/// drop. Stats cost every BPF program run two clock reads, so only the
/// per-span cost runs enable them; the overhead runs do not.
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> anyhow::Result<BpfStats> {
        let previous = fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(BpfStats { previous: previous.trim().to_string() })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS, &self.previous) {
            eprintln!("bench: could not restore {BPF_STATS}={}: {e}", self.previous);
        }
    }
}

/// Sum of `run_time_ns` and `run_cnt` over the given programs.
pub fn bpf_run_time(ids: &[u32]) -> anyhow::Result<(u64, u64)> {
    let text = procs::output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let progs = json::parse(&text).context("parsing `bpftool prog show --json`")?;
    let mut time = 0;
    let mut count = 0;
    for p in progs.as_array().context("bpftool did not print an array")? {
        let id = p.get("id").and_then(json::Json::as_f64).unwrap_or(-1.0);
        if ids.iter().any(|i| f64::from(*i) == id) {
            time += p.get("run_time_ns").and_then(json::Json::as_f64).unwrap_or(0.0) as u64;
            count += p.get("run_cnt").and_then(json::Json::as_f64).unwrap_or(0.0) as u64;
        }
    }
    Ok((time, count))
}
