//! `cargo xtask soak`: minutes of mixed load with connection churn against a
//! traced host, the collector killed for a while in the middle, and kspan's
//! memory and tables sampled throughout. Passes when kspan never panics, its
//! RSS and tables stay flat, and export resumes when the collector returns.
//! Too long for CI; run it before a release.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{run_cmd, setup, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Length of the run.
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// How long the collector stays down, starting at a fifth of the run.
    #[arg(long, default_value_t = 60)]
    pub collector_down_secs: u64,
}

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Guard> {
    let out = fs::File::create(log)?;
    let child = cmd.stdout(out.try_clone()?).stderr(out).spawn().with_context(|| format!("spawning {cmd:?}"))?;
    Ok(Guard(child))
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{what} not ready after {timeout:?}")
}

fn receiver(python: &Path, root: &Path, grpc: u16, out: &Path, dir: &Path) -> anyhow::Result<Guard> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let ready = dir.join(format!("receiver-ready-{stamp}"));
    let _ = fs::remove_file(&ready);
    let guard = spawn(
        Command::new(python)
            .arg(root.join("tests/otlp_receiver.py"))
            .args(["--grpc-port", &grpc.to_string(), "--http-port", "0", "--out"])
            .arg(out)
            .arg("--ready-file")
            .arg(&ready),
        &dir.join("receiver.log"),
    )?;
    wait_for("OTLP receiver", Duration::from_secs(30), || ready.exists())?;
    Ok(guard)
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `key=N` from the last `kspan metrics` line of the log (ANSI-free).
fn metric(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("kspan metrics"))?;
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn lines(path: &Path) -> usize {
    fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options::default())?;
    let root = workspace_root();
    run_cmd(Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "kspan"]))?;
    let dir = root.join("target/soak");
    fs::create_dir_all(&dir)?;
    let python: PathBuf = setup::test_venv().join("bin/python3");
    let (app_port, grpc_app, otlp) = (free_port()?, free_port()?, free_port()?);
    let spans = dir.join("spans.jsonl");
    let mut collector = Some(receiver(&python, &root, otlp, &spans, &dir)?);
    let _app = spawn(Command::new(&python).arg(root.join("tests/peers/http_app.py")).arg(app_port.to_string()), &dir.join("app.log"))?;
    let _grpc = spawn(
        Command::new(&python).arg(root.join("tests/peers/grpc_peer.py")).args(["server", &grpc_app.to_string()]),
        &dir.join("grpc.log"),
    )?;
    wait_for("peers", Duration::from_secs(30), || {
        [app_port, grpc_app].iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
    })?;
    let kspan_log = dir.join("kspan.log");
    let mut kspan = spawn(
        Command::new(root.join("target/release/kspan"))
            .args(["--open-ports", &format!("{app_port},{grpc_app}"), "--print", "none", "--metrics-interval", "5"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("NO_COLOR", "1"),
        &kspan_log,
    )?;
    let kspan_pid = kspan.0.id();
    wait_for("kspan", Duration::from_secs(60), || fs::read_to_string(&kspan_log).is_ok_and(|l| l.contains("kspan ready")))?;

    // Load: keep-alive HTTP, short-lived curl processes, gRPC on fresh channels.
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut loads = Vec::new();
    let url = format!("http://127.0.0.1:{app_port}/users/1");
    for kind in 0..3 {
        let (stop, requests, url, python, root) = (stop.clone(), requests.clone(), url.clone(), python.clone(), root.clone());
        loads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = match kind {
                    0 => Command::new("curl").arg("-s").args(std::iter::repeat_n(url.as_str(), 20)).stdout(Stdio::null()).status(),
                    1 => Command::new("curl").args(["-s", &url]).stdout(Stdio::null()).status(),
                    _ => Command::new(&python)
                        .arg(root.join("tests/peers/grpc_peer.py"))
                        .args(["client", &grpc_app.to_string(), "unary:20", "concurrent:10"])
                        .stdout(Stdio::null())
                        .status(),
                };
                requests.fetch_add(if ok.is_ok_and(|s| s.success()) { 1 } else { 0 }, Ordering::Relaxed);
            }
        }));
    }

    let total = Duration::from_secs(opts.minutes * 60);
    let down_at = total / 5;
    let down_for = Duration::from_secs(opts.collector_down_secs);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut spans_before_restart = 0;
    let mut restarted = false;
    while start.elapsed() < total {
        thread::sleep(Duration::from_secs(5));
        anyhow::ensure!(kspan.0.try_wait()?.is_none(), "kspan exited during the soak; see {}", kspan_log.display());
        let log = fs::read_to_string(&kspan_log).unwrap_or_default();
        samples.push((
            start.elapsed().as_secs(),
            rss_kib(kspan_pid),
            metric(&log, "connections_tracked").unwrap_or(0),
            metric(&log, "streams_tracked").unwrap_or(0),
            metric(&log, "spans_dropped_queue_full").unwrap_or(0),
        ));
        if collector.is_some() && start.elapsed() >= down_at && !restarted {
            collector = None;
            eprintln!("soak: collector down for {down_for:?}");
        }
        if collector.is_none() && start.elapsed() >= down_at + down_for {
            spans_before_restart = lines(&spans);
            collector = Some(receiver(&python, &root, otlp, &spans, &dir)?);
            restarted = true;
            eprintln!("soak: collector back");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        let _ = l.join();
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(kspan_pid as i32, libc::SIGTERM) };
    let status = kspan.0.wait()?;
    let log = fs::read_to_string(&kspan_log).unwrap_or_default();
    let after_restart = lines(&spans);
    report(&root, opts, &samples, status.success(), log.contains("panicked"), requests.load(Ordering::Relaxed), spans_before_restart, after_restart)
}

#[allow(clippy::too_many_arguments)]
fn report(
    root: &Path,
    opts: &Options,
    samples: &[(u64, u64, u64, u64, u64)],
    clean_exit: bool,
    panicked: bool,
    load_runs: u64,
    spans_at_restart: usize,
    spans_at_end: usize,
) -> anyhow::Result<()> {
    // Steady state is judged against the level after warm-up (a fifth in).
    let warm = samples.get(samples.len() / 5).map_or(0, |s| s.1);
    let last = samples.last().copied().unwrap_or_default();
    let peak_conns = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let rss_flat = last.1 <= warm + warm / 4 + 8 * 1024;
    let tables_flat = last.2 <= peak_conns.max(64) && last.3 <= peak_conns.max(64);
    let resumed = spans_at_end > spans_at_restart;
    let mut md = format!(
        "# kspan soak\n\nGenerated by `cargo xtask soak --minutes {} --collector-down-secs {}`.\n\n\
         | check | result |\n|---|---|\n\
         | exited cleanly on SIGTERM, no panic | {} |\n| RSS flat (end {} KiB vs {} KiB after warm-up) | {} |\n\
         | tables flat (end {} connections / {} streams, peak {}) | {} |\n\
         | export resumed after the collector came back ({} -> {} spans) | {} |\n| load runs completed | {} |\n\n\
         | t (s) | RSS (KiB) | connections | streams | spans dropped (queue full) |\n|---|---|---|---|---|\n",
        opts.minutes,
        opts.collector_down_secs,
        clean_exit && !panicked,
        last.1,
        warm,
        rss_flat,
        last.2,
        last.3,
        peak_conns,
        tables_flat,
        spans_at_restart,
        spans_at_end,
        resumed,
        load_runs
    );
    for s in samples {
        md.push_str(&format!("| {} | {} | {} | {} | {} |\n", s.0, s.1, s.2, s.3, s.4));
    }
    let out = root.join("bench/SOAK.md");
    fs::create_dir_all(root.join("bench"))?;
    fs::write(&out, &md)?;
    println!("{md}");
    anyhow::ensure!(clean_exit && !panicked && rss_flat && tables_flat && resumed, "soak failed; see {}", out.display());
    Ok(())
}
