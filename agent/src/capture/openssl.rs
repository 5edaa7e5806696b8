//! Attaches the TLS plaintext uprobes (`agent-ebpf/src/tls.rs`) to OpenSSL.
//!
//! A uprobe belongs to a file, not to a process: attached once to a
//! libssl, it fires in every process that maps that file, now or later. So
//! the work here is per library. The host's own libssl is attached at
//! start-up, which covers processes that load it long after they start
//! (Python imports `ssl` on first use); a container's copy is another file,
//! found in the memory maps of its processes when kspan first sees them
//! open a connection, and reached through `/proc/PID/root`.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{ProgramError, UProbe, uprobe::UProbeScope},
};

/// Entry programs by the function they hook; `SSL_read`/`SSL_write` are
/// required, the others hooked where present (the `_ex` forms came with
/// OpenSSL 1.1.1). The handshakes only tie an `SSL` to its connection.
const ENTRY_PROBES: &[(&str, &str, bool)] = &[
    ("SSL_write", "ssl_write", true),
    ("SSL_read", "ssl_read", true),
    ("SSL_write_ex", "ssl_write_ex", false),
    ("SSL_read_ex", "ssl_read_ex", false),
    ("SSL_do_handshake", "ssl_handshake", false),
    ("SSL_accept", "ssl_handshake", false),
    ("SSL_connect", "ssl_handshake", false),
];
const RETURN_PROBE: &str = "ssl_return";
/// Directories where a distribution keeps the host's libssl.
const HOST_LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib",
];
const HOST_LIB_NAMES: &[&str] = &["libssl.so.3", "libssl.so.1.1"];
/// Distinct libraries attached at most; every one holds up to 14 perf events.
const MAX_LIBRARIES: usize = 256;
/// Processes remembered as scanned; past it the memory starts over (a
/// rescan only finds libraries already attached).
const MAX_SCANNED: usize = 65536;

#[derive(Debug, thiserror::Error)]
pub enum OpenSslError {
    #[error("program {program}: {source}")]
    Program { program: &'static str, source: ProgramError },
    #[error("{path}: {source}")]
    Attach { path: String, source: ProgramError },
}

/// Libraries attached so far, and processes whose maps were read.
pub struct OpenSsl {
    /// (device, inode) of each library attached, or found unusable.
    libraries: HashSet<(u64, u64)>,
    scanned: HashSet<u32>,
    proc_root: PathBuf,
}

impl OpenSsl {
    /// Loads the uprobe programs (attaching nothing yet).
    pub fn load(ebpf: &mut Ebpf, proc_root: &Path) -> Result<Self, OpenSslError> {
        let mut programs: Vec<&'static str> = ENTRY_PROBES.iter().map(|(_, program, _)| *program).collect();
        programs.dedup();
        for program in programs.into_iter().chain([RETURN_PROBE]) {
            uprobe(ebpf, program)?.load().map_err(|source| OpenSslError::Program { program, source })?;
        }
        Ok(Self { libraries: HashSet::new(), scanned: HashSet::new(), proc_root: proc_root.to_owned() })
    }

    /// The host's libssl, and every libssl running processes map.
    pub fn attach_existing(&mut self, ebpf: &mut Ebpf) {
        for dir in HOST_LIB_DIRS {
            for name in HOST_LIB_NAMES {
                let path = Path::new(dir).join(name);
                if path.exists() {
                    self.attach_library(ebpf, &path);
                }
            }
        }
        for pid in crate::process::pids(&self.proc_root) {
            self.scan_process(ebpf, pid);
        }
    }

    /// Attaches to the libssl copies process `pid` maps, unless it was
    /// scanned before (see [`OpenSsl::forget`]).
    pub fn scan_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if self.scanned.len() >= MAX_SCANNED {
            self.scanned.clear();
        }
        if !self.scanned.insert(pid) {
            return;
        }
        let proc_dir = self.proc_root.join(pid.to_string());
        let Ok(maps) = std::fs::read_to_string(proc_dir.join("maps")) else {
            return;
        };
        for path in libssl_paths(&maps) {
            // The process's own view of its files: a container's root.
            let path = proc_dir.join("root").join(path.trim_start_matches('/'));
            self.attach_library(ebpf, &path);
        }
    }

    /// Process `pid` exited or exec'd: its next maps may name new files.
    pub fn forget(&mut self, pid: u32) {
        self.scanned.remove(&pid);
    }

    fn attach_library(&mut self, ebpf: &mut Ebpf, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let id = (meta.dev(), meta.ino());
        if self.libraries.contains(&id) {
            return;
        }
        if self.libraries.len() >= MAX_LIBRARIES {
            tracing::warn!(path = %path.display(), "not attaching TLS probes: {MAX_LIBRARIES} libraries already are");
            return;
        }
        // Remembered even when it fails: a library without the symbols
        // fails the same way every time.
        self.libraries.insert(id);
        match attach(ebpf, path) {
            Ok(hooked) => tracing::info!(path = %path.display(), functions = ?hooked, "TLS plaintext probes attached"),
            Err(err) => tracing::warn!(%err, "TLS plaintext of this library will not be captured"),
        }
    }
}

/// Hooks each function `path` exports; the return program first, so no
/// call is entered without its return being seen.
fn attach(ebpf: &mut Ebpf, path: &Path) -> Result<Vec<&'static str>, OpenSslError> {
    let attach_error = |source| OpenSslError::Attach { path: path.display().to_string(), source };
    let mut hooked = Vec::new();
    for (function, program, required) in ENTRY_PROBES {
        match uprobe(ebpf, RETURN_PROBE)?.attach(*function, path, UProbeScope::AllProcesses) {
            Ok(_) => {}
            Err(_) if !required => continue,
            Err(source) => return Err(attach_error(source)),
        }
        uprobe(ebpf, program)?.attach(*function, path, UProbeScope::AllProcesses).map_err(attach_error)?;
        hooked.push(*function);
    }
    Ok(hooked)
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut UProbe, OpenSslError> {
    let found = ebpf.program_mut(program).ok_or(OpenSslError::Program { program, source: ProgramError::NotLoaded })?;
    found.try_into().map_err(|source| OpenSslError::Program { program, source })
}

/// Distinct paths of the libssl files a `/proc/PID/maps` text names.
fn libssl_paths(maps: &str) -> Vec<&str> {
    let mut paths: Vec<&str> = maps
        .lines()
        // address perms offset dev inode path: the path is the sixth field
        // and may contain spaces.
        .filter_map(|line| line.splitn(6, char::is_whitespace).nth(5).map(str::trim))
        .filter(|path| path.starts_with('/') && path.rsplit('/').next().is_some_and(|name| name.starts_with("libssl.so")))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_libssl_mapping_once() {
        let maps = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fd:01 1234 /usr/bin/python3.11
7f1c2a000000-7f1c2a01f000 r--p 00000000 fd:01 5678                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2a01f000-7f1c2a07f000 r-xp 0001f000 fd:01 5678 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2b000000-7f1c2b100000 r-xp 00000000 fd:01 9012 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f1c2c000000-7f1c2c010000 r-xp 00000000 fd:01 3456 /opt/my app/lib/libssl.so.1.1 (deleted)
7f1c2d000000-7f1c2d021000 rw-p 00000000 00:00 0 
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(
            libssl_paths(maps),
            vec!["/opt/my app/lib/libssl.so.1.1 (deleted)", "/usr/lib/x86_64-linux-gnu/libssl.so.3"]
        );
    }
}
