//! Attaches the TLS plaintext uprobes (`agent-ebpf/src/tls.rs`) to OpenSSL.
//!
//! A uprobe belongs to a file, not to a process: attached once to a
//! libssl, it fires in every process that maps that file, now or later. So
//! the work here is per library. The host's own libssl is attached at
//! start-up, which covers processes that load it long after they start
//! (Python imports `ssl` on first use); a container's copy is another file,
//! found in the memory maps of its processes when kspan first sees them
//! open a connection, and reached through `/proc/PID/root`. An executable
//! that carries OpenSSL itself and exports its functions (Node.js as
//! NodeSource and nodejs.org build it) is attached the same way, through
//! `/proc/PID/exe`.

use std::{
    collections::HashSet,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};

use aya::{Ebpf, programs::ProgramError};

use super::openssl_sites::{CODE_WINDOW, Code, cheap_entry, entry_skip, file_offset, internal_target};
use super::uprobes::{SeenOnce, UprobeLinks, uprobe};

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
/// (plain form, `_ex` form, the internal function both call, the entry
/// program for it): it takes the `_ex` form's arguments.
const INTERNAL_CALLEES: [(&str, &str, &str, &str); 2] = [
    ("SSL_read", "SSL_read_ex", "ssl_read_internal", "ssl_read_ex"),
    ("SSL_write", "SSL_write_ex", "ssl_write_internal", "ssl_write_ex"),
];
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
/// Processes remembered as scanned, and executables as looked into; past
/// it the memory starts over (a rescan only finds what is already attached).
const MAX_SCANNED: usize = 65536;

#[derive(Debug, thiserror::Error)]
pub enum OpenSslError {
    #[error("program {program}: {source}")]
    Program { program: &'static str, source: ProgramError },
    #[error("{path}: {source}")]
    Attach { path: String, source: ProgramError },
    #[error("{path} does not export {function}")]
    Missing { path: String, function: &'static str },
}

/// Libraries attached so far, and processes whose maps were read.
pub struct OpenSsl {
    /// (device, inode) of each library attached, or found unusable.
    libraries: HashSet<(u64, u64)>,
    /// (device, inode) of each executable looked into for OpenSSL.
    executables: SeenOnce<(u64, u64)>,
    scanned: SeenOnce<u32>,
    proc_root: PathBuf,
    links: UprobeLinks,
}

impl OpenSsl {
    /// Loads the uprobe programs (attaching nothing yet).
    pub fn load(ebpf: &mut Ebpf, proc_root: &Path) -> Result<Self, OpenSslError> {
        let mut programs: Vec<&'static str> = ENTRY_PROBES.iter().map(|(_, program, _)| *program).collect();
        programs.dedup();
        for program in programs.into_iter().chain([RETURN_PROBE]) {
            uprobe(ebpf, program).and_then(|p| p.load()).map_err(|source| OpenSslError::Program { program, source })?;
        }
        Ok(Self {
            libraries: HashSet::new(),
            executables: SeenOnce::new(MAX_SCANNED),
            scanned: SeenOnce::new(MAX_SCANNED),
            proc_root: proc_root.to_owned(),
            links: UprobeLinks::default(),
        })
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

    /// Attaches to the libssl copies process `pid` maps, and to its
    /// executable if that carries OpenSSL, unless it was scanned before
    /// (see [`OpenSsl::forget`]).
    pub fn scan_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if !self.scanned.first_time(pid) {
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
        self.attach_executable(ebpf, &proc_dir.join("exe"));
    }

    /// Attaches to process `pid`'s executable if it carries OpenSSL.
    pub fn scan_executable(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.attach_executable(ebpf, &self.proc_root.join(pid.to_string()).join("exe"));
    }

    /// Process `pid` exited or exec'd: its next maps may name new files.
    pub fn forget(&mut self, pid: u32) {
        self.scanned.forget(&pid);
    }

    /// Most executables are looked into once and found without OpenSSL;
    /// only their headers and dynamic symbols are read.
    fn attach_executable(&mut self, ebpf: &mut Ebpf, exe: &Path) {
        let Ok(meta) = std::fs::metadata(exe) else {
            return;
        };
        let id = (meta.dev(), meta.ino());
        if self.libraries.contains(&id) {
            return;
        }
        if !self.executables.first_time(id) {
            return;
        }
        let functions = exported_functions(exe);
        if ENTRY_PROBES
            .iter()
            .all(|(function, _, required)| !required || functions.iter().any(|e| e.function == *function))
        {
            self.attach_file(ebpf, exe, id, &functions);
        }
    }

    fn attach_library(&mut self, ebpf: &mut Ebpf, path: &Path) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let id = (meta.dev(), meta.ino());
        if !self.libraries.contains(&id) {
            self.attach_file(ebpf, path, id, &exported_functions(path));
        }
    }

    fn attach_file(&mut self, ebpf: &mut Ebpf, path: &Path, id: (u64, u64), functions: &[Export]) {
        if self.libraries.len() >= MAX_LIBRARIES {
            tracing::warn!(path = %path.display(), "not attaching TLS probes: {MAX_LIBRARIES} libraries already are");
            return;
        }
        // Remembered even when it fails: a library without the symbols
        // fails the same way every time.
        self.libraries.insert(id);
        match attach(ebpf, &mut self.links, path, functions) {
            Ok(hooked) => tracing::info!(path = %path.display(), functions = ?hooked, "TLS plaintext probes attached"),
            Err(err) => tracing::warn!(%err, "TLS plaintext of this library will not be captured"),
        }
    }
}

/// Hooks each function `path` exports (`functions`), where `probe_sites`
/// puts its probes; the return program first, so no call is entered
/// without its return being seen. Offsets, not names: aya would read the
/// symbol table again for each of the fourteen probes, and a process that
/// has just started (Node.js carries OpenSSL in a 100 MB executable)
/// serves its first requests while kspan attaches.
fn attach(
    ebpf: &mut Ebpf,
    links: &mut UprobeLinks,
    path: &Path,
    functions: &[Export],
) -> Result<Vec<&'static str>, OpenSslError> {
    let attach_error = |source| OpenSslError::Attach { path: path.display().to_string(), source };
    if let Some((function, _, _)) = ENTRY_PROBES
        .iter()
        .find(|(function, _, required)| *required && !functions.iter().any(|e| e.function == *function))
    {
        return Err(OpenSslError::Missing { path: path.display().to_string(), function });
    }
    let mut hooked = Vec::new();
    for site in probe_sites(path, functions) {
        links.attach(ebpf, RETURN_PROBE, site.offset, path).map_err(attach_error)?;
        links.attach(ebpf, site.program, site.offset, path).map_err(attach_error)?;
        hooked.push(site.function);
    }
    Ok(hooked)
}

/// A hooked function `path` exports.
struct Export {
    function: &'static str,
    /// File offset of its first byte.
    offset: u64,
    address: u64,
    /// From the symbol; 0 when the symbol gives none.
    size: u64,
}

/// A probe to attach: its entry program, where, and the function it
/// stands for (logged).
#[derive(Debug)]
struct Site {
    function: &'static str,
    program: &'static str,
    offset: u64,
}

/// Where each exported function's probes go (see `openssl_sites`): past a
/// leading `endbr64` where that is cheaper, and for `SSL_read`/`SSL_write`
/// and their `_ex` forms, on the internal function they all call when
/// their own entries would be single-stepped. Only the first bytes of the
/// few functions concerned are read.
fn probe_sites(path: &Path, exports: &[Export]) -> Vec<Site> {
    // The code is decoded as x86-64; elsewhere every probe stays on its
    // function's first byte.
    let file = std::fs::File::open(path).ok().filter(|_| cfg!(target_arch = "x86_64"));
    let read = |offset: u64, len: u64| -> Vec<u8> {
        let mut buf = vec![0; len.clamp(1, CODE_WINDOW as u64) as usize];
        let n = file.as_ref().and_then(|f| f.read_at(&mut buf, offset).ok()).unwrap_or(0);
        buf.truncate(n);
        buf
    };
    let codes: Vec<Vec<u8>> =
        exports.iter().map(|e| read(e.offset, if e.size == 0 { CODE_WINDOW as u64 } else { e.size })).collect();
    let code = |name: &str| {
        let (e, bytes) = exports.iter().zip(&codes).find(|(e, _)| e.function == name)?;
        Some(Code { address: e.address, offset: e.offset, bytes })
    };
    let mut sites: Vec<Site> = exports
        .iter()
        .zip(&codes)
        .filter_map(|(e, bytes)| {
            let (_, program, _) = ENTRY_PROBES.iter().find(|(f, _, _)| *f == e.function)?;
            Some(Site { function: e.function, program, offset: e.offset + entry_skip(bytes) })
        })
        .collect();
    for (plain, ex, internal, program) in INTERNAL_CALLEES {
        let (Some(plain_code), Some(ex_code)) = (code(plain), code(ex)) else {
            continue;
        };
        let Some(offset) = internal_target(&plain_code, &ex_code).and_then(|t| file_offset(&plain_code, t)) else {
            continue;
        };
        let entry = read(offset, CODE_WINDOW as u64);
        if cheap_entry(&entry) {
            sites.retain(|s| s.function != plain && s.function != ex);
            sites.push(Site { function: internal, program, offset: offset + entry_skip(&entry) });
        }
    }
    sites
}

/// The hooked functions the ELF file at `path` defines in its dynamic
/// symbol table, with their file offsets, in one pass. A static OpenSSL
/// exported for addons (Node.js) is found this way too; a stripped static
/// copy has no names to attach to.
///
/// The file is read, not mapped: a process can truncate its own library
/// under a mapping, and the fault would kill kspan. Only the headers and
/// the two dynamic symbol sections are read, each in one piece, and the
/// 64-bit little-endian symbols walked by hand: a read per name through
/// `object`'s cache took 140 ms for Node.js's 75,000 symbols, while a
/// process that has just exec'd is already starting to serve.
fn exported_functions(path: &Path) -> Vec<Export> {
    use object::{Object, ObjectSection, SectionIndex, read::ReadCache};
    const SYM_SIZE: usize = 24;
    const STT_FUNC: u8 = 2;
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Vec::new();
    };
    let section_data = |name| elf.section_by_name(name).and_then(|s| s.data().ok());
    let (true, true, Some(symbols), Some(names)) =
        (elf.is_64(), elf.is_little_endian(), section_data(".dynsym"), section_data(".dynstr"))
    else {
        return Vec::new();
    };
    let mut found: Vec<Export> = Vec::new();
    for sym in symbols.chunks_exact(SYM_SIZE) {
        let name_at = u32::from_le_bytes([sym[0], sym[1], sym[2], sym[3]]) as usize;
        let (kind, section) = (sym[4] & 0xf, u16::from_le_bytes([sym[6], sym[7]]));
        let name = names.get(name_at..).and_then(|rest| rest.split(|&b| b == 0).next()).unwrap_or_default();
        // Section 0 is an undefined symbol: an import, not the function.
        if kind != STT_FUNC || section == 0 || !name.starts_with(b"SSL_") {
            continue;
        }
        let Some(&(function, _, _)) = ENTRY_PROBES.iter().find(|(f, _, _)| name == f.as_bytes()) else {
            continue;
        };
        // A uprobe is placed by file offset: the symbol's address within
        // its section, from where that section lies in the file.
        let u64_at = |at: usize| u64::from_le_bytes(sym[at..at + 8].try_into().unwrap_or_default());
        let (address, size) = (u64_at(8), u64_at(16));
        let Ok(section) = elf.section_by_index(SectionIndex(usize::from(section))) else {
            continue;
        };
        let (Some((section_offset, _)), Some(offset)) = (section.file_range(), address.checked_sub(section.address()))
        else {
            continue;
        };
        if !found.iter().any(|e| e.function == function) {
            found.push(Export { function, offset: section_offset + offset, address, size });
        }
    }
    found
}

/// Distinct paths of the libssl files a `/proc/PID/maps` text names.
fn libssl_paths(maps: &str) -> Vec<&str> {
    let mut paths: Vec<&str> = maps
        .lines()
        // address perms offset dev inode path: the path is the sixth field
        // and may contain spaces.
        .filter_map(|line| line.splitn(6, char::is_whitespace).nth(5).map(str::trim))
        .filter(|path| {
            path.starts_with('/') && path.rsplit('/').next().is_some_and(|name| name.starts_with("libssl.so"))
        })
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

    /// The host's libssl.so.3; CI machines must have one.
    fn host_libssl() -> Option<PathBuf> {
        let libssl = HOST_LIB_DIRS.iter().map(|dir| Path::new(dir).join("libssl.so.3")).find(|p| p.exists());
        if libssl.is_none() {
            assert!(std::env::var_os("CI").is_none(), "CI: the host has no libssl.so.3");
            eprintln!("skipped: no libssl.so.3");
        }
        libssl
    }

    #[test]
    fn libssl_exports_every_hooked_function_at_its_file_offset() {
        let Some(libssl) = host_libssl() else {
            return;
        };
        let functions = exported_functions(&libssl);
        for (function, _, _) in ENTRY_PROBES {
            assert!(functions.iter().any(|e| e.function == *function), "{} exports {function}", libssl.display());
        }
        // Where `object`'s own symbol API puts them.
        use object::{Object, ObjectSection, ObjectSymbol};
        let bytes = std::fs::read(&libssl).unwrap();
        let elf = object::File::parse(&*bytes).unwrap();
        for e in &functions {
            let symbol = elf.dynamic_symbols().find(|s| s.name() == Ok(e.function)).unwrap();
            let section = elf.section_by_index(symbol.section_index().unwrap()).unwrap();
            assert_eq!(
                e.offset,
                symbol.address() - section.address() + section.file_range().unwrap().0,
                "{}",
                e.function
            );
            assert_eq!((e.address, e.size), (symbol.address(), symbol.size()), "{}", e.function);
        }
        // Distinct places inside the file (the integration tests show the
        // probes fire there).
        let size = std::fs::metadata(&libssl).unwrap().len();
        let mut offsets: Vec<u64> = functions.iter().map(|e| e.offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), functions.len());
        assert!(offsets.iter().all(|&o| o > 0 && o < size));
        assert!(exported_functions(&std::env::current_exe().unwrap()).is_empty(), "this test binary has no OpenSSL");
        assert!(exported_functions(Path::new("/nonexistent/kspan-test")).is_empty());
    }

    /// Every probe site lands on an instruction the kernel emulates or on a
    /// function's first byte, and reads and writes each get exactly one
    /// entry program, so no call is captured twice.
    #[test]
    fn host_libssl_probes_avoid_single_stepped_entries() {
        let Some(libssl) = host_libssl() else {
            return;
        };
        let exports = exported_functions(&libssl);
        let sites = probe_sites(&libssl, &exports);
        let bytes = std::fs::read(&libssl).unwrap();
        for site in &sites {
            let at = &bytes[site.offset as usize..];
            let export = exports.iter().find(|e| e.function == site.function);
            assert!(cheap_entry(at) || export.is_some_and(|e| e.offset == site.offset), "{site:?}");
        }
        for programs in [["ssl_read", "ssl_read_ex"], ["ssl_write", "ssl_write_ex"]] {
            let entries: Vec<&Site> = sites.iter().filter(|s| programs.contains(&s.program)).collect();
            let internal = entries.iter().any(|s| s.function.ends_with("_internal"));
            // Either both public forms, or the one function they share.
            assert_eq!(entries.len(), if internal { 1 } else { 2 }, "{entries:?}");
        }
        // Where SSL_read's entry would be single-stepped (Debian's), reads
        // are probed inside: every OpenSSL since 1.1.1 forwards them so.
        let read = exports.iter().find(|e| e.function == "SSL_read").unwrap();
        if !cheap_entry(&bytes[read.offset as usize..]) {
            assert!(sites.iter().any(|s| s.function == "ssl_read_internal"), "{sites:?}");
        }
    }
}
