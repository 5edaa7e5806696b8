//! Resources of traced processes, read from procfs once per process and
//! cached (bounded); an exec or exit forgets the entry.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{HostInfo, ProcessInfo, build_resource, docker::DockerContainers, kubernetes::PodDirectory, runtime};
use crate::span::model::{AttrValue, Resource};

struct Known {
    resource: Arc<Resource>,
    exe: Option<String>,
    /// A Go binary (see `runtime`).
    go: bool,
}

pub struct Registry {
    proc_root: PathBuf,
    host: HostInfo,
    cache: HashMap<u32, Known>,
    /// Kernel-reported command names, waiting for `resource` to use them.
    comms: HashMap<u32, String>,
    /// Forked children, by pid, and their parent's pid: a child that is
    /// gone before its /proc is read is its parent's service until it execs.
    parents: HashMap<u32, u32>,
    /// On a Kubernetes node, which pod each container is.
    pods: Option<PodDirectory>,
    /// On a Docker host, each container's config.
    docker: Option<DockerContainers>,
    capacity: usize,
}

impl Registry {
    pub fn new(proc_root: PathBuf, capacity: usize) -> Self {
        Self {
            proc_root,
            host: HostInfo::read(),
            cache: HashMap::new(),
            comms: HashMap::new(),
            parents: HashMap::new(),
            pods: None,
            docker: None,
            capacity: capacity.max(1),
        }
    }

    /// Names containerised processes by their Kubernetes pod, from the
    /// kubelet's log links in `dir` (see `kubernetes`). False, and nothing
    /// changes, when `dir` does not exist.
    pub fn name_pods_from(&mut self, dir: &Path) -> bool {
        self.pods = PodDirectory::open(dir, self.capacity);
        self.pods.is_some()
    }

    /// Names processes in Docker containers from the engine's container
    /// configs in `dir` (see `docker`). False, and nothing changes, when
    /// `dir` does not exist.
    pub fn name_docker_containers_from(&mut self, dir: &Path) -> bool {
        self.docker = DockerContainers::open(dir, self.capacity);
        self.docker.is_some()
    }

    /// Reads `pid`'s identity now, while it is alive (short-lived clients
    /// are often gone by the time their span completes). `comm` names the
    /// process if /proc already lost it.
    pub fn prime(&mut self, pid: u32, comm: &str) {
        if !self.cache.contains_key(&pid) && !comm.is_empty() {
            self.comms.insert(pid, comm.to_owned());
        }
        self.resource(pid);
    }

    /// `parent` forked `child` (a process or a thread: threads are never
    /// looked up by their own id, so recording them too is harmless).
    pub fn forked(&mut self, parent: u32, child: u32) {
        if parent == child {
            return;
        }
        if self.parents.len() >= self.capacity
            && let Some(victim) = self.parents.keys().next().copied()
        {
            self.parents.remove(&victim);
        }
        self.parents.insert(child, parent);
    }

    /// The resource for `pid`. A process that already exited still gets a
    /// minimal resource, so its last spans are not lost: a forked child's
    /// is its parent's (a forking server's worker that answered and exited
    /// before kspan read its /proc), else one named by its command.
    pub fn resource(&mut self, pid: u32) -> Arc<Resource> {
        if let Some(known) = self.cache.get(&pid) {
            return known.resource.clone();
        }
        let read = ProcessInfo::read(&self.proc_root, pid);
        if let Err(err) = &read
            && !err.is_gone()
        {
            tracing::debug!(pid, %err, "cannot read process identity");
        }
        // A zombie (exited, not yet reaped) has no cmdline or exe left to
        // name it by, like a process already gone.
        let mut alive = read.ok().filter(|info| !info.cmdline.is_empty() || info.exe_path.is_some());
        if let Some(info) = &mut alive
            && let Some(id) = info.container_id.clone()
        {
            if let Some(pod) = self.pods.as_mut().and_then(|pods| pods.lookup(&id)) {
                info.in_pod(pod);
            } else if let Some(container) = self.docker.as_mut().and_then(|docker| docker.lookup(&id)) {
                info.in_docker_container(container);
            }
        }
        // Taken, not read, when used: the child's resource is cached below,
        // and with pid reuse two gone pids could name each other as parent.
        let parent = if alive.is_none() { self.parents.remove(&pid) } else { None };
        let known = match (alive, parent) {
            (Some(info), _) => Known {
                resource: Arc::new(build_resource(&info, &self.host, env!("CARGO_PKG_VERSION"))),
                go: runtime::is_go_binary(&self.proc_root.join(pid.to_string()).join("exe")),
                exe: info.exe_path,
            },
            (None, Some(parent)) => {
                let resource = Arc::new(forked_child(&self.resource(parent), pid, parent));
                let parent = self.cache.get(&parent);
                Known { resource, exe: parent.and_then(|p| p.exe.clone()), go: parent.is_some_and(|p| p.go) }
            }
            (None, None) => Known {
                resource: Arc::new(gone_process(pid, self.comms.get(&pid).map(String::as_str), &self.host)),
                exe: None,
                go: false,
            },
        };
        if self.cache.len() >= self.capacity {
            // Bounded: dropping an arbitrary entry only costs a re-read.
            if let Some(victim) = self.cache.keys().next().copied() {
                self.cache.remove(&victim);
            }
        }
        self.comms.remove(&pid);
        let resource = known.resource.clone();
        self.cache.insert(pid, known);
        resource
    }

    /// Executable path of a process (cached with its resource).
    pub fn exe_path(&mut self, pid: u32) -> Option<String> {
        self.resource(pid);
        self.cache.get(&pid).and_then(|k| k.exe.clone())
    }

    /// Whether `pid` runs a Go binary (cached with its resource).
    pub fn is_go(&mut self, pid: u32) -> bool {
        self.resource(pid);
        self.cache.get(&pid).is_some_and(|k| k.go)
    }

    pub fn forget(&mut self, pid: u32) {
        self.cache.remove(&pid);
        self.comms.remove(&pid);
        self.parents.remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }
}

/// The resource of `parent` for its forked `child`: the same service and
/// executable, the child's own pid.
fn forked_child(parent_resource: &Resource, child: u32, parent: u32) -> Resource {
    let mut attributes: Vec<(String, AttrValue)> = parent_resource
        .attributes
        .iter()
        .filter(|(k, _)| k != "process.pid" && k != "process.parent_pid")
        .cloned()
        .collect();
    attributes.push(("process.pid".to_owned(), AttrValue::Int(i64::from(child))));
    attributes.push(("process.parent_pid".to_owned(), AttrValue::Int(i64::from(parent))));
    Resource { key: u64::from(child) | (1 << 63), service_name: parent_resource.service_name.clone(), attributes }
}

/// A process whose /proc entry is gone: named by its kernel command name
/// when we have it (the OTel SDKs' own fallback is `unknown_service:<exe>`).
fn gone_process(pid: u32, comm: Option<&str>, host: &HostInfo) -> Resource {
    let service_name = match comm {
        Some(comm) => comm.to_owned(),
        None => format!("unknown_service:{pid}"),
    };
    let mut attributes = vec![
        ("service.name".to_owned(), AttrValue::from(service_name.clone())),
        ("process.pid".to_owned(), AttrValue::Int(i64::from(pid))),
        ("host.name".to_owned(), AttrValue::from(host.host_name.clone())),
        ("telemetry.sdk.name".to_owned(), AttrValue::from("kspan".to_owned())),
        ("telemetry.sdk.version".to_owned(), AttrValue::from(env!("CARGO_PKG_VERSION").to_owned())),
    ];
    if let Some(id) = &host.host_id {
        attributes.push(("host.id".to_owned(), AttrValue::from(id.clone())));
    }
    if let Some(comm) = comm {
        attributes.push(("process.executable.name".to_owned(), AttrValue::from(comm.to_owned())));
    }
    Resource { key: u64::from(pid) | (1 << 63), service_name, attributes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_and_falls_back_for_gone_processes() {
        let mut reg = Registry::new(PathBuf::from("/proc"), 2);
        let me = std::process::id();
        let a = reg.resource(me);
        assert!(Arc::ptr_eq(&a, &reg.resource(me)));
        assert!(reg.exe_path(me).is_some());
        let gone = reg.resource(u32::MAX - 1);
        assert_eq!(gone.service_name, format!("unknown_service:{}", u32::MAX - 1));
        reg.prime(u32::MAX - 2, "curl");
        assert_eq!(reg.resource(u32::MAX - 2).service_name, "curl", "kernel comm names a vanished process");
        reg.resource(1);
        assert!(reg.len() <= 2);
        reg.forget(me);
        assert!(!Arc::ptr_eq(&a, &reg.resource(me)));
    }

    #[test]
    fn a_gone_forked_child_is_its_parents_service() {
        let mut reg = Registry::new(PathBuf::from("/proc"), 8);
        let me = std::process::id();
        let child = u32::MAX - 3;
        // The fork is reported before the child's first connection.
        reg.forked(me, child);
        reg.prime(child, "python3");
        let parent = reg.resource(me);
        let inherited = reg.resource(child);
        assert_eq!(inherited.service_name, parent.service_name);
        let pid = inherited.attributes.iter().find(|(k, _)| k == "process.pid").map(|(_, v)| v.clone());
        assert_eq!(pid, Some(AttrValue::Int(i64::from(child))));
        assert_ne!(inherited.key, parent.key);
        // After an exec (forget), the child is no longer its parent's.
        reg.forget(child);
        assert_eq!(reg.resource(child).service_name, format!("unknown_service:{child}"));
        // Reused pids naming each other as parents end, not recurse forever.
        let (a, b) = (u32::MAX - 5, u32::MAX - 6);
        reg.forked(a, b);
        reg.forked(b, a);
        assert_eq!(reg.resource(a).service_name, reg.resource(b).service_name);
    }
}
