//! Benchmarks 3 and 4 on one ladder of request rates against nginx: the CPU
//! kspan spends per span (user space and in-kernel BPF time) and where
//! spans start to go missing. Each level gets a fresh kspan, so its counters
//! and CPU times cover exactly that level.

use std::time::Duration;

use super::{
    Ctx,
    peers::{Kspan, Nginx, Receiver},
    procs,
    report::{Section, Table, num},
    sysinfo,
    wrk::{self, Load, WrkResult},
};

/// Target from the issue: total CPU per HTTP span.
const MAX_US_PER_SPAN: f64 = 5.0;

pub struct Want {
    pub cost: bool,
    pub loss: bool,
}

struct Level {
    label: String,
    scope: Scope,
    load: Load,
    wrk: WrkResult,
    spans_total: u64,
    spans_server: u64,
    kspan_cpu_s: f64,
    bpf_ns: u64,
    bpf_runs: u64,
    receiver_cpu_s: f64,
    metrics: std::collections::BTreeMap<String, u64>,
}

impl Level {
    fn m(&self, key: &str) -> u64 {
        self.metrics.get(key).copied().unwrap_or(0)
    }
    /// kspan's own `spans` counter: every span it built, whether or not the
    /// export queue had room for it. The CPU was spent on all of them
    /// (a drop at the queue is nearly free), so this is the divisor.
    fn spans_made(&self) -> u64 {
        self.m("spans").max(1)
    }
    fn per_span_us(&self, seconds: f64) -> f64 {
        seconds * 1e6 / self.spans_made() as f64
    }
    fn total_us_per_span(&self) -> f64 {
        self.per_span_us(self.kspan_cpu_s + self.bpf_ns as f64 / 1e9)
    }
    /// Capture and parsing kept up: nothing dropped before the export queue,
    /// and a SERVER span for every request nginx answered.
    fn capture_lossless(&self) -> bool {
        self.m("events_dropped_ringbuf") == 0 && self.m("spans") >= self.scope.spans_per_request() * self.wrk.requests
    }
    /// No request without its SERVER span, and nothing dropped anywhere.
    fn lossless(&self) -> bool {
        self.spans_server >= self.wrk.requests
            && self.m("events_dropped_ringbuf") == 0
            && self.m("spans_dropped_queue_full") == 0
    }
    fn loss_pct(&self) -> f64 {
        (1.0 - self.spans_server as f64 / self.wrk.requests as f64).max(0.0) * 100.0
    }
}

pub fn run(ctx: &Ctx, want: &Want) -> anyhow::Result<Vec<Section>> {
    let dir = ctx.scratch("ladder")?;
    let nginx = Nginx::start(&dir)?;
    let mut receiver = Receiver::start(&ctx.sink, &dir, "ladder")?;
    let _stats = sysinfo::BpfStats::enable()?;
    wrk::run(&nginx.url(), &Load::max(2, 32, Duration::from_secs(1)), &dir)?; // warm-up
    let mut levels = Vec::new();
    for (label, load) in loads(ctx, want) {
        eprintln!("bench:   ladder level {label}: {}", load.describe());
        levels.push(level(ctx, &nginx, &mut receiver, Scope::Server, label, load, &dir)?);
    }
    let mut out = Vec::new();
    if want.cost {
        out.push(cost_section(ctx, &levels));
    }
    if want.loss {
        out.push(loss_section(ctx, &levels, Scope::Server));
        let mut whole = Vec::new();
        for (label, load) in loads(ctx, want) {
            eprintln!("bench:   ladder level {label}, whole host traced: {}", load.describe());
            whole.push(level(ctx, &nginx, &mut receiver, Scope::WholeHost, label, load, &dir)?);
        }
        out.push(loss_section(ctx, &whole, Scope::WholeHost));
    }
    Ok(out)
}

/// Offered rates: ~1k and ~10k req/s (paced) and max for the cost; the
/// loss ladder adds steps in between and above.
fn loads(ctx: &Ctx, want: &Want) -> Vec<(String, Load)> {
    let d = ctx.run_duration();
    let rates: &[u32] = if want.loss && !ctx.quick { &[1_000, 2_000, 5_000, 10_000, 20_000] } else { &[1_000, 10_000] };
    let mut out: Vec<(String, Load)> =
        rates.iter().map(|r| (format!("~{}k req/s", r / 1000), Load::paced(*r, d))).collect();
    out.push(("max".into(), Load::max(2, 32, d)));
    out
}

/// What a level's kspan traces.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// nginx (`--pid`): wrk stands in for clients on other hosts.
    Server,
    /// Everything, as the DaemonSet does: wrk's requests become CLIENT spans.
    WholeHost,
}

impl Scope {
    /// Spans a request makes: nginx's SERVER span, and wrk's CLIENT span
    /// when the whole host is traced.
    fn spans_per_request(self) -> u64 {
        match self {
            Scope::Server => 1,
            Scope::WholeHost => 2,
        }
    }

    fn loss_title(self) -> &'static str {
        match self {
            Scope::Server => "4. Loss at rising rates (nginx)",
            Scope::WholeHost => "4b. Loss at rising rates, the whole host traced (nginx and wrk)",
        }
    }

    fn log_suffix(self) -> &'static str {
        match self {
            Scope::Server => "",
            Scope::WholeHost => "-whole-host",
        }
    }
}

fn level(
    ctx: &Ctx,
    nginx: &Nginx,
    receiver: &mut Receiver,
    scope: Scope,
    label: String,
    load: Load,
    dir: &std::path::Path,
) -> anyhow::Result<Level> {
    let before = receiver.spans.poll()?;
    let log = dir.join(format!("kspan-{}{}.log", label.replace('/', "_").replace(' ', ""), scope.log_suffix()));
    let kspan = match scope {
        Scope::Server => Kspan::start(&ctx.kspan, nginx.proc.pid(), Some(receiver.grpc_port), &[], &log)?,
        Scope::WholeHost => Kspan::start_whole_host(&ctx.kspan, Some(receiver.grpc_port), &log)?,
    };
    let ids = kspan.prog_ids()?;
    anyhow::ensure!(!ids.is_empty(), "found no BPF program ids in kspan's fdinfo");
    let (t0, n0) = sysinfo::bpf_run_time(&ids)?;
    let k0 = procs::cpu_seconds(kspan.pid())?;
    let r0 = procs::cpu_seconds(receiver.proc.pid())?;
    let wrk = wrk::run(&nginx.url(), &load, dir)?;
    // The run ends when kspan has drained its ring buffer (CPU stops moving).
    procs::settle(Duration::from_millis(300), Duration::from_secs(60), || procs::cpu_seconds(kspan.pid()).unwrap_or(0.0));
    let (t1, n1) = sysinfo::bpf_run_time(&ids)?;
    let k1 = procs::cpu_seconds(kspan.pid())?;
    let metrics = kspan.stop()?;
    let got = receiver.settled(Duration::from_millis(300), Duration::from_secs(30))? - before;
    let r1 = procs::cpu_seconds(receiver.proc.pid())?;
    receiver.spans.discard_read()?;
    Ok(Level {
        label,
        scope,
        load,
        wrk,
        spans_total: got.total,
        spans_server: got.server,
        kspan_cpu_s: k1 - k0,
        bpf_ns: t1.saturating_sub(t0),
        bpf_runs: n1.saturating_sub(n0),
        receiver_cpu_s: r1 - r0,
        metrics,
    })
}

fn cost_section(ctx: &Ctx, levels: &[Level]) -> Section {
    let mut s = Section::new("3. Agent cost per span (nginx)");
    s.result = Some(format!(
        "total CPU per span (kspan user+sys + BPF) {}; target <= {MAX_US_PER_SPAN} µs/span.",
        levels
            .iter()
            .filter(|l| ctx.quick || ["~1k req/s", "~10k req/s", "max"].contains(&l.label.as_str()))
            .map(|l| {
                let t = l.total_us_per_span();
                format!("{:.1} µs at {} req/s ({})", t, num(l.wrk.rps), if t <= MAX_US_PER_SPAN { "PASS" } else { "MISS" })
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut t = Table::new(&[
        "level",
        "achieved req/s",
        "spans made (received)",
        "kspan user+sys",
        "BPF in-kernel",
        "total per span",
        "total per request",
        "BPF runs/req",
        "ns per BPF run",
        "receiver CPU per span",
        "target <= 5 µs/span",
    ]);
    let cost_levels = levels.iter().filter(|l| ctx.quick || ["~1k req/s", "~10k req/s", "max"].contains(&l.label.as_str()));
    for l in cost_levels {
        let total = l.total_us_per_span();
        t.row(vec![
            format!("{}<br>`{}`", l.label, l.load.describe()),
            num(l.wrk.rps),
            format!("{} ({})", l.m("spans"), l.spans_total),
            format!("{:.2} µs/span ({}% of a core)", l.per_span_us(l.kspan_cpu_s), num(l.kspan_cpu_s / l.wrk.seconds * 100.0)),
            format!("{:.2} µs/span", l.per_span_us(l.bpf_ns as f64 / 1e9)),
            format!("**{total:.2} µs**"),
            format!("{:.2} µs", total * l.spans_made() as f64 / l.wrk.requests as f64),
            num(l.bpf_runs as f64 / l.wrk.requests as f64),
            num(l.bpf_ns as f64 / l.bpf_runs.max(1) as f64),
            format!("{:.1} µs", l.receiver_cpu_s * 1e6 / l.spans_total.max(1) as f64),
            if total <= MAX_US_PER_SPAN { "PASS".into() } else { format!("**MISS** ({:.1}x)", total / MAX_US_PER_SPAN) },
        ]);
    }
    s.tables.push(t);
    s.note(
        "A fresh kspan per level (`--pid <nginx master> --print none`, OTLP/gRPC to the receiver). kspan user+sys: \
         utime+stime from /proc/<kspan>/stat, read after `kspan ready` and again once kspan has drained its ring \
         buffer after wrk ends (its CPU time stopped moving for 300 ms), so start-up (BTF, attach) is excluded and \
         the last partial export batch (flushed at SIGTERM) is too.",
    );
    s.note(
        "BPF in-kernel: `kernel.bpf_stats_enabled=1` for the whole benchmark (restored after); the sum of \
         `run_time_ns` deltas from `bpftool prog show --json` over kspan's programs (ids from `prog_id:` in \
         /proc/<kspan>/fdinfo). That includes every syscall the tracepoints fire on, filtered-out processes' too. \
         Enabling the stats itself adds a little to each run.",
    );
    s.note(
        "Divided by the spans kspan made (its `spans` counter; the receiver's count is in brackets and is lower when \
         the export queue overflowed, see table 4: dividing by it would charge dropped spans' CPU to the others). \
         Only nginx is traced (wrk stands in for clients on other hosts), so each request yields one SERVER span. \
         Rates other than max are offered on a fixed schedule (the pacing script of table 1a); the achieved rate \
         is what wrk measured.",
    );
    s.note(
        "Receiver CPU (the bench's count-only OTLP/gRPC receiver, `cargo xtask otlp-sink`, not kspan; per span it \
         received) is shown because it shares the 2 cores with everything else.",
    );
    s
}

fn loss_section(ctx: &Ctx, levels: &[Level], scope: Scope) -> Section {
    let mut s = Section::new(scope.loss_title());
    let mut t = Table::new(&[
        "level",
        "achieved req/s",
        "requests (wrk)",
        "SERVER spans received",
        "received / requests",
        "missing",
        "events_dropped_ringbuf",
        "spans made (kspan) / request",
        "spans_dropped_queue_full",
        "lossless end to end",
        "capture lossless",
    ]);
    for l in levels {
        t.row(vec![
            format!("{}<br>`{}`", l.label, l.load.describe()),
            num(l.wrk.rps),
            l.wrk.requests.to_string(),
            l.spans_server.to_string(),
            format!("{:.4}", l.spans_server as f64 / l.wrk.requests as f64),
            format!("{:.2}%", l.loss_pct()),
            l.m("events_dropped_ringbuf").to_string(),
            format!("{:.3}", l.m("spans") as f64 / l.wrk.requests as f64),
            l.m("spans_dropped_queue_full").to_string(),
            if l.lossless() { "yes".into() } else { "**no**".into() },
            if l.capture_lossless() { "yes".into() } else { "**no**".into() },
        ]);
    }
    s.tables.push(t);
    let best = levels.iter().filter(|l| l.lossless()).map(|l| l.wrk.rps).fold(f64::NAN, f64::max);
    let first_loss = levels.iter().find(|l| !l.lossless());
    s.result = Some(match (best.is_finite(), first_loss) {
        (true, None) => format!("**Highest lossless rate measured: {} req/s** (no level lost anything, max included).", num(best)),
        (true, Some(l)) => format!(
            "**Highest lossless rate measured: {} req/s**; loss starts at level {} ({} req/s).",
            num(best),
            l.label,
            num(l.wrk.rps)
        ),
        (false, _) => "**No level was lossless.**".into(),
    });
    let best_capture = levels.iter().filter(|l| l.capture_lossless()).map(|l| l.wrk.rps).fold(f64::NAN, f64::max);
    if scope == Scope::WholeHost {
        s.note(
            "kspan with no filter, as the DaemonSet runs it: wrk's requests are traced too (a CLIENT span each, so 2 \
             spans made per request), and so is the receiver. A host whose clients and servers both run on it, at \
             twice the records per request of table 4.",
        );
    }
    s.note(format!(
        "Capture alone (kernel ring buffer, parsing, span building: no `events_dropped_ringbuf` and {} span(s) made \
         per request): lossless up to {} req/s{}. Where that is higher than the end-to-end figure, the spans were \
         lost at kspan's export queue (OTLP queue of 2048 spans, kspan's default) because the receiver could \
         not take them as fast.",
        scope.spans_per_request(),
        if best_capture.is_finite() { num(best_capture) } else { "no level".into() },
        if levels.iter().all(Level::capture_lossless) { " (every level, max included)" } else { "" }
    ));
    s.note(
        "Same runs as table 3 when both ran. Lossless = SERVER spans received >= requests wrk completed, and kspan's \
         final `events_dropped_ringbuf` (kernel ring buffer full) and `spans_dropped_queue_full` (export queue full, \
         i.e. the receiver did not keep up) are both 0. A ratio slightly above 1 is requests in flight when wrk \
         stopped (answered, so traced, but not counted by wrk).",
    );
    if !ctx.quick {
        s.note("Rates are offered on a fixed schedule (the pacing script of table 1a) and measured; the ladder runs to max even after loss starts, because table 3 needs max.");
    }
    s
}
