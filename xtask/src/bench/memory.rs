//! Benchmark 5: kspan's resident memory at idle, holding many idle
//! connections, and through heavy connection churn (it must come back to a
//! steady state, not grow with every connection ever seen).

use std::{process::Command, time::Duration};

use anyhow::Context as _;

use super::{
    Ctx,
    peers::{Kspan, Nginx, Receiver},
    procs::{self, Proc},
    report::{Section, Table, mib},
    wrk::{self, Load},
};

/// Opens N keep-alive connections to nginx, one request each (so kspan has
/// seen data and built per-connection state), then holds them until killed.
const HOLDER: &str = r#"
import resource, signal, socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = n + 256
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
req = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("nginx closed a connection")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":", 1)[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(65536)
    socks.append(s)
print("open", len(socks), flush=True)
signal.pause()
"#;

pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let dir = ctx.scratch("memory")?;
    let (idle_conns, churn) = if ctx.quick { (2_000, 10_000) } else { (10_000, 1_000_000) };
    let nginx = Nginx::start(&dir)?;
    let mut receiver = Receiver::start(&ctx.sink, &dir, "memory")?;
    // Metrics every second: connections_tracked is read from those lines.
    let kspan = Kspan::start(&ctx.kspan, nginx.proc.pid(), Some(receiver.grpc_port), &["--metrics-interval", "1"], &dir.join("kspan.log"))?;
    let pid = kspan.pid();
    let mut rows: Vec<(String, u64, Option<u64>)> = Vec::new();
    let mut phase = |name: String, kspan: &Kspan| -> anyhow::Result<u64> {
        let rss = steady_rss(pid)?;
        rows.push((name, rss, kspan.metrics().get("connections_tracked").copied()));
        Ok(rss)
    };

    wait_next_metrics(&kspan);
    let idle = phase("idle (attached, no traffic)".into(), &kspan)?;
    let holder = hold_connections(ctx, &dir, idle_conns, nginx.port)?;
    wait_next_metrics(&kspan);
    phase(format!("{idle_conns} idle keep-alive connections open (one request each)"), &kspan)?;
    drop(holder);
    wait_next_metrics(&kspan);
    phase(format!("after closing the {idle_conns} connections"), &kspan)?;

    let mut done = 0u64;
    let mut errors = 0u64;
    // 1 s rounds, so RSS is read at about half and at the end of the churn
    // even when the machine makes 10k connections a second.
    let mut marks: Vec<u64> = vec![churn / 2, churn];
    let mut half_row = None;
    for _ in 0..600 {
        if done >= churn {
            break;
        }
        let r = wrk::run(&nginx.url(), &Load { close: true, ..Load::max(2, 16, Duration::from_secs(1)) }, &dir)?;
        done += r.requests;
        errors += r.errors;
        if marks.first().is_some_and(|m| done >= *m) {
            marks.retain(|m| *m > done);
            wait_next_metrics(&kspan);
            let rss = phase(format!("after {done} short-lived connections"), &kspan)?;
            half_row.get_or_insert((done, rss));
        }
    }
    anyhow::ensure!(done >= churn, "only {done} of {churn} short-lived connections were made");
    let spans = receiver.settled(Duration::from_millis(300), Duration::from_secs(30))?;
    let metrics = kspan.stop()?;
    let final_rss = rows.last().map_or(0, |r| r.1);

    let mut s = Section::new("5. Memory (kspan VmRSS)");
    let with_idle = rows.get(1).map_or(0, |r| r.1);
    s.result = Some(format!(
        "idle {}; with {idle_conns} idle connections {} ({:+.1} MiB); after {done} short-lived connections {}.",
        mib(idle),
        mib(with_idle),
        (with_idle as f64 - idle as f64) / 1024.0,
        mib(final_rss)
    ));
    let mut t = Table::new(&["phase", "kspan VmRSS", "vs idle", "connections tracked (kspan metric)"]);
    for (name, rss, conns) in &rows {
        t.row(vec![
            name.clone(),
            mib(*rss),
            format!("{:.2}x ({:+.1} MiB)", *rss as f64 / idle as f64, (*rss as f64 - idle as f64) / 1024.0),
            conns.map_or("?".into(), |c| c.to_string()),
        ]);
    }
    s.tables.push(t);
    s.note(match half_row {
        Some((n, half_rss)) if n < done => {
            let growth = (final_rss as f64 / half_rss as f64 - 1.0) * 100.0;
            format!(
                "Steady state under churn: RSS after {done} short-lived connections is {growth:+.1}% vs after {n} ({}): {}.",
                mib(half_rss),
                if growth.abs() <= 5.0 { "flat, no per-connection growth" } else { "**still growing**" }
            )
        }
        _ => "The churn finished in one round, so there is no mid-churn reading to compare with.".into(),
    });
    s.note(format!(
        "nginx as in table 1a, kspan `--pid <nginx master> --print none --metrics-interval 1` exporting to the \
         receiver. Idle connections: a Python client opens them one by one, sends one GET on each, reads the answer \
         and holds them (RLIMIT_NOFILE raised). Short-lived: `wrk -t2 -c16 -H 'Connection: close'` in 1 s rounds \
         until {churn} connections ({errors} socket errors); {} spans received, kspan final counters: \
         events_dropped_ringbuf={} spans_dropped_queue_full={}.",
        spans.total,
        metrics.get("events_dropped_ringbuf").copied().unwrap_or(0),
        metrics.get("spans_dropped_queue_full").copied().unwrap_or(0),
    ));
    s.note(
        "Each RSS is read from /proc/<kspan>/status once it has not changed for 500 ms (at most 10 s), after the next \
         1 s metrics line. Freed heap is not always returned to the OS by the allocator, so RSS after a peak shows \
         the high-water mark more than live data.",
    );
    Ok(s)
}

/// RSS once it stopped changing for 500 ms (bounded).
fn steady_rss(pid: u32) -> anyhow::Result<u64> {
    procs::rss_kib(pid)?;
    Ok(procs::settle(Duration::from_millis(500), Duration::from_secs(10), || procs::rss_kib(pid).unwrap_or(0)))
}

/// Waits for a `kspan metrics` line newer than the ones already logged.
fn wait_next_metrics(kspan: &Kspan) {
    let count = |t: &str| t.matches("kspan metrics").count();
    let now = count(&kspan.proc.log_text());
    procs::poll_until(Duration::from_secs(5), || (count(&kspan.proc.log_text()) > now).then_some(()));
}

fn hold_connections(ctx: &Ctx, dir: &std::path::Path, n: u32, port: u16) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(ctx.test_venv.join("bin/python3"));
    cmd.arg("-c").arg(HOLDER).arg(n.to_string()).arg(port.to_string());
    let mut p = Proc::spawn("idle-connection holder", cmd, &dir.join("holder.log")).context("starting the connection holder")?;
    let log = p.log.clone();
    p.wait_ready("all connections open", Duration::from_secs(180), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("open "))
    })?;
    Ok(p)
}
