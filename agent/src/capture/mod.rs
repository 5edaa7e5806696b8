//! Loads and attaches the kernel programs and owns their maps. Dropping a
//! `Capture` detaches every program and releases every map.

pub mod btf;
pub mod decode;
pub mod gobinary;
pub mod gotls;
pub mod openssl;
mod openssl_sites;
pub mod propagate;
pub mod tracefs;
mod uprobes;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use kspan_common::{
    COUNTER_SLOTS, FILTER_ALL, FILTER_ALLOW_LIST, MAX_CAPTURE, Settings, SockStateLayout, SyscallLayout,
};

/// The compiled kernel programs, embedded by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kspan"));

/// Data syscalls: an enter program each, one shared exit program.
const DATA_SYSCALLS: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "sendfile64",
];
/// Syscall tracepoints with an enter and an exit program of their own.
const SYSCALLS: &[&str] = &["connect"];
/// Enter-only syscall tracepoints.
const ENTER_ONLY: &[&str] = &["close", "dup2", "dup3"];
/// Exit-only syscall tracepoints.
const EXIT_ONLY: &[&str] = &["accept", "accept4"];
const SCHED: &[&str] = &["sched_process_fork", "sched_process_exit", "sched_process_exec"];
/// The socket capture path: raw tracepoints, each with a program of its name.
const SOCKET_HOOKS: &[(&str, &str)] = &[
    ("sock", "sock_send_length"),
    ("sock", "sock_recv_length"),
    ("tcp", "tcp_sendmsg_locked"),
    ("tcp", "tcp_receive_reset"),
    ("tcp", "tcp_destroy_sock"),
];

pub use crate::config::CaptureHook;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed: {0} (kspan needs root, or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN)")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel rejected program {program}: {source}\nverifier log:\n{log}")]
    Rejected { program: String, source: std::io::Error, log: String },
    #[error("program {program}: {source}")]
    Program { program: String, source: ProgramError },
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("--capture-size {0} is out of range 1..={MAX_CAPTURE}")]
    CaptureSize(u32),
    #[error("no cgroup2 mount in /proc/self/mounts: --propagate headers needs one")]
    NoCgroup2,
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error(
        "--propagate headers: sockets in a sockhash misreport received bytes on this kernel ({0}); \
         propagating would stall the applications' connections"
    )]
    SockmapReceive(String),
    #[error(
        "--capture-hook sockets needs the sock:sock_send_length, sock:sock_recv_length, \
         tcp:tcp_sendmsg_locked, tcp:tcp_receive_reset and tcp:tcp_destroy_sock tracepoints \
         on x86_64; use --capture-hook syscalls"
    )]
    NoSocketHooks,
}

/// How the kernel programs are set up. Filters the kernel applies itself, so
/// an idle filter costs almost nothing.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Payload bytes captured per syscall.
    pub capture_size: u32,
    /// Where socket data is captured.
    pub hook: CaptureHook,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Trace only processes put into the allow-list (by pid, exe or port).
    pub allow_list: bool,
    /// Ports whose clients and servers join the allow-list.
    pub ports: Vec<u16>,
    /// Only this network namespace (inode), when set.
    pub netns: Option<u32>,
    /// Kernel BTF to read struct offsets from.
    pub btf_path: PathBuf,
    /// Insert `traceparent` into outgoing HTTP/1.x requests.
    pub propagate: bool,
    /// With `propagate`: only sockets of this network namespace.
    pub propagate_netns: Option<PathBuf>,
    /// Capture TLS plaintext with uprobes on OpenSSL and Go's crypto/tls.
    pub tls: bool,
    /// Act as if the kernel had rejected the socket capture programs, so
    /// tests can check the fallback to syscall tracepoints on a kernel that
    /// accepts them (`KSPAN_SIMULATE_SOCKET_HOOK_REJECTION=1`).
    pub simulate_socket_hook_rejection: bool,
    /// Act as if Go's `(*Conn).Read` had no call to memmove to probe, so
    /// tests can check the RET probes that stand in for it
    /// (`KSPAN_SIMULATE_GO_READ_WITHOUT_MEMMOVE=1`).
    pub simulate_go_read_without_memmove: bool,
    /// Ask the kernel for no wakeups but the urgent ones (a new connection,
    /// an exec), so tests can check that draining keeps up on its tick
    /// alone (`KSPAN_SIMULATE_LOST_WAKEUPS=1`).
    pub simulate_lost_wakeups: bool,
}

pub struct Capture {
    ebpf: Ebpf,
    /// TLS plaintext probes, when on and loaded.
    openssl: Option<openssl::OpenSsl>,
    go_tls: Option<gotls::GoTls>,
    /// Dropped after `ebpf`, once sock_ops is detached.
    propagation: Option<propagate::Propagation>,
}

impl Capture {
    pub fn load(opts: &CaptureOptions) -> Result<Self, CaptureError> {
        if opts.capture_size == 0 || opts.capture_size as usize > MAX_CAPTURE {
            return Err(CaptureError::CaptureSize(opts.capture_size));
        }
        raise_memlock_limit();
        let tracefs = tracefs::ensure_tracefs()?;
        tracefs::ensure_bpffs()?;
        let propagate_netns_cookie = match (&opts.propagate_netns, opts.propagate) {
            (Some(path), true) => propagate::netns_cookie(path)?,
            _ => 0,
        };
        let sockets = match opts.hook {
            CaptureHook::Syscalls => false,
            CaptureHook::Sockets if !socket_hooks_available(&tracefs) => {
                return Err(CaptureError::NoSocketHooks);
            }
            CaptureHook::Sockets => true,
            CaptureHook::Auto => socket_hooks_available(&tracefs),
        };
        match Self::load_with(opts, &tracefs, propagate_netns_cookie, sockets) {
            // A verifier stricter than the one these programs were checked
            // against, or one that runs out of budget on them, would
            // otherwise leave the host untraced: the syscall path's programs
            // are simpler and older kernels verify them.
            Err(e) if sockets && opts.hook == CaptureHook::Auto && e.is_socket_hook_rejection() => {
                tracing::warn!(
                    error = %e,
                    "the socket capture programs did not load; falling back to syscall tracepoints \
                     (every syscall on the host then takes the tracing slow path)"
                );
                Self::load_with(opts, &tracefs, propagate_netns_cookie, false)
            }
            loaded => loaded,
        }
    }

    fn load_with(opts: &CaptureOptions, tracefs: &Path, propagate_netns_cookie: u64, sockets: bool) -> Result<Self, CaptureError> {
        let settings = Settings {
            capture_size: opts.capture_size,
            filter_mode: if opts.allow_list { FILTER_ALLOW_LIST } else { FILTER_ALL },
            self_tgid: std::process::id(),
            netns: opts.netns.unwrap_or(0),
            port_filter: u32::from(!opts.ports.is_empty()),
            fork_child_offset: fork_child_offset(tracefs)?,
            propagate: u32::from(opts.propagate),
            sock_capture: u32::from(sockets),
            wakeup_bytes: if opts.simulate_lost_wakeups { u32::MAX } else { wakeup_mark(opts.ringbuf_bytes) },
            _pad: 0,
            propagate_netns_cookie,
            offsets: btf::kernel_offsets(&opts.btf_path)?,
            layout: if sockets { SyscallLayout::default() } else { syscall_layout(tracefs)? },
            sock_state: sock_state_layout(tracefs)?,
        };
        let ebpf = EbpfLoader::new()
            // Errors and statistics only: a full instruction trace makes the
            // verifier many times slower, overflows the log buffer and
            // makes aya verify the program again with a bigger one.
            .verifier_log_level(aya::VerifierLogLevel::STATS)
            .override_global("KSPAN_SETTINGS", &settings, true)
            .map_max_entries("EVENTS", opts.ringbuf_bytes)
            .map_max_entries("SCRATCH", possible_cpus())
            .load(EBPF_OBJECT)
            .map_err(CaptureError::Load)?;
        let mut capture = Self { ebpf, openssl: None, go_tls: None, propagation: None };
        for port in &opts.ports {
            capture
                .port_filter()?
                .insert(port, 1, 0)
                .map_err(|source| CaptureError::Map { map: "PORT_FILTER", source })?;
        }
        if sockets {
            if opts.simulate_socket_hook_rejection {
                return Err(CaptureError::Rejected {
                    program: SOCKET_HOOKS[0].1.to_owned(),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                    log: "(simulated: KSPAN_SIMULATE_SOCKET_HOOK_REJECTION)".to_owned(),
                });
            }
            capture.load_socket_hooks()?;
            for (_, name) in SOCKET_HOOKS {
                let tp: &mut RawTracePoint = capture.program(name)?;
                tp.attach(name).map_err(|source| CaptureError::Program { program: (*name).to_owned(), source })?;
            }
            tracing::info!("capturing on socket tracepoints (sock_send_length, sock_recv_length)");
        } else {
            capture.attach_syscalls()?;
            tracing::info!("capturing on syscall tracepoints");
        }
        for name in SCHED {
            capture.attach("sched", name)?;
        }
        capture.attach("sock", "inet_sock_set_state")?;
        if opts.propagate {
            capture.propagation = Some(propagate::attach(&mut capture.ebpf)?);
            for pid in crate::process::pids(Path::new("/proc")) {
                capture.note_runtime(pid);
            }
        }
        if opts.tls {
            capture.load_tls(opts.simulate_go_read_without_memmove);
        }
        Ok(capture)
    }

    /// TLS capture is an addition: a kernel that refuses uprobes still
    /// gets every plaintext connection traced.
    fn load_tls(&mut self, go_read_without_memmove: bool) {
        match openssl::OpenSsl::load(&mut self.ebpf, Path::new("/proc")) {
            Ok(mut probes) => {
                probes.attach_existing(&mut self.ebpf);
                self.openssl = Some(probes);
            }
            Err(err) => tracing::warn!(%err, "TLS plaintext capture is off: the OpenSSL probes did not load"),
        }
        match gotls::GoTls::load(&mut self.ebpf, Path::new("/proc"), go_read_without_memmove) {
            Ok(mut probes) => {
                probes.attach_existing(&mut self.ebpf);
                self.go_tls = Some(probes);
            }
            Err(err) => tracing::warn!(%err, "Go TLS plaintext capture is off: the crypto/tls probes did not load"),
        }
    }

    /// A traced process opened a connection: attach to the libssl it maps,
    /// if it is a copy not seen before (a container's).
    pub fn scan_for_tls_libraries(&mut self, pid: u32) {
        if let Some(probes) = &mut self.openssl {
            probes.scan_process(&mut self.ebpf, pid);
        }
        if let Some(probes) = &mut self.go_tls {
            probes.scan_executable(&mut self.ebpf, pid);
        }
    }

    /// Process `pid` exited (see `scan_for_tls_libraries`).
    pub fn forget_tls_libraries(&mut self, pid: u32) {
        if let Some(probes) = &mut self.openssl {
            probes.forget(pid);
        }
    }

    /// With propagation on: tells the kernel whether process `pid` runs
    /// Go, whose threads stand for no request (see `THREADLESS`). Done for
    /// every process at start-up and again at each exec, before it sends.
    pub fn note_runtime(&mut self, pid: u32) {
        if self.propagation.is_none() {
            return;
        }
        let go = crate::process::runtime::is_go_binary(&Path::new("/proc").join(pid.to_string()).join("exe"));
        let Ok(mut threadless) = self.threadless() else {
            return;
        };
        // A full map (an LRU) drops its oldest entry; a failed remove is
        // a pid that was never in it.
        let _ = if go { threadless.insert(pid, 1, 0) } else { threadless.remove(&pid) };
    }

    /// Process `pid` exec'd: its executable is looked into for OpenSSL
    /// now, before it serves anything, and its maps are read again at its
    /// next connection.
    pub fn exec_for_tls(&mut self, pid: u32) {
        if let Some(probes) = &mut self.openssl {
            probes.forget(pid);
            probes.scan_executable(&mut self.ebpf, pid);
        }
        if let Some(probes) = &mut self.go_tls {
            probes.scan_executable(&mut self.ebpf, pid);
        }
    }

    fn attach_syscalls(&mut self) -> Result<(), CaptureError> {
        for name in DATA_SYSCALLS {
            self.attach("syscalls", &format!("sys_enter_{name}"))?;
        }
        let exits: Vec<String> = DATA_SYSCALLS.iter().map(|n| format!("sys_exit_{n}")).collect();
        self.attach_many("sys_exit_data", "syscalls", &exits)?;
        for name in SYSCALLS {
            self.attach("syscalls", &format!("sys_enter_{name}"))?;
            self.attach("syscalls", &format!("sys_exit_{name}"))?;
        }
        for name in ENTER_ONLY {
            self.attach("syscalls", &format!("sys_enter_{name}"))?;
        }
        for name in EXIT_ONLY {
            self.attach("syscalls", &format!("sys_exit_{name}"))?;
        }
        Ok(())
    }

    /// Loads the socket path's programs side by side: the verifier takes
    /// seconds over each capture program (5 s each on a 2.8 GHz Xeon), and
    /// the kernel verifies loads from different threads in parallel, so
    /// with two cores kspan is ready in half the time.
    fn load_socket_hooks(&mut self) -> Result<(), CaptureError> {
        let mut programs: Vec<(&str, &mut RawTracePoint)> = Vec::new();
        for (name, program) in self.ebpf.programs_mut() {
            if SOCKET_HOOKS.iter().any(|(_, hook)| *hook == name) {
                let tp = program.try_into().map_err(|source| CaptureError::Program { program: name.to_owned(), source })?;
                programs.push((name, tp));
            }
        }
        if let Some((_, missing)) =
            SOCKET_HOOKS.iter().find(|(_, hook)| !programs.iter().any(|(name, _)| name == hook))
        {
            return Err(CaptureError::Program { program: (*missing).to_owned(), source: ProgramError::NotLoaded });
        }
        std::thread::scope(|scope| {
            let loads: Vec<_> = programs
                .into_iter()
                .map(|(name, tp)| scope.spawn(move || tp.load().map_err(|source| rejected(name, source))))
                .collect();
            // A panic inside a load is a bug in aya, not bad input: pass it on.
            loads.into_iter().try_for_each(|load| load.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })
    }

    fn attach(&mut self, category: &str, name: &str) -> Result<(), CaptureError> {
        self.attach_many(name, category, &[name.to_owned()])
    }

    /// Loads program `name` once and attaches it to each tracepoint.
    fn attach_many(&mut self, name: &str, category: &str, tracepoints: &[String]) -> Result<(), CaptureError> {
        let tp: &mut TracePoint = self.program(name)?;
        tp.load().map_err(|source| rejected(name, source))?;
        for tracepoint in tracepoints {
            tp.attach(category, tracepoint)
                .map_err(|source| CaptureError::Program { program: format!("{name} on {tracepoint}"), source })?;
        }
        Ok(())
    }

    /// Program `name` of the object, as the program type `T`.
    fn program<'a, T>(&'a mut self, name: &str) -> Result<&'a mut T, CaptureError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| CaptureError::Program { program: name.to_owned(), source: ProgramError::NotLoaded })?;
        program.try_into().map_err(|source| CaptureError::Program { program: name.to_owned(), source })
    }

    /// The ring buffer all records arrive on. Can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, CaptureError> {
        let map = self.ebpf.take_map("EVENTS").ok_or(CaptureError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| CaptureError::Map { map: "EVENTS", source })
    }

    fn port_filter(&mut self) -> Result<HashMap<&mut MapData, u16, u8>, CaptureError> {
        let map = self.ebpf.map_mut("PORT_FILTER").ok_or(CaptureError::MissingMap("PORT_FILTER"))?;
        HashMap::try_from(map).map_err(|source| CaptureError::Map { map: "PORT_FILTER", source })
    }

    fn threadless(&mut self) -> Result<HashMap<&mut MapData, u32, u8>, CaptureError> {
        let map = self.ebpf.map_mut("THREADLESS").ok_or(CaptureError::MissingMap("THREADLESS"))?;
        HashMap::try_from(map).map_err(|source| CaptureError::Map { map: "THREADLESS", source })
    }

    fn pid_filter(&mut self) -> Result<HashMap<&mut MapData, u32, u8>, CaptureError> {
        let map = self.ebpf.map_mut("PID_FILTER").ok_or(CaptureError::MissingMap("PID_FILTER"))?;
        HashMap::try_from(map).map_err(|source| CaptureError::Map { map: "PID_FILTER", source })
    }

    /// Adds a process to the allow-list (used with `allow_list`).
    pub fn allow_pid(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.pid_filter()?.insert(pid, 1, 0).map_err(|source| CaptureError::Map { map: "PID_FILTER", source })
    }

    /// Unpins the propagation maps of dead kspan runs whose connections
    /// have all closed (see `propagate`).
    pub fn retire_dead_propagation_runs(&self) {
        if let Some(propagation) = &self.propagation {
            propagation.retire_earlier_runs();
        }
    }

    /// Sums of the per-CPU counters, indexed by `kspan_common::Counter`.
    pub fn counters(&self) -> Result<[u64; COUNTER_SLOTS as usize], CaptureError> {
        let map = self.ebpf.map("COUNTERS").ok_or(CaptureError::MissingMap("COUNTERS"))?;
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|source| CaptureError::Map { map: "COUNTERS", source })?;
        let mut out = [0u64; COUNTER_SLOTS as usize];
        for (slot, total) in out.iter_mut().enumerate() {
            let values =
                array.get(&(slot as u32), 0).map_err(|source| CaptureError::Map { map: "COUNTERS", source })?;
            *total = values.iter().sum();
        }
        Ok(out)
    }
}

impl CaptureError {
    /// The kernel refused to load one of the socket capture path's own
    /// programs (not one both paths share).
    fn is_socket_hook_rejection(&self) -> bool {
        matches!(self, CaptureError::Rejected { program, .. } if SOCKET_HOOKS.iter().any(|(_, name)| name == program))
    }
}

fn rejected(program: &str, source: ProgramError) -> CaptureError {
    match source {
        ProgramError::LoadError { io_error, verifier_log } => {
            CaptureError::Rejected { program: program.to_owned(), source: io_error, log: verifier_log.to_string() }
        }
        source => CaptureError::Program { program: program.to_owned(), source },
    }
}

/// Whether this kernel has the socket capture path's tracepoints. The
/// program reads syscall registers in the x86_64 layout, so other
/// architectures use syscall tracepoints.
fn socket_hooks_available(tracefs: &Path) -> bool {
    cfg!(target_arch = "x86_64")
        && SOCKET_HOOKS.iter().all(|(category, name)| tracefs.join("events").join(category).join(name).is_dir())
}

/// Backlog at which the kernel wakes user space: a sixteenth of the ring,
/// at most 256 KiB. Bigger batches are cheaper per record (fewer wakeups),
/// and the other fifteen sixteenths absorb a burst while user space wakes
/// up. But a wake turns its whole backlog into spans at once, and the export
/// queue (2048 spans by default) must take that burst: with head-only HTTP
/// records a 1 MiB backlog held ~3,000 spans and overflowed it at 17k req/s.
fn wakeup_mark(ringbuf_bytes: u32) -> u32 {
    (ringbuf_bytes / 16).min(256 * 1024)
}

/// Highest possible CPU id + 1, from /sys/devices/system/cpu/possible
/// ("0-3" or "0,2-5"); the scratch array needs a slot for each.
fn possible_cpus() -> u32 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let max = text.trim().split(',').filter_map(|range| range.rsplit('-').next()?.trim().parse::<u32>().ok()).max();
    match max {
        Some(max) => max + 1,
        None => std::thread::available_parallelism().map_or(256, |n| n.get() as u32),
    }
}

fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct. Newer kernels account BPF
    // memory to the cgroup and ignore this limit; older ones need it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if rc != 0 {
        tracing::debug!("setrlimit(RLIMIT_MEMLOCK) failed: {}", std::io::Error::last_os_error());
    }
}

/// Argument and return offsets shared by every syscall tracepoint we use;
/// checked against each format file so an unusual kernel fails loudly.
fn syscall_layout(tracefs: &Path) -> Result<SyscallLayout, CaptureError> {
    let mut layout: Option<SyscallLayout> = None;
    for name in DATA_SYSCALLS.iter().chain(SYSCALLS).chain(ENTER_ONLY) {
        let enter = format!("sys_enter_{name}");
        let args_offset = tracefs::syscall_args_offset(&tracefs::read_format(tracefs, "syscalls", &enter)?, &enter)?;
        let ret_offset = if ENTER_ONLY.contains(name) {
            layout.map_or(args_offset, |l| l.ret_offset)
        } else {
            let exit = format!("sys_exit_{name}");
            tracefs::field_offset(&tracefs::read_format(tracefs, "syscalls", &exit)?, &exit, "ret")?
        };
        let this = SyscallLayout { args_offset, ret_offset };
        match layout {
            None => layout = Some(this),
            Some(l) if l.args_offset == args_offset && l.ret_offset == ret_offset => {}
            Some(l) => {
                return Err(tracefs::TracefsError::Layout {
                    tracepoint: enter,
                    index: 0,
                    offset: args_offset,
                    expected: l.args_offset,
                }
                .into());
            }
        }
    }
    let layout = layout.unwrap_or_default();
    for name in EXIT_ONLY {
        let exit = format!("sys_exit_{name}");
        let ret_offset = tracefs::field_offset(&tracefs::read_format(tracefs, "syscalls", &exit)?, &exit, "ret")?;
        if ret_offset != layout.ret_offset {
            return Err(tracefs::TracefsError::Layout {
                tracepoint: exit,
                index: 0,
                offset: ret_offset,
                expected: layout.ret_offset,
            }
            .into());
        }
    }
    Ok(layout)
}

fn sock_state_layout(tracefs: &Path) -> Result<SockStateLayout, CaptureError> {
    let tp = "inet_sock_set_state";
    let fields = tracefs::read_format(tracefs, "sock", tp)?;
    Ok(SockStateLayout {
        skaddr: tracefs::field_offset(&fields, tp, "skaddr")?,
        oldstate: tracefs::field_offset(&fields, tp, "oldstate")?,
        newstate: tracefs::field_offset(&fields, tp, "newstate")?,
        _pad: 0,
    })
}

fn fork_child_offset(tracefs: &Path) -> Result<u32, CaptureError> {
    let fields = tracefs::read_format(tracefs, "sched", "sched_process_fork")?;
    Ok(tracefs::field_offset(&fields, "sched_process_fork", "child_pid")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_hooks_need_every_tracepoint() {
        let dir = std::env::temp_dir().join(format!("kspan-tracefs-{}", std::process::id()));
        for (category, name) in &SOCKET_HOOKS[..SOCKET_HOOKS.len() - 1] {
            std::fs::create_dir_all(dir.join("events").join(category).join(name)).unwrap();
        }
        assert!(!socket_hooks_available(&dir), "one tracepoint missing: fall back to syscalls");
        let (category, name) = SOCKET_HOOKS[SOCKET_HOOKS.len() - 1];
        std::fs::create_dir_all(dir.join("events").join(category).join(name)).unwrap();
        assert_eq!(socket_hooks_available(&dir), cfg!(target_arch = "x86_64"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_socket_path_programs_trigger_the_fallback() {
        let rejected = |program: &str| CaptureError::Rejected {
            program: program.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            log: String::new(),
        };
        assert!(rejected("sock_send_length").is_socket_hook_rejection());
        assert!(rejected("tcp_destroy_sock").is_socket_hook_rejection());
        // Shared by both paths: falling back would not help.
        assert!(!rejected("inet_sock_set_state").is_socket_hook_rejection());
        assert!(!CaptureError::NoSocketHooks.is_socket_hook_rejection());
    }

    #[test]
    fn wakeup_mark_scales_with_small_rings() {
        assert_eq!(wakeup_mark(4 * 1024 * 1024), 256 * 1024);
        assert_eq!(wakeup_mark(256 * 1024 * 1024), 256 * 1024);
        // A ring smaller than the old fixed 64 KiB mark still wakes us.
        assert_eq!(wakeup_mark(32 * 1024), 2048);
    }
}
