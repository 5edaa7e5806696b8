//! Benchmarks 1 and 2: what tracing costs the traced service. The same
//! service is measured without tracing, under kspan, and (for the Python
//! app) under the OpenTelemetry Python SDK, alternating runs so drift and
//! noise spread over every variant, and the medians are compared.

use std::time::Duration;

use anyhow::Context as _;

use super::{
    Ctx,
    peers::{Kspan, Nginx, PyApp, PyMode, Receiver, SpanCounts},
    procs,
    report::{Section, Table, change_pct, median, num, pct, us},
    wrk::{self, Load, WrkResult},
};

/// Targets from the issue, checked on nginx.
const MAX_THROUGHPUT_LOSS_PCT: f64 = 3.0;
const MAX_P99_INCREASE_PCT: f64 = 5.0;

/// The moderate profile offers this fraction of the baseline's max rate.
const MODERATE_FRACTION: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Baseline,
    Kspan,
    /// kspan with no OTLP endpoint and `--print none`: spans are built and
    /// dropped, so the receiver's share of the machine is out of the picture.
    KspanNoExport,
    /// kspan exporting, with `--tls off`: no uprobes on OpenSSL.
    KspanTlsOff,
    OtelSdk,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline (no tracing)",
            Variant::Kspan => "kspan attached, exporting",
            Variant::KspanNoExport => "kspan attached, no export",
            Variant::KspanTlsOff => "kspan attached, exporting, `--tls off`",
            Variant::OtelSdk => "OpenTelemetry Python SDK",
        }
    }
}

/// One wrk run and what was seen around it.
#[derive(Debug, Clone)]
struct Run {
    wrk: WrkResult,
    /// SERVER spans the receiver got per request wrk completed.
    spans_per_request: Option<f64>,
    /// CPU of the app, kspan and the receiver during the run, in % of one core.
    app_cpu: f64,
    kspan_cpu: Option<f64>,
    receiver_cpu: f64,
}

/// What a variant is run against.
struct Service<'a> {
    url: String,
    pid: u32,
    /// nginx: master + worker, summed.
    tree: bool,
    receiver: &'a mut Receiver,
}

impl Service<'_> {
    fn app_cpu(&self) -> f64 {
        if self.tree { procs::tree_cpu_seconds(self.pid) } else { procs::cpu_seconds(self.pid).unwrap_or(f64::NAN) }
    }
}

/// Median results per (profile, variant).
struct Summary {
    profile: String,
    load: String,
    variant: Variant,
    runs: Vec<Run>,
}

impl Summary {
    fn med(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
    fn rps(&self) -> f64 {
        self.med(|r| r.wrk.rps)
    }
    fn p50(&self) -> f64 {
        self.med(|r| r.wrk.p50_us)
    }
    fn p99(&self) -> f64 {
        self.med(|r| r.wrk.p99_us)
    }
    fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.wrk.errors).sum()
    }
}

pub fn nginx(ctx: &Ctx) -> anyhow::Result<Section> {
    let dir = ctx.scratch("overhead-nginx")?;
    let nginx = Nginx::start(&dir)?;
    let mut receiver = Receiver::start(&ctx.sink, &dir, "nginx")?;
    let mut svc = Service { url: nginx.url(), pid: nginx.proc.pid(), tree: true, receiver: &mut receiver };
    // The no-export variant only explains the exporting one: --quick skips it.
    let variants: &[Variant] = if ctx.quick {
        &[Variant::Baseline, Variant::Kspan]
    } else {
        &[Variant::Baseline, Variant::Kspan, Variant::KspanNoExport]
    };
    let summaries = measure(ctx, &mut svc, variants, None, &dir)?;
    let mut s = Section::new("1a. Overhead on a traced service: nginx");
    s.result = Some(headline(&summaries, Variant::Kspan, true));
    s.tables.push(raw_table(&summaries));
    s.tables.push(verdict_table(&summaries, true));
    s.note(
        "Debian's nginx (1 worker, `sendfile off`, keep-alive, no access log) serving a 1 KiB static file on \
         127.0.0.1; kspan runs `--pid <nginx master> --print none` exporting OTLP/gRPC to the bench's \
         count-only receiver (`cargo xtask otlp-sink`: it counts spans by walking the protobuf wire format, since the \
         collector of a deployment runs on another machine, not on the traced host's cores).",
    );
    s.note(
        "`kspan attached, no export` (not in --quick): the same kspan with no OTLP endpoint (spans are built, then dropped), to tell \
         kspan's own cost from that of exporting and of the receiver, which shares the 2 cores.",
    );
    common_notes(ctx, &mut s);
    s.note(format!(
        "Targets (issue): throughput loss <= {MAX_THROUGHPUT_LOSS_PCT}% and p99 increase <= {MAX_P99_INCREASE_PCT}% on nginx; \
         PASS/MISS is from the medians above, nothing is retried or filtered."
    ));
    Ok(s)
}

/// nginx over HTTPS: what the TLS probes cost. A uprobe is a trap into the
/// kernel in every process calling the hooked library, wrk included, so
/// `--tls off` is measured beside it.
pub fn nginx_tls(ctx: &Ctx) -> anyhow::Result<Section> {
    let dir = ctx.scratch("overhead-nginx-tls")?;
    let nginx = Nginx::start_tls(&dir)?;
    let mut receiver = Receiver::start(&ctx.sink, &dir, "nginx-tls")?;
    let mut svc = Service { url: nginx.url(), pid: nginx.proc.pid(), tree: true, receiver: &mut receiver };
    let summaries = measure(ctx, &mut svc, &[Variant::Baseline, Variant::Kspan, Variant::KspanTlsOff], None, &dir)?;
    let mut s = Section::new("1c. Overhead on a traced service: nginx over HTTPS");
    s.result = Some(format!(
        "{}; with `--tls off` (no spans from TLS): {}",
        headline(&summaries, Variant::Kspan, false),
        headline(&summaries, Variant::KspanTlsOff, false)
    ));
    s.tables.push(raw_table(&summaries));
    s.tables.push(verdict_table(&summaries, false));
    s.note(
        "The nginx of 1a over HTTPS (TLS 1.3, a self-signed P-256 certificate, keep-alive), wrk as the client. \
         Both use the host's libssl, so with kspan attached both trap into the kernel at each hooked OpenSSL call \
         (`SSL_read`, `SSL_write`, ... and again at their return), though only nginx is traced: a uprobe belongs \
         to the library file, not to a process. `--tls off` attaches no uprobes: TLS traffic then makes no spans \
         (`SERVER spans/req` 0), and what is left is the cost of the socket capture seeing ciphertext.",
    );
    common_notes(ctx, &mut s);
    Ok(s)
}

/// Benchmark 1 for the Python app and benchmark 2 (vs the in-process SDK),
/// measured in one rotation so both tables compare the same runs.
pub fn python(ctx: &Ctx, with_otel: bool) -> anyhow::Result<(Section, Option<Section>)> {
    let dir = ctx.scratch("overhead-python")?;
    let venv = ctx.bench_venv.as_ref().context("the bench venv (Flask, OpenTelemetry SDK) is not set up")?;
    let mut receiver = Receiver::start(&ctx.sink, &dir, "python")?;
    let app = PyApp::start(venv, PyMode::Plain, &dir, "plain")?;
    let otel_app = if with_otel {
        Some(PyApp::start(venv, PyMode::Otel { grpc_port: receiver.grpc_port }, &dir, "otel")?)
    } else {
        None
    };
    let mut variants = vec![Variant::Baseline, Variant::Kspan];
    if with_otel {
        variants.push(Variant::OtelSdk);
    }
    let mut svc = Service { url: app.url(), pid: app.proc.pid(), tree: false, receiver: &mut receiver };
    let otel = otel_app.as_ref().map(|a| (a.url(), a.proc.pid()));
    let summaries = measure(ctx, &mut svc, &variants, otel.as_ref(), &dir)?;

    let plain: Vec<&Summary> = summaries.iter().filter(|s| s.variant != Variant::OtelSdk).collect();
    let mut s1 = Section::new("1b. Overhead on a traced service: Python (Flask) app");
    s1.result = Some(headline(&summaries, Variant::Kspan, false));
    s1.tables.push(raw_table_refs(&plain));
    s1.tables.push(verdict_table_refs(&plain, false));
    s1.note(
        "tests/peers/chain_app.py (Flask 3 development server, threaded, one process) as a leaf: GET /hop/1 answers \
         `leaf-1`; the bench venv's Python runs it in every variant.",
    );
    common_notes(ctx, &mut s1);

    let s2 = with_otel.then(|| {
        let mut s2 = Section::new("2. Against the in-process alternative: OpenTelemetry Python SDK");
        s2.result = Some(format!(
            "kspan: {}. OpenTelemetry SDK: {}.",
            headline(&summaries, Variant::Kspan, false),
            headline(&summaries, Variant::OtelSdk, false)
        ));
        s2.tables.push(sdk_table(&summaries));
        s2.note(
            "Same app and rotation as 1b: the SDK variant is the same chain_app.py started with \
             `opentelemetry-instrument --traces_exporter otlp` (opentelemetry-distro, \
             opentelemetry-instrumentation-flask; BatchSpanProcessor defaults) exporting OTLP/gRPC to the same receiver.",
        );
        s2.note(
            "Overheads are vs the uninstrumented baseline of the same rotation; `spans/req` counts SERVER spans \
             received per request wrk completed (both tracers should give 1.0). CPU per request: utime+stime of the \
             app (and of kspan, for kspan) over the run / requests; the SDK's cost is inside the app, kspan's is \
             in its own process and in the app's syscalls (BPF). The receiver's CPU is excluded for both.",
        );
        common_notes(ctx, &mut s2);
        s2
    });
    Ok((s1, s2))
}

fn common_notes(ctx: &Ctx, s: &mut Section) {
    let (reps, d) = (ctx.reps(), ctx.run_duration().as_secs());
    s.note(format!(
        "Each profile: rounds of the variants in turn, the order reversed every other round (baseline, kspan, ...; \
         ..., kspan, baseline), {d} s of wrk each, after a 1 s warm-up; {reps} round(s), the table shows medians over \
         them. kspan is started (and its eBPF programs attached) \
         before each of its runs and stopped after, so baseline runs have nothing attached."
    ));
    s.note(format!(
        "`max`: `wrk -t2 -c32 --latency`, closed loop as fast as the server answers. `moderate`: a fixed rate of \
         {:.0}% of the baseline's max rate. wrk has no fixed-rate option, so a Lua script (`PACING_SCRIPT` in \
         xtask/src/bench/wrk.rs) gives each request the next slot of an evenly spaced schedule and holds it until \
         then; requests leave in 1 ms groups (the resolution of wrk's `delay()`), and each connection's turn comes \
         about every {} ms. Latency is wrk's, from when a request is written; a server that falls behind makes the \
         schedule slip rather than burst, which the achieved req/s shows.",
        MODERATE_FRACTION * 100.0,
        super::wrk::PACED_CYCLE_MS
    ));
    s.note(
        "kspan traces the server process and its children (`--pid`), as on a node whose clients are on other \
         hosts: wrk shares this 2-core host only for want of a second machine, and is not traced (tracing it too \
         would double the spans per request). All processes, kspan and the receiver included, share the same 2 \
         cores, so any CPU kspan uses is taken from nginx and wrk at max rate. CPU columns are utime+stime over the run in % of one core (2 cores = 200%).",
    );
}

/// Runs every profile; the moderate rate derives from the baseline's max.
fn measure(
    ctx: &Ctx,
    svc: &mut Service,
    variants: &[Variant],
    otel: Option<&(String, u32)>,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Summary>> {
    let d = ctx.run_duration();
    let max = Load::max(2, 32, d);
    warm_up(&svc.url, &max, dir)?;
    if let Some((url, _)) = otel {
        // The SDK exports the warm-up's spans seconds later: wait for them,
        // or they would land in (and load the machine during) the next run.
        let before = svc.receiver.spans.poll()?;
        let requests = warm_up(url, &max, dir)?;
        wait_for_sdk_spans(svc.receiver, before, requests)?;
    }
    let mut out = rotate(ctx, svc, variants, otel, "max", &max, dir)?;
    let base_max = out.iter().find(|s| s.variant == Variant::Baseline).map_or(1000.0, Summary::rps);
    let rate = (base_max * MODERATE_FRACTION).max(10.0) as u32;
    let moderate = Load::paced(rate, d);
    out.extend(rotate(ctx, svc, variants, otel, &format!("moderate (~{rate} req/s offered)"), &moderate, dir)?);
    Ok(out)
}

/// One second of load; returns the requests it made.
fn warm_up(url: &str, load: &Load, dir: &std::path::Path) -> anyhow::Result<u64> {
    let warm = Load { duration: Duration::from_secs(1), ..load.clone() };
    wrk::run(url, &warm, dir).map(|r| r.requests).context("warm-up run")
}

fn rotate(
    ctx: &Ctx,
    svc: &mut Service,
    variants: &[Variant],
    otel: Option<&(String, u32)>,
    profile: &str,
    load: &Load,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Summary>> {
    let mut out: Vec<Summary> = variants
        .iter()
        .map(|v| Summary { profile: profile.to_string(), load: load.describe(), variant: *v, runs: Vec::new() })
        .collect();
    for round in 0..ctx.reps() {
        // ABBA order (B K N, N K B, ...): a drift over the run (heat, page
        // cache, a neighbour) favours no variant.
        let order: Vec<usize> =
            if round % 2 == 0 { (0..out.len()).collect() } else { (0..out.len()).rev().collect() };
        for i in order {
            let s = &mut out[i];
            eprintln!("bench:   {profile}, round {}/{}: {}", round + 1, ctx.reps(), s.variant.label());
            let run = match s.variant {
                Variant::Baseline => plain_run(svc, &svc.url.clone(), svc.pid, load, dir)?,
                Variant::Kspan => kspan_run(ctx, svc, load, dir, true)?,
                Variant::KspanNoExport => kspan_run(ctx, svc, load, dir, false)?,
                Variant::KspanTlsOff => kspan_run_with(ctx, svc, load, dir, true, &["--tls", "off"])?,
                Variant::OtelSdk => {
                    let (url, pid) = otel.context("no SDK-instrumented app")?;
                    sdk_run(svc, url, *pid, load, dir)?
                }
            };
            s.runs.push(run);
        }
    }
    Ok(out)
}

/// Baseline: wrk only; the receiver idles.
fn plain_run(svc: &mut Service, url: &str, pid: u32, load: &Load, dir: &std::path::Path) -> anyhow::Result<Run> {
    let app0 = cpu_of(svc, pid);
    let rcv0 = procs::cpu_seconds(svc.receiver.proc.pid())?;
    let wrk = wrk::run(url, load, dir)?;
    Ok(Run {
        app_cpu: (cpu_of(svc, pid) - app0) / wrk.seconds * 100.0,
        receiver_cpu: (procs::cpu_seconds(svc.receiver.proc.pid())? - rcv0) / wrk.seconds * 100.0,
        kspan_cpu: None,
        spans_per_request: None,
        wrk,
    })
}

fn cpu_of(svc: &Service, pid: u32) -> f64 {
    if pid == svc.pid { svc.app_cpu() } else { procs::cpu_seconds(pid).unwrap_or(f64::NAN) }
}

fn kspan_run(ctx: &Ctx, svc: &mut Service, load: &Load, dir: &std::path::Path, export: bool) -> anyhow::Result<Run> {
    kspan_run_with(ctx, svc, load, dir, export, &[])
}

fn kspan_run_with(
    ctx: &Ctx,
    svc: &mut Service,
    load: &Load,
    dir: &std::path::Path,
    export: bool,
    extra: &[&str],
) -> anyhow::Result<Run> {
    let before = svc.receiver.spans.poll()?;
    let grpc = export.then_some(svc.receiver.grpc_port);
    let kspan = Kspan::start(&ctx.kspan, svc.pid, grpc, extra, &dir.join("kspan.log"))?;
    let k0 = procs::cpu_seconds(kspan.pid())?;
    let url = svc.url.clone();
    let mut run = plain_run(svc, &url, svc.pid, load, dir)?;
    run.kspan_cpu = Some((procs::cpu_seconds(kspan.pid())? - k0) / run.wrk.seconds * 100.0);
    // Let kspan drain its ring buffer before SIGTERM (which flushes the
    // export queue but ends reading the ring buffer).
    procs::settle(Duration::from_millis(300), Duration::from_secs(60), || procs::cpu_seconds(kspan.pid()).unwrap_or(0.0));
    let metrics = kspan.stop()?;
    let got = svc.receiver.settled(Duration::from_millis(300), Duration::from_secs(30))? - before;
    svc.receiver.spans.discard_read()?;
    run.spans_per_request = export.then(|| got.server as f64 / run.wrk.requests as f64);
    let dropped = metrics.get("events_dropped_ringbuf").copied().unwrap_or(0)
        + metrics.get("spans_dropped_queue_full").copied().unwrap_or(0);
    if dropped > 0 {
        eprintln!("bench:   note: kspan dropped {dropped} events/spans in this run ({metrics:?})");
    }
    Ok(run)
}

/// The SDK exports on its own schedule (5 s batches): wait for its spans so
/// the next run does not pay for this one's export.
fn sdk_run(svc: &mut Service, url: &str, pid: u32, load: &Load, dir: &std::path::Path) -> anyhow::Result<Run> {
    let before = svc.receiver.spans.poll()?;
    let mut run = plain_run(svc, url, pid, load, dir)?;
    let got = wait_for_sdk_spans(svc.receiver, before, run.wrk.requests)?;
    run.spans_per_request = Some(got.server as f64 / run.wrk.requests as f64);
    Ok(run)
}

/// Waits until the SDK's SERVER spans for `requests` arrived (its batches
/// leave every 5 s), or, if it dropped some, until the receiver is quiet.
/// Returns what arrived since `before`, then empties the span file.
fn wait_for_sdk_spans(receiver: &mut Receiver, before: SpanCounts, requests: u64) -> anyhow::Result<SpanCounts> {
    let all = procs::poll_until(Duration::from_secs(8), || {
        let c = receiver.spans.poll().ok()?;
        ((c - before).server >= requests).then_some(c)
    });
    let got = match all {
        Some(c) => c,
        None => receiver.settled(Duration::from_secs(6), Duration::from_secs(30))?,
    } - before;
    receiver.spans.discard_read()?;
    Ok(got)
}

fn raw_table(s: &[Summary]) -> Table {
    raw_table_refs(&s.iter().collect::<Vec<_>>())
}

fn raw_table_refs(sums: &[&Summary]) -> Table {
    let mut t = Table::captioned(
        "Medians per profile and variant:",
        &["profile", "variant", "req/s", "p50", "p99", "app CPU", "kspan CPU", "receiver CPU", "SERVER spans/req", "errors", "runs"],
    );
    for s in sums {
        t.row(vec![
            format!("{}<br>`{}`", s.profile, s.load),
            s.variant.label().into(),
            num(s.rps()),
            us(s.p50()),
            us(s.p99()),
            format!("{}%", num(s.med(|r| r.app_cpu))),
            s.runs[0].kspan_cpu.map_or("-".into(), |_| format!("{}%", num(s.med(|r| r.kspan_cpu.unwrap_or(f64::NAN))))),
            format!("{}%", num(s.med(|r| r.receiver_cpu))),
            s.runs[0].spans_per_request.map_or("-".into(), |_| format!("{:.3}", s.med(|r| r.spans_per_request.unwrap_or(f64::NAN)))),
            s.errors().to_string(),
            s.runs.iter().map(|r| num(r.wrk.rps)).collect::<Vec<_>>().join(", "),
        ]);
    }
    t
}

/// kspan vs baseline per profile: ratios, and PASS/MISS when `targets`.
fn verdict_table(s: &[Summary], targets: bool) -> Table {
    verdict_table_refs(&s.iter().collect::<Vec<_>>(), targets)
}

fn verdict_table_refs(sums: &[&Summary], targets: bool) -> Table {
    let mut header = vec!["profile", "kspan variant", "throughput kspan/baseline", "throughput loss", "p50 change", "p99 kspan/baseline", "p99 increase"];
    if targets {
        header.extend(["throughput target", "p99 target"]);
    }
    let mut t = Table::captioned("kspan vs baseline (ratios of the medians):", &header);
    let kspans = sums.iter().filter(|s| matches!(s.variant, Variant::Kspan | Variant::KspanNoExport | Variant::KspanTlsOff));
    for k in kspans {
        let Some(base) = sums.iter().find(|s| s.variant == Variant::Baseline && s.profile == k.profile) else { continue };
        let loss = -change_pct(base.rps(), k.rps());
        let p99 = change_pct(base.p99(), k.p99());
        let mut row = vec![
            base.profile.clone(),
            k.variant.label().into(),
            format!("{:.3}", k.rps() / base.rps()),
            format!("{loss:.1}%"),
            pct(change_pct(base.p50(), k.p50())),
            format!("{:.3}", k.p99() / base.p99()),
            pct(p99),
        ];
        if targets {
            row.push(verdict(loss, MAX_THROUGHPUT_LOSS_PCT));
            row.push(verdict(p99, MAX_P99_INCREASE_PCT));
        }
        t.row(row);
    }
    t
}

/// `max: throughput -x%, p99 +y%; moderate (...): ...` for one variant.
fn headline(sums: &[Summary], variant: Variant, targets: bool) -> String {
    let mut parts = Vec::new();
    for base in sums.iter().filter(|s| s.variant == Variant::Baseline) {
        let Some(v) = sums.iter().find(|s| s.variant == variant && s.profile == base.profile) else { continue };
        let loss = -change_pct(base.rps(), v.rps());
        let p99 = change_pct(base.p99(), v.p99());
        let profile = base.profile.split(" (").next().unwrap_or(&base.profile);
        parts.push(if targets {
            let pass = |v: f64, limit: f64| if v <= limit { "PASS" } else { "**MISS**" };
            format!(
                "{profile}: throughput loss {loss:.1}% ({} <= {MAX_THROUGHPUT_LOSS_PCT}%), p99 {} ({} <= {MAX_P99_INCREASE_PCT}%)",
                pass(loss, MAX_THROUGHPUT_LOSS_PCT),
                pct(p99),
                pass(p99, MAX_P99_INCREASE_PCT)
            )
        } else {
            format!("{profile}: throughput loss {loss:.1}%, p99 {}", pct(p99))
        });
    }
    parts.join("; ")
}

fn verdict(value: f64, limit: f64) -> String {
    if value <= limit {
        format!("PASS (<= {limit}%)")
    } else {
        format!("**MISS** (> {limit}%, by {:.1} points)", value - limit)
    }
}

fn sdk_table(sums: &[Summary]) -> Table {
    let mut t = Table::captioned(
        "Each tracer vs the uninstrumented baseline (medians):",
        &[
            "profile",
            "variant",
            "req/s",
            "throughput vs baseline",
            "p50",
            "p99",
            "p99 vs baseline",
            "CPU per request (app + kspan)",
            "tracing CPU per request",
            "SERVER spans/req",
        ],
    );
    for base in sums.iter().filter(|s| s.variant == Variant::Baseline) {
        for s in sums.iter().filter(|s| s.profile == base.profile) {
            let ratio = |b: f64, v: f64| {
                if s.variant == Variant::Baseline { "1.000".to_string() } else { format!("{:.3} ({})", v / b, pct(change_pct(b, v))) }
            };
            t.row(vec![
                s.profile.clone(),
                s.variant.label().into(),
                num(s.rps()),
                ratio(base.rps(), s.rps()),
                us(s.p50()),
                us(s.p99()),
                ratio(base.p99(), s.p99()),
                us(cpu_per_request_us(s)),
                if s.variant == Variant::Baseline {
                    "-".into()
                } else {
                    format!("{:+.0} µs", cpu_per_request_us(s) - cpu_per_request_us(base))
                },
                s.runs[0].spans_per_request.map_or("-".into(), |_| format!("{:.3}", s.med(|r| r.spans_per_request.unwrap_or(f64::NAN)))),
            ]);
        }
    }
    t
}

/// CPU the app and kspan (if attached) spent per request wrk completed:
/// comparable across tracers whose throughput differs. The receiver is left
/// out (both tracers export the same spans to it).
fn cpu_per_request_us(s: &Summary) -> f64 {
    let cpu_pct = s.med(|r| r.app_cpu) + s.med(|r| r.kspan_cpu.unwrap_or(0.0));
    cpu_pct / 100.0 / s.rps() * 1e6
}
