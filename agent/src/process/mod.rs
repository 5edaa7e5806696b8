//! Who a traced process is: its service identity (the OTLP resource its
//! spans go out under), read from procfs.

mod by_container;
pub mod docker;
mod identity;
pub mod kubernetes;
mod service_name;
pub mod registry;
pub mod runtime;

use std::io;
use std::path::{Path, PathBuf};

pub use identity::{HostInfo, ProcessInfo, build_resource, netns_inode};
pub(crate) use identity::parse_stat;

/// The pids `proc_root` lists now; none if it cannot be read.
pub fn pids(proc_root: &Path) -> Vec<u32> {
    std::fs::read_dir(proc_root)
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// CAP_SYS_PTRACE's bit in the capability masks of `/proc/PID/status`.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether a `/proc/PID/status` text shows CAP_SYS_PTRACE effective; None
/// when it has no readable `CapEff:` line.
pub fn has_ptrace_capability(status: &str) -> Option<bool> {
    let mask = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
    Some(mask & (1 << CAP_SYS_PTRACE) != 0)
}

/// Failure to read something under `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited (or its pid is not in this procfs). This is routine
    /// for short-lived processes, so callers should drop it without logging.
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    /// The io error is part of the message rather than `source()` so that a
    /// plain `%err` in a log line says what went wrong.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: io::Error },
    /// The file was read but is not in the format the kernel writes.
    #[error("{}: unexpected format", path.display())]
    Malformed { path: PathBuf },
}

impl ProcError {
    /// Classifies an error from reading `path`, a file of process `pid`.
    /// ENOENT means the `/proc/PID` directory went away; ESRCH is what a read
    /// of an already opened file returns once the task has been reaped.
    pub(crate) fn from_io(pid: u32, path: &Path, err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH) {
            Self::Gone { pid }
        } else {
            Self::Io { path: path.to_path_buf(), err }
        }
    }

    /// True for [`ProcError::Gone`], which callers should treat quietly.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Gone { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::has_ptrace_capability;

    #[test]
    fn reads_cap_sys_ptrace_from_the_effective_mask() {
        let status =
            |eff: &str| format!("Name:\tkspan\nCapPrm:\t000001ffffffffff\nCapEff:\t{eff}\nCapBnd:\t000001ffffffffff\n");
        assert_eq!(has_ptrace_capability(&status("000001ffffffffff")), Some(true));
        // The systemd unit's set, and the same without CAP_SYS_PTRACE.
        assert_eq!(has_ptrace_capability(&status("000000c000281004")), Some(true));
        assert_eq!(has_ptrace_capability(&status("000000c000201004")), Some(false));
        assert_eq!(has_ptrace_capability(&status("zz")), None);
        assert_eq!(has_ptrace_capability("Name:\tkspan\n"), None);
    }
}
