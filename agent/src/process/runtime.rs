//! Recognises runtimes whose threads do not stand for requests. Go runs
//! goroutines on a few OS threads and moves them between threads at every
//! blocking call, so "the request this thread read is the parent of the
//! call this thread writes" links a goroutine's call under another
//! goroutine's request: under concurrency that crossed requests.

use std::{fs::File, path::Path};

use object::{Object, ObjectSection, read::ReadCache};

/// Whether the executable at `path` (`/proc/PID/exe` reaches a
/// container's) was built by the Go toolchain. Only its headers and
/// section names are read, not the whole binary.
pub fn is_go_binary(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return false;
    };
    // `.go.buildinfo` survives stripping; the build id note is there too.
    elf.sections().any(|s| matches!(s.name(), Ok(".go.buildinfo" | ".note.go.buildid")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Go toolchain is itself a Go program (`cargo xtask test` installs
    /// it for the Go peers).
    #[test]
    fn the_go_toolchain_is_a_go_binary() {
        let Ok(go) = std::fs::canonicalize("/usr/bin/go") else {
            assert!(std::env::var_os("CI").is_none(), "CI: /usr/bin/go is missing");
            eprintln!("skipped: no /usr/bin/go");
            return;
        };
        assert!(is_go_binary(&go), "{}", go.display());
    }

    #[test]
    fn this_test_binary_is_not_go_and_missing_files_are_not_either() {
        assert!(!is_go_binary(&std::env::current_exe().unwrap()));
        assert!(!is_go_binary(Path::new("/nonexistent/kspan-test")));
    }
}
