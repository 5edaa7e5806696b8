//! Attaches the Go `crypto/tls` probes (`agent-ebpf/src/gotls.rs`) to Go
//! executables. Go links its TLS statically into every binary, so each
//! executable is its own attach target: looked into once per file (device,
//! inode), when a process execs it, at a traced process's first connection,
//! and for every running process at start-up.

use std::{os::unix::fs::MetadataExt, path::Path, path::PathBuf};

use aya::{Ebpf, programs::ProgramError};

use super::{
    gobinary::{self, GoBinaryError, GoFunction},
    uprobes::{SeenOnce, UprobeLinks, uprobe},
};

const READ: &str = "crypto/tls.(*Conn).Read";
const WRITE: &str = "crypto/tls.(*Conn).Write";
/// What `Read` copies its plaintext out with (`bytes.Reader.Read`, inlined).
const MEMMOVE: &str = "runtime.memmove";
const PROGRAMS: [&str; 4] = ["go_tls_read", "go_tls_read_copy", "go_tls_read_return", "go_tls_write"];
/// Executables attached at most; each holds a perf event per probe (three,
/// or about ten where `Read`'s RETs are probed).
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
    seen: SeenOnce<(u64, u64)>,
    attached: usize,
    proc_root: PathBuf,
    links: UprobeLinks,
    /// Probe `Read`'s RETs even where its memmove call is found (tests).
    read_returns_only: bool,
}

impl GoTls {
    /// Loads the programs (attaching nothing yet).
    pub fn load(ebpf: &mut Ebpf, proc_root: &Path, read_returns_only: bool) -> Result<Self, GoTlsError> {
        for program in PROGRAMS {
            uprobe(ebpf, program).and_then(|p| p.load()).map_err(|source| GoTlsError::Program { program, source })?;
        }
        Ok(Self {
            seen: SeenOnce::new(MAX_SEEN),
            attached: 0,
            proc_root: proc_root.to_owned(),
            links: UprobeLinks::default(),
            read_returns_only,
        })
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
        if !self.seen.first_time((meta.dev(), meta.ino())) {
            return;
        }
        let functions = match gobinary::find_functions(&exe, &[READ, WRITE, MEMMOVE]) {
            Ok(functions) => functions,
            Err(GoBinaryError::NotGo) => return,
            Err(source) => {
                let err = GoTlsError::Binary { path: exe.display().to_string(), source };
                tracing::info!(%err, "Go TLS plaintext of this executable will not be captured");
                return;
            }
        };
        let find = |name| functions.iter().find(|f| f.name == name);
        let (Some(read), Some(write)) = (find(READ), find(WRITE)) else {
            // A Go program without crypto/tls: nothing to capture.
            return;
        };
        if self.attached >= MAX_EXECUTABLES {
            tracing::warn!(path = %exe.display(), "not attaching Go TLS probes: {MAX_EXECUTABLES} executables already are");
            return;
        }
        self.attached += 1;
        let memmove = find(MEMMOVE).map(|f| f.address).filter(|_| !self.read_returns_only);
        match attach(ebpf, &mut self.links, &exe, read, write, memmove) {
            Ok(read_exit) => tracing::info!(path = %exe.display(), read_exit, "Go TLS plaintext probes attached"),
            Err(err) => tracing::warn!(%err, "Go TLS plaintext of this executable will not be captured"),
        }
    }
}

/// Hooks `Write`'s entry, and `Read`'s entry after where its bytes are
/// taken, so no read is entered without its end being seen. `Read`'s bytes
/// are taken at its one call to memmove, which copies them out of the
/// decrypted record: the kernel emulates a CALL, so the probe costs little.
/// Where that call is not found (another Go version may compile `Read`
/// otherwise), at each of its RETs, which the kernel single-steps, several
/// times dearer. Returns which of the two it was.
fn attach(
    ebpf: &mut Ebpf,
    links: &mut UprobeLinks,
    exe: &Path,
    read: &GoFunction,
    write: &GoFunction,
    memmove: Option<u64>,
) -> Result<&'static str, GoTlsError> {
    let attach_error = |source| GoTlsError::Attach { path: exe.display().to_string(), source };
    let copies: Vec<u64> =
        read.calls.iter().filter(|(_, to)| Some(*to) == memmove).map(|(offset, _)| *offset).collect();
    let read_exit = if let [copy] = copies[..] {
        links.attach(ebpf, "go_tls_read_copy", copy, exe).map_err(attach_error)?;
        "memmove"
    } else {
        for &offset in &read.returns {
            links.attach(ebpf, "go_tls_read_return", offset, exe).map_err(attach_error)?;
        }
        "returns"
    };
    links.attach(ebpf, "go_tls_read", read.entry_probe, exe).map_err(attach_error)?;
    links.attach(ebpf, "go_tls_write", write.entry_probe, exe).map_err(attach_error)?;
    Ok(read_exit)
}
