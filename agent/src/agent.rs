//! The daemon's event loop: ring buffer -> `Pipeline` (connection table,
//! streams, parsers, linker, span builder) -> exporter. One task owns every
//! stage, so no state is shared or locked.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{
    capture::{
        Capture, CaptureOptions,
        decode::{self, Event, ProcRecord},
    },
    config::{Config, Propagate, TlsCapture},
    conntrack::procfs,
    events_log::EventsLog,
    export::{ExportConfig, ExportMetrics, Exporter},
    metrics::{self, Metrics},
    status_server::{self, Published},
    pipeline::Pipeline,
    span::{Clock, route::RouteTemplater, sampler::Sampler},
};

const PROC_ROOT: &str = "/proc";
/// Records handled per turn of the event loop.
const MAX_BATCH: usize = 4096;
/// How often the ring is drained without a wakeup from the kernel. Each
/// drain starts cold (caches, a timer turn, a VM exit for the wakeup), so
/// on a quiet host longer intervals and bigger batches cut the CPU per span
/// (measured at 1k req/s: 10 ms -> 50 ms took ~20 to ~11 us per span, 50 ->
/// 200 ms with the kernel's wakeup mark raised to 1 MiB took it to ~7.5).
/// Spans wait in export batches (1 s by default) for far longer anyway;
/// records that must be handled promptly (a new connection, whose process
/// identity is read from procfs while the process lives, and an exec) wake
/// us at once.
const DRAIN_INTERVAL_MS: u64 = 200;
/// How often dead runs' pinned propagation maps are checked: each holds
/// its programs and their maps (the ring buffer among them) until unpinned.
const RETIRE_INTERVAL_S: u64 = 10;
/// Records between yields of the CPU while draining (about 100 us of work).
/// A drain wakes with a backlog and, unless it yields, holds a core for a
/// millisecond or more; a traced server woken on that core waits for it.
/// Yielding lets it go first. Measured with nginx at a fixed ~19k req/s on
/// 2 cores, p99 over baseline: +60-120% without, +15-25% with. At max rate
/// nginx kept 5-10% more throughput, and kspan, with less CPU, dropped (and
/// counted) up to 0.5% of spans at its export queue. kspan stops yielding
/// while it is behind. While its export queue fills it ends the drain's
/// turn at these points instead, so the exporter can send a batch.
const YIELD_EVERY: usize = 64;

pub struct Agent {
    config: Config,
    capture: Capture,
    pipeline: Pipeline,
    exporter: Exporter,
    events_log: Option<EventsLog>,
    /// The last drain emptied the ring: kspan is keeping up.
    caught_up: bool,
    /// Where `--metrics-addr`'s server reads the counters from.
    published: Option<Published>,
}

impl Agent {
    pub fn start(config: Config) -> anyhow::Result<(Self, RingBuf<MapData>)> {
        let routes = RouteTemplater::new(&config.routes).context("invalid --route pattern")?;
        let ports = match &config.open_ports {
            Some(spec) => Some(procfs::PortSet::parse(spec).context("invalid --open-ports")?),
            None => None,
        };
        let netns = match &config.netns {
            Some(path) => Some(netns_inode(path)?),
            None => None,
        };
        let export_metrics = Arc::new(ExportMetrics::default());
        let export_config = ExportConfig::from_env(config.print.into()).context("invalid OTLP export settings")?;
        let export_port = export_config.otlp.as_ref().and_then(|otlp| otlp.endpoint_port());
        let exporter = Exporter::start(export_config, export_metrics.clone()).context("starting the exporter")?;
        let allow_list = !config.pids.is_empty() || config.exe_path.is_some() || ports.is_some();
        let opts = CaptureOptions {
            capture_size: config.capture_size,
            hook: config.capture_hook,
            ringbuf_bytes: config.ringbuf_size,
            allow_list,
            ports: ports.as_ref().map(|p| p.iter_ports().collect()).unwrap_or_default(),
            netns,
            btf_path: config.btf.clone(),
            propagate: config.propagate == Propagate::Headers,
            tls: config.tls == TlsCapture::Auto,
            propagate_netns: config.netns.clone(),
            simulate_socket_hook_rejection: std::env::var_os("KSPAN_SIMULATE_SOCKET_HOOK_REJECTION")
                .is_some_and(|v| v == "1"),
            simulate_go_read_without_memmove: std::env::var_os("KSPAN_SIMULATE_GO_READ_WITHOUT_MEMMOVE")
                .is_some_and(|v| v == "1"),
            simulate_lost_wakeups: std::env::var_os("KSPAN_SIMULATE_LOST_WAKEUPS").is_some_and(|v| v == "1"),
        };
        warn_without_ptrace();
        let mut capture = Capture::load(&opts).context("loading the kernel programs")?;
        let events = capture.take_events()?;
        let events_log = match &config.events_log {
            Some(path) => Some(EventsLog::create(path)?),
            None => None,
        };
        let mut pipeline = Pipeline::new(
            config.max_connections,
            Path::new(PROC_ROOT),
            routes,
            Sampler::from_env().context("invalid trace sampler")?,
            Clock::now(),
            Metrics::new(export_metrics),
        );
        if let Some(port) = export_port {
            pipeline.conns.recognise_own_export(port);
        }
        if pipeline.registry.name_pods_from(&config.pod_logs) {
            tracing::info!(dir = %config.pod_logs.display(), "naming pods' processes by their workload");
        }
        if pipeline.registry.name_docker_containers_from(&config.docker_containers) {
            tracing::info!(dir = %config.docker_containers.display(), "naming Docker containers' processes");
        }
        let published = match config.metrics_addr {
            None => None,
            Some(addr) => {
                let published = Published::new(String::new());
                let bound = status_server::start(addr, published.clone())
                    .with_context(|| format!("serving --metrics-addr {addr}"))?;
                tracing::info!(%bound, "serving /metrics and /healthz");
                Some(published)
            }
        };
        let mut agent = Self {
            pipeline,
            exporter,
            events_log,
            caught_up: true,
            published,
            capture,
            config,
        };
        agent.publish_metrics();
        agent.pipeline.conns.snapshot_listeners();
        agent.seed_allow_list(ports.as_ref())?;
        Ok((agent, events))
    }

    /// Processes already running when kspan starts join the allow-list here;
    /// later ones join in the kernel (ports, fork) or on exec (exe path).
    fn seed_allow_list(&mut self, ports: Option<&procfs::PortSet>) -> anyhow::Result<()> {
        // `--pid` means the process and its children: those forked later
        // join in the kernel, those already running (an nginx master's
        // workers) join here.
        let mut pids = procfs::with_descendants(Path::new(PROC_ROOT), &self.config.pids);
        if let Some(ports) = ports {
            pids.extend(procfs::pids_listening_or_connected_on(Path::new(PROC_ROOT), ports));
        }
        if self.config.exe_path.is_some() {
            pids.extend(crate::process::pids(Path::new(PROC_ROOT)).into_iter().filter(|pid| self.exe_selected(*pid)));
        }
        for pid in pids {
            self.capture.allow_pid(pid).with_context(|| format!("adding pid {pid} to the allow-list"))?;
        }
        Ok(())
    }

    fn exe_selected(&mut self, pid: u32) -> bool {
        let Some(matcher) = self.config.exe_path.clone() else {
            return false;
        };
        self.pipeline.registry.exe_path(pid).is_some_and(|exe| matcher.matches(&exe))
    }

    pub async fn run(mut self, events: RingBuf<MapData>) -> anyhow::Result<()> {
        // SAFETY: the ring buffer owns its fd and outlives the registration
        // (both are dropped together at the end of this function).
        let mut events =
            unsafe { AsyncFd::register(events) }.map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
        // Both listeners now, not at the loop's first poll (as the lazy
        // `ctrl_c()` future would): a signal in between would be lost.
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let period = Duration::from_secs(self.config.metrics_interval.max(1));
        let mut metrics_tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // The kernel wakes us when a sixteenth of the ring (at most 256 KiB)
        // is waiting or a record is urgent;
        // this drains the rest, bounding how late a quiet host's spans are.
        let mut drain_tick = tokio::time::interval(Duration::from_millis(DRAIN_INTERVAL_MS));
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut publish_tick = tokio::time::interval(status_server::PUBLISH_INTERVAL);
        let retire_period = Duration::from_secs(RETIRE_INTERVAL_S);
        let mut retire_tick = tokio::time::interval_at(tokio::time::Instant::now() + retire_period, retire_period);
        // Start-up (BTF, program loading) peaks far above the steady state;
        // hand those pages back now rather than whenever the allocator's
        // lazy purge gets to them, so RSS reads true from the start.
        // SAFETY: mi_collect has no preconditions.
        unsafe { libmimalloc_sys::mi_collect(true) };
        // Records left by the last turn, which ended early (a full batch,
        // or the export queue filling). The kernel wakes us only when the
        // backlog crosses its mark, so a backlog left above the mark brings
        // no wakeup: drained one turn per tick, it grew faster than it went
        // (5k req/s traced at both ends lost two thirds of its records).
        let mut backlog = false;
        tracing::info!(pid = std::process::id(), "kspan ready");
        loop {
            tokio::select! {
                guard = events.readable_mut() => {
                    let mut guard = guard.context("ring buffer poll")?;
                    backlog = !self.drain_turn(guard.get_inner_mut()).await;
                    if !backlog {
                        guard.clear_ready();
                    }
                }
                _ = std::future::ready(()), if backlog => {
                    backlog = !self.drain_turn(events.get_mut()).await;
                }
                _ = drain_tick.tick() => {
                    backlog = !self.drain_turn(events.get_mut()).await;
                }
                _ = metrics_tick.tick(), if self.config.metrics_interval > 0 => self.log_metrics(),
                _ = publish_tick.tick(), if self.published.is_some() => self.publish_metrics(),
                _ = retire_tick.tick() => self.capture.retire_dead_propagation_runs(),
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        tracing::info!("shutting down: flushing spans");
        // What the kernel reported before the signal is still ours to
        // export: up to a drain interval of it is waiting in the ring.
        while !self.drain(events.get_mut()) {}
        let exporter = &self.exporter;
        self.pipeline.release_held(true, &mut |span| exporter.submit(span));
        self.log_metrics();
        self.exporter.shutdown().await;
        // Dropping the Capture detaches every program and frees every map.
        drop(self.capture);
        tracing::info!("kspan stopped");
        Ok(())
    }

    /// One turn of the event loop's draining. True when the ring was emptied.
    async fn drain_turn(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        let emptied = self.drain(ring);
        let exporter = &self.exporter;
        self.pipeline.release_held(false, &mut |span| exporter.submit(span));
        if !emptied {
            // Still a backlog: the ring stays readable, so without this the
            // loop would run on and the exporter (a task on this thread)
            // would wait while its queue overflows.
            tokio::task::yield_now().await;
        }
        emptied
    }

    /// Handles what the ring holds, in bounded batches so timers, signals
    /// and the exporter still get a turn. True when the ring was emptied.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        for handled in 1..=MAX_BATCH {
            let Some(item) = ring.next() else {
                self.caught_up = true;
                return true;
            };
            self.handle_record(&item);
            if handled % YIELD_EVERY != 0 {
                continue;
            }
            if !self.exporter.has_slack() {
                // The export queue is filling: end the turn, so the exporter
                // (a task on this thread) can send a batch before a big
                // backlog overflows the queue. The loop comes straight back.
                self.caught_up = false;
                return false;
            }
            // Yield only while keeping up: a drain that is catching up needs
            // every slice the scheduler gives it.
            if self.caught_up {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        self.caught_up = false;
        false
    }

    fn handle_record(&mut self, record: &[u8]) {
        let event = match decode::decode(record) {
            Ok(event) => event,
            Err(err) => {
                self.pipeline.metrics.decode_errors.inc();
                tracing::debug!(%err, "undecodable ring-buffer record");
                return;
            }
        };
        let exporter = &self.exporter;
        self.pipeline.handle(&event, &mut |span| exporter.submit(span));
        if let Some(log) = &mut self.events_log {
            // Logged once handled: an open record's connection as the table
            // settled it (role and addresses may come from procfs).
            let resolved = match &event {
                Event::ConnOpen(rec) => self.pipeline.conns.get(rec.conn_id),
                _ => None,
            };
            log.write(&event, resolved);
        }
        match event {
            Event::ConnOpen(rec) => self.capture.scan_for_tls_libraries(rec.tgid),
            Event::Proc(ProcRecord::Exit { tgid, .. }) => self.capture.forget_tls_libraries(tgid),
            Event::Proc(ProcRecord::Exec { tgid, .. }) => {
                self.capture.exec_for_tls(tgid);
                self.capture.note_runtime(tgid);
                if self.exe_selected(tgid)
                    && let Err(err) = self.capture.allow_pid(tgid)
                {
                    tracing::warn!(pid = tgid, %err, "cannot add process to the allow-list");
                }
            }
            _ => {}
        }
    }

    fn read_metrics(&mut self) -> [u64; metrics::METRICS.len()] {
        let kernel = self.capture.counters().unwrap_or_default();
        let p = &self.pipeline;
        p.metrics.read(&kernel, &p.conns.stats, p.conns.len(), p.streams.len())
    }

    fn publish_metrics(&mut self) {
        if let Some(published) = self.published.clone() {
            published.publish(metrics::prometheus_text(&self.read_metrics()));
        }
    }

    fn log_metrics(&mut self) {
        let values = self.read_metrics();
        tracing::info!("kspan metrics {}", metrics::log_line(&values));
    }
}

/// Other processes' `exe` and `root` (the files TLS probes go into, what
/// `--exe-path` matches) are read under ptrace access rules: without
/// CAP_SYS_PTRACE (a unit or container that dropped it) every process
/// holding a capability kspan lacks is opaque, and nothing else says so.
fn warn_without_ptrace() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if crate::process::has_ptrace_capability(&status) == Some(false) {
        tracing::warn!(
            "running without CAP_SYS_PTRACE: processes holding capabilities kspan lacks escape --exe-path, \
             and their executables and container libraries get no TLS probes"
        );
    }
}

fn netns_inode(path: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("--netns {}", path.display()))?;
    u32::try_from(meta.ino()).with_context(|| format!("--netns {}: inode out of range", path.display()))
}
