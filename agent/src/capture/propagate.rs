//! Attaching `--propagate headers`: sock_ops on the cgroup2 root enrols
//! outgoing TCP connections in a sockhash whose sk_msg program inserts
//! `traceparent`.
//!
//! Kernels carrying 929e30f93125 (6.6.128+, 6.12.75+, 6.18.14+) mishandle the
//! receive side of a socket in a sockhash that has no SK_SKB verdict:
//! FIONREAD says 0 and readiness wakeups can be lost, so FIONREAD readers
//! (nginx as a proxy) and epoll clients stall. A probe on a loopback pair
//! tells whether this kernel does; only then is a pass-through verdict
//! attached, and kspan refuses to propagate if even that does not repair it.
//!
//! With the verdict, received bytes wait in the socket's psock until the
//! process reads them, and the kernel frees them when the socket leaves the
//! sockhash, which happens to all of them when the map is freed at kspan's
//! exit: the connection then waits forever for bytes it was sent. So with
//! the verdict each run pins its sockhash, and its sockets stay enrolled
//! until they close: at exit kspan turns its injection off (`INJECT_ON`);
//! each start turns off the injection of earlier runs (a SIGKILLed one could
//! not), and a running kspan unpins those whose connections have all closed.

use std::{
    fs,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapError, SockHash},
    programs::{CgroupAttachMode, CgroupSockAddr, SkMsg, SkSkb, SockOps},
};

use super::CaptureError;

/// Where runs that attached the verdict pin their maps, a directory each.
const PIN_ROOT: &str = "/sys/fs/bpf/kspan/propagate";

fn program_error(program: &str, source: aya::programs::ProgramError) -> CaptureError {
    CaptureError::Program { program: program.to_owned(), source }
}

fn map_error(map: &'static str) -> impl FnOnce(MapError) -> CaptureError {
    move |source| CaptureError::Map { map, source }
}

fn io_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CaptureError {
    move |e| CaptureError::Io(what.to_string(), e)
}

/// The cgroup2 mount, from /proc/self/mounts: hosts with a v1/v2 hybrid
/// mount it at /sys/fs/cgroup/unified, not /sys/fs/cgroup.
pub fn cgroup2_root() -> Result<PathBuf, CaptureError> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, path, fstype) = (f.next(), f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(path))
        })
        .next()
        .ok_or(CaptureError::NoCgroup2)
}

/// The network namespace cookie of `path` (`/var/run/netns/NAME`), read
/// with SO_NETNS_COOKIE on a socket made inside it by a helper thread (a
/// setns affects only the calling thread).
pub fn netns_cookie(path: &Path) -> Result<u64, CaptureError> {
    let ns = fs::File::open(path).map_err(|e| CaptureError::Io(path.display().to_string(), e))?;
    let err = |e: std::io::Error| CaptureError::Io(path.display().to_string(), e);
    let cookie = std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<u64> {
            // SAFETY: plain syscalls on fds we own; only this thread moves.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if sock < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut cookie = 0u64;
                let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
                const SO_NETNS_COOKIE: libc::c_int = 71;
                let rc = libc::getsockopt(sock, libc::SOL_SOCKET, SO_NETNS_COOKIE, (&raw mut cookie).cast(), &mut len);
                let e = std::io::Error::last_os_error();
                libc::close(sock);
                if rc != 0 { Err(e) } else { Ok(cookie) }
            }
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns helper thread panicked")))
    });
    cookie.map_err(err)
}

/// The injection maps of this run. Dropping it (after the programs are
/// detached) turns injection off and unpins what no connection needs.
pub struct Propagation {
    sock_hash: Map,
    inject_on: Map,
    /// This run's pin directory: set when the verdict is attached.
    pinned: Option<PathBuf>,
}

pub fn attach(ebpf: &mut Ebpf) -> Result<Propagation, CaptureError> {
    let mut sock_hash = ebpf.take_map("SOCK_HASH").ok_or(CaptureError::MissingMap("SOCK_HASH"))?;
    let mut inject_on = ebpf.take_map("INJECT_ON").ok_or(CaptureError::MissingMap("INJECT_ON"))?;
    let mut hash = SockHash::<_, u64>::try_from(&mut sock_hash).map_err(map_error("SOCK_HASH"))?;
    let map_fd = hash.fd().try_clone().map_err(io_error("SOCK_HASH"))?;

    let inject: &mut SkMsg = program(ebpf, "kspan_inject")?;
    inject.load().map_err(|e| program_error("kspan_inject", e))?;
    inject.attach(&map_fd).map_err(|e| program_error("kspan_inject", e))?;

    // Probed before sock_ops enrols anything: programs attached to a map
    // apply to the sockets enrolled after them.
    let bare = ReceiveCheck::run(&mut hash).map_err(io_error("sockmap receive probe"))?;
    let pinned = if bare.sound() {
        tracing::info!(?bare, "this kernel's sockmap receive path is sound: no SK_SKB verdict attached");
        None
    } else {
        let verdict: &mut SkSkb = program(ebpf, "kspan_skb_verdict")?;
        verdict.load().map_err(|e| program_error("kspan_skb_verdict", e))?;
        verdict.attach(&map_fd).map_err(|e| program_error("kspan_skb_verdict", e))?;
        let repaired = ReceiveCheck::run(&mut hash).map_err(io_error("sockmap receive probe"))?;
        if !repaired.sound() {
            return Err(CaptureError::SockmapReceive(format!("{bare:?} without a verdict, {repaired:?} with one")));
        }
        let dir = pin(&sock_hash, &inject_on)?;
        tracing::info!(
            ?bare,
            pinned = %dir.display(),
            "this kernel under-reports received bytes on sockets in a sockhash (commit 929e30f93125): \
             SK_SKB verdict attached, and enrolled connections stay enrolled until they close, even after kspan exits"
        );
        Some(dir)
    };
    retire_earlier_runs(pinned.as_deref());
    Array::<_, u32>::try_from(&mut inject_on)
        .and_then(|mut on| on.set(0, 1, 0))
        .map_err(map_error("INJECT_ON"))?;

    let root = cgroup2_root()?;
    let cgroup = fs::File::open(&root).map_err(io_error(root.display()))?;
    let name = match attach_connect_hooks(ebpf, &cgroup) {
        Ok(()) => "kspan_sockops_traced",
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell which process opens a connection: every outgoing connection is enrolled");
            "kspan_sockops"
        }
    };
    let sockops: &mut SockOps = program(ebpf, name)?;
    sockops.load().map_err(|e| program_error(name, e))?;
    sockops.attach(cgroup.as_fd(), CgroupAttachMode::Single).map_err(|e| program_error(name, e))?;
    Ok(Propagation { sock_hash, inject_on, pinned })
}

/// The cgroup connect hooks that note which connections traced processes
/// open (`kspan_sockops_traced` enrols only those).
fn attach_connect_hooks(ebpf: &mut Ebpf, cgroup: &fs::File) -> Result<(), CaptureError> {
    for name in ["kspan_connect4", "kspan_connect6"] {
        let hook: &mut CgroupSockAddr = program(ebpf, name)?;
        hook.load().map_err(|e| program_error(name, e))?;
        hook.attach(cgroup.as_fd(), CgroupAttachMode::Single).map_err(|e| program_error(name, e))?;
    }
    Ok(())
}

impl Drop for Propagation {
    fn drop(&mut self) {
        if let Err(e) = Array::<_, u32>::try_from(&mut self.inject_on).and_then(|mut on| on.set(0, 0, 0)) {
            tracing::warn!(error = %e, "could not turn header injection off");
        }
        let Some(dir) = &self.pinned else { return };
        match SockHash::<_, u64>::try_from(&self.sock_hash).map(|h| h.keys().count()) {
            Ok(0) => unpin(dir),
            Ok(enrolled) => tracing::info!(
                enrolled,
                pinned = %dir.display(),
                "enrolled connections keep their sockhash until they close (injection is off); \
                 a later kspan unpins it once they have"
            ),
            Err(e) => tracing::warn!(error = %e, pinned = %dir.display(), "could not count enrolled connections"),
        }
    }
}

/// A run's directory name: its pid and start time, which tell a live run
/// from a dead one whose pid was reused.
fn run_name(pid: i32) -> Option<String> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(format!("{pid}-{}", stat.starttime))
}

fn is_live(dir: &Path) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let pid = name.split('-').next().and_then(|p| p.parse().ok());
    pid.and_then(run_name).is_some_and(|live| live == name)
}

impl Propagation {
    /// See [`retire_earlier_runs`]. Only a run that pins can have
    /// predecessors that did.
    pub fn retire_earlier_runs(&self) {
        if let Some(own) = &self.pinned {
            retire_earlier_runs(Some(own));
        }
    }
}

/// Pins both maps in a directory of this run's own.
fn pin(sock_hash: &Map, inject_on: &Map) -> Result<PathBuf, CaptureError> {
    let pid = std::process::id() as i32;
    let name = run_name(pid)
        .ok_or_else(|| CaptureError::Io("/proc/self/stat".into(), std::io::Error::other("no start time to name the pin by")))?;
    let dir = Path::new(PIN_ROOT).join(name);
    fs::create_dir_all(&dir).map_err(io_error(dir.display()))?;
    let pin_error = |e: aya::pin::PinError| CaptureError::Io(dir.display().to_string(), std::io::Error::other(e));
    sock_hash.pin(dir.join("SOCK_HASH")).map_err(pin_error)?;
    inject_on.pin(dir.join("INJECT_ON")).map_err(pin_error)?;
    Ok(dir)
}

fn unpin(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "unpinned"),
        Err(e) => tracing::warn!(error = %e, dir = %dir.display(), "could not unpin"),
    }
}

/// Earlier runs' connections keep those runs' programs: their injection
/// goes off (they would insert stale trace ids), and a run whose
/// connections have all closed is unpinned. Runs still alive (another kspan
/// on this host) are theirs to manage.
fn retire_earlier_runs(own: Option<&Path>) {
    let Ok(runs) = fs::read_dir(PIN_ROOT) else { return };
    for dir in runs.flatten().map(|e| e.path()).filter(|d| Some(d.as_path()) != own && !is_live(d)) {
        match retire(&dir) {
            Ok(0) => unpin(&dir),
            Ok(enrolled) => tracing::debug!(enrolled, run = %dir.display(), "an earlier run's connections are still open; its injection is off"),
            // Half-written by a run killed while pinning: nothing else can use it.
            Err(e) => {
                tracing::warn!(error = %e, run = %dir.display(), "unreadable pinned run, unpinning");
                unpin(&dir);
            }
        }
    }
}

/// Turns the run's injection off; how many sockets it still has enrolled.
fn retire(dir: &Path) -> Result<usize, MapError> {
    let mut on: Array<_, u32> = Array::try_from(Map::Array(MapData::from_pin(dir.join("INJECT_ON"))?))?;
    on.set(0, 0, 0)?;
    let hash: SockHash<_, u64> = SockHash::try_from(Map::SockHash(MapData::from_pin(dir.join("SOCK_HASH"))?))?;
    Ok(hash.keys().count())
}

/// What a socket enrolled in the sockhash reports of bytes sent to it.
#[derive(Debug)]
struct ReceiveCheck {
    /// poll() said readable.
    readable: bool,
    /// What FIONREAD said is queued.
    fionread: i32,
    /// What a peek could read.
    peeked: isize,
}

impl ReceiveCheck {
    const KEY: u64 = u64::MAX; // never a socket cookie
    const SENT: usize = 100;

    fn run(hash: &mut SockHash<&mut MapData, u64>) -> std::io::Result<Self> {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        hash.insert(Self::KEY, client.as_raw_fd(), 0).map_err(std::io::Error::other)?;
        let checked = server.write_all(&[b'k'; Self::SENT]).map(|()| Self::observe(client.as_raw_fd()));
        // With a verdict this frees what the psock held: the pair is ours.
        let _ = hash.remove(&Self::KEY);
        checked
    }

    fn observe(fd: i32) -> Self {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let mut fionread: libc::c_int = -1;
        let mut buf = [0u8; 256];
        // SAFETY: plain syscalls on a socket we own, into locals.
        unsafe {
            let readable = libc::poll(&mut pfd, 1, 2000) == 1;
            libc::ioctl(fd, libc::FIONREAD, &mut fionread);
            let peeked = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT);
            Self { readable, fionread, peeked }
        }
    }

    fn sound(&self) -> bool {
        self.readable && self.peeked == Self::SENT as isize && self.fionread as isize == self.peeked
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| program_error(name, aya::programs::ProgramError::NotLoaded))?
        .try_into()
        .map_err(|e| program_error(name, e))
}
