//! Attaching `--propagate headers`: sock_ops on the cgroup2 root enrols
//! outgoing TCP connections in a sockhash whose sk_msg program inserts
//! `traceparent`, with a pass-through SK_SKB verdict beside it.

use std::{fs, os::fd::AsFd, path::{Path, PathBuf}};

use aya::{
    Ebpf,
    maps::{MapData, SockHash},
    programs::{CgroupAttachMode, SkMsg, SkSkb, SockOps},
};

use super::CaptureError;

fn program_error(program: &str, source: aya::programs::ProgramError) -> CaptureError {
    CaptureError::Program { program: program.to_owned(), source }
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
    let ns = fs::File::open(path).map_err(|e| CaptureError::Netns(path.display().to_string(), e))?;
    let err = |e: std::io::Error| CaptureError::Netns(path.display().to_string(), e);
    let cookie = std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<u64> {
            use std::os::fd::AsRawFd;
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

/// Returns the sockhash, which must live as long as the programs.
pub fn attach(ebpf: &mut Ebpf) -> Result<SockHash<MapData, u64>, CaptureError> {
    let map = ebpf.take_map("SOCK_HASH").ok_or(CaptureError::MissingMap("SOCK_HASH"))?;
    let sock_hash: SockHash<_, u64> =
        SockHash::try_from(map).map_err(|source| CaptureError::Map { map: "SOCK_HASH", source })?;
    let map_fd = sock_hash.fd().try_clone().map_err(|e| CaptureError::Netns("SOCK_HASH".into(), e))?;

    let verdict: &mut SkSkb = program(ebpf, "kspan_skb_verdict")?;
    verdict.load().map_err(|e| program_error("kspan_skb_verdict", e))?;
    verdict.attach(&map_fd).map_err(|e| program_error("kspan_skb_verdict", e))?;

    let inject: &mut SkMsg = program(ebpf, "kspan_inject")?;
    inject.load().map_err(|e| program_error("kspan_inject", e))?;
    inject.attach(&map_fd).map_err(|e| program_error("kspan_inject", e))?;

    let root = cgroup2_root()?;
    let cgroup = fs::File::open(&root).map_err(|e| CaptureError::Netns(root.display().to_string(), e))?;
    let sockops: &mut SockOps = program(ebpf, "kspan_sockops")?;
    sockops.load().map_err(|e| program_error("kspan_sockops", e))?;
    sockops.attach(cgroup.as_fd(), CgroupAttachMode::Single).map_err(|e| program_error("kspan_sockops", e))?;
    Ok(sock_hash)
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
