//! Uprobe links owned by kspan rather than by their programs, so they can
//! all be detached at once; and what the TLS attachers share. Detaching a uprobe waits for an RCU grace
//! period: one after another, the ~40 links of the host's libssl and a Go
//! executable took 10 s to release on this VM, and kspan's stop (a pod's
//! termination, a test's teardown) with them. Released from parallel
//! threads, the waits overlap.

use std::{collections::HashSet, hash::Hash, path::Path};

use aya::{
    Ebpf,
    programs::{ProgramError, UProbe, uprobe::UProbeLink, uprobe::UProbeScope},
};

/// Threads that release links at once; more overlap no further.
const RELEASE_THREADS: usize = 32;

#[derive(Default)]
pub struct UprobeLinks {
    links: Vec<UProbeLink>,
}

impl UprobeLinks {
    /// Attaches the loaded `program` at file `offset` of `path`, for every
    /// process that runs that file.
    pub fn attach(&mut self, ebpf: &mut Ebpf, program: &str, offset: u64, path: &Path) -> Result<(), ProgramError> {
        let probe = uprobe(ebpf, program)?;
        let id = probe.attach(offset, path, UProbeScope::AllProcesses)?;
        self.links.push(probe.take_link(id)?);
        Ok(())
    }
}

impl Drop for UprobeLinks {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        let threads = links.len().min(RELEASE_THREADS);
        if threads < 2 {
            return;
        }
        let mut shares: Vec<Vec<UProbeLink>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, link) in links.into_iter().enumerate() {
            shares[i % threads].push(link);
        }
        std::thread::scope(|scope| {
            for share in shares {
                // A thread that cannot be made drops its share here, in turn.
                let _ = std::thread::Builder::new().name("kspan-detach".into()).spawn_scoped(scope, move || drop(share));
            }
        });
    }
}

/// Things looked into once (processes, executables): past `max` the
/// memory starts over, and a second look only finds what is attached.
pub struct SeenOnce<T> {
    seen: HashSet<T>,
    max: usize,
}

impl<T: Eq + Hash> SeenOnce<T> {
    pub fn new(max: usize) -> Self {
        Self { seen: HashSet::new(), max }
    }

    /// Whether `item` is new (and from now on seen).
    pub fn first_time(&mut self, item: T) -> bool {
        if self.seen.len() >= self.max {
            self.seen.clear();
        }
        self.seen.insert(item)
    }

    pub fn forget(&mut self, item: &T) {
        self.seen.remove(item);
    }
}

/// A loaded uprobe program by name.
pub fn uprobe<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut UProbe, ProgramError> {
    ebpf.program_mut(program).ok_or(ProgramError::NotLoaded)?.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_once_starts_over_when_full() {
        let mut seen = SeenOnce::new(2);
        assert!(seen.first_time(1));
        assert!(!seen.first_time(1));
        assert!(seen.first_time(2));
        assert!(seen.first_time(3), "full: the memory starts over");
        assert!(!seen.first_time(3));
        seen.forget(&3);
        assert!(seen.first_time(3));
        assert!(seen.first_time(1), "forgotten when it started over");
    }
}
