//! Attaches the Go `crypto/tls` probes (`agent-ebpf/src/gotls.rs`) to Go
//! executables. Go links its TLS statically into every binary, so each
//! executable is its own attach target: looked into once per file (device,
//! inode), when a process execs it, at a traced process's first connection,
//! and for every running process at start-up.

use std::{collections::HashSet, os::unix::fs::MetadataExt, path::Path, path::PathBuf};

use aya::{Ebpf, programs::ProgramError};

use super::{
    gobinary::{self, GoBinaryError, GoFunction},
    uprobes::{UprobeLinks, uprobe},
};

/// (function, entry program, program for its RETs if it has one): `Write`
/// is reported at its entry (see the kernel side).
const PROBES: &[(&str, &str, Option<&str>)] = &[
    ("crypto/tls.(*Conn).Read", "go_tls_read", Some("go_tls_read_return")),
    ("crypto/tls.(*Conn).Write", "go_tls_write", None),
];
/// Executables attached at most; each holds a perf event per entry and per
/// RET of `Read` (about ten).
const MAX_EXECUTABLES: usize = 256;
/// Executables remembered as looked into; past it the memory starts over.
const MAX_SEEN: usize = 65536;

#[derive(Debug, thiserror::Error)]
pub enum GoTlsError {
    #[error("program {program}: {source}")]
    Program { program: &'static str, source: ProgramError },
    #[error("{path}: {source}")]
    Attach { path: String, source: ProgramError },
    #[error("{path}: {source}")]
    Binary { path: String, source: GoBinaryError },
}

pub struct GoTls {
    /// (device, inode) of each executable looked into.
    seen: HashSet<(u64, u64)>,
    attached: usize,
    proc_root: PathBuf,
    links: UprobeLinks,
}

impl GoTls {
    /// Loads the programs (attaching nothing yet).
    pub fn load(ebpf: &mut Ebpf, proc_root: &Path) -> Result<Self, GoTlsError> {
        for &(_, entry, ret) in PROBES {
            for program in [Some(entry), ret].into_iter().flatten() {
                uprobe(ebpf, program).and_then(|p| p.load()).map_err(|source| GoTlsError::Program { program, source })?;
            }
        }
        Ok(Self { seen: HashSet::new(), attached: 0, proc_root: proc_root.to_owned(), links: UprobeLinks::default() })
    }

    /// The executables of every running process.
    pub fn attach_existing(&mut self, ebpf: &mut Ebpf) {
        for pid in crate::process::pids(&self.proc_root) {
            self.scan_executable(ebpf, pid);
        }
    }

    /// Attaches to process `pid`'s executable if it is a Go program using
    /// crypto/tls and was not looked into before.
    pub fn scan_executable(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let exe = self.proc_root.join(pid.to_string()).join("exe");
        let Ok(meta) = std::fs::metadata(&exe) else {
            return;
        };
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        if !self.seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        let names: Vec<&'static str> = PROBES.iter().map(|(function, _, _)| *function).collect();
        let functions = match gobinary::find_functions(&exe, &names) {
            Ok(functions) => functions,
            Err(GoBinaryError::NotGo) => return,
            Err(source) => {
                let err = GoTlsError::Binary { path: exe.display().to_string(), source };
                tracing::info!(%err, "Go TLS plaintext of this executable will not be captured");
                return;
            }
        };
        if functions.len() < PROBES.len() {
            // A Go program without crypto/tls: nothing to capture.
            return;
        }
        if self.attached >= MAX_EXECUTABLES {
            tracing::warn!(path = %exe.display(), "not attaching Go TLS probes: {MAX_EXECUTABLES} executables already are");
            return;
        }
        self.attached += 1;
        match attach(ebpf, &mut self.links, &exe, &functions) {
            Ok(returns) => tracing::info!(path = %exe.display(), returns, "Go TLS plaintext probes attached"),
            Err(err) => tracing::warn!(%err, "Go TLS plaintext of this executable will not be captured"),
        }
    }
}

/// Hooks each function's RETs before its entry, so no call is entered
/// without its returns being seen; returns how many RETs were hooked.
fn attach(ebpf: &mut Ebpf, links: &mut UprobeLinks, exe: &Path, functions: &[GoFunction]) -> Result<usize, GoTlsError> {
    let attach_error = |source| GoTlsError::Attach { path: exe.display().to_string(), source };
    let mut returns = 0;
    for function in functions {
        let Some(&(_, entry, ret)) = PROBES.iter().find(|(name, _, _)| *name == function.name) else {
            continue;
        };
        if let Some(ret) = ret {
            for &offset in &function.returns {
                links.attach(ebpf, ret, offset, exe).map_err(attach_error)?;
                returns += 1;
            }
        }
        links.attach(ebpf, entry, function.entry_probe, exe).map_err(attach_error)?;
    }
    Ok(returns)
}
