//! Service identity of a traced process, and the OTLP resource built from it.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::process::{
    ProcError,
    docker::DockerContainer,
    kubernetes::{PodContainer, pod_uid_from_cgroup},
};
use crate::span::model::{AttrValue, Resource};

use super::service_name::{interpreted_service_name, sdk_language};

/// What kspan knows about one traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Pid as seen in `proc_root`'s pid namespace.
    pub pid: u32,
    /// Parent pid (field 4 of `stat`).
    pub ppid: u32,
    /// Field 22 of `/proc/PID/stat` (clock ticks after boot); with `pid` it
    /// identifies one incarnation of a process despite pid reuse.
    pub start_time_ticks: u64,
    /// Target of `/proc/PID/exe` without a trailing " (deleted)"; `None` for
    /// kernel threads, zombies, or when kspan may not look.
    pub exe_path: Option<String>,
    /// Basename of `exe_path` (of argv[0] when the exe is a memfd), else `comm`.
    pub exe_name: String,
    /// Kernel task name (`stat` field 2); 15 bytes at most for user tasks.
    pub comm: String,
    /// argv, NUL padding dropped; empty for kernel threads and zombies.
    pub cmdline: Vec<String>,
    /// The process's own OTel configuration if it has one, else inferred
    /// from what it runs (see [`ProcessInfo::read`]).
    pub service_name: String,
    /// `service_name` came from the process's own OTel configuration.
    pub service_name_configured: bool,
    /// Parsed `OTEL_RESOURCE_ATTRIBUTES` of the process, in order, deduplicated.
    pub extra_resource: Vec<(String, String)>,
    /// 64-hex container id from `/proc/PID/cgroup`; `None` on the host.
    pub container_id: Option<String>,
    /// UID of the Kubernetes pod of the container, from its cgroup.
    pub pod_uid: Option<String>,
    /// The Kubernetes pod of the container (see [`ProcessInfo::in_pod`]).
    pub pod: Option<Arc<PodContainer>>,
    /// The Docker container (see [`ProcessInfo::in_docker_container`]).
    pub docker: Option<Arc<DockerContainer>>,
    /// See [`netns_inode`].
    pub netns_inode: Option<u64>,
}

impl ProcessInfo {
    /// Reads process `pid` from `proc_root` (normally `/proc`). Only the
    /// process vanishing or an unreadable `stat` is an error; anything else
    /// missing (exe, environ, cgroup) just leaves the field empty.
    ///
    /// `service_name` is `OTEL_SERVICE_NAME` from the process's environ, else
    /// `service.name` from its `OTEL_RESOURCE_ATTRIBUTES`, else, for an
    /// interpreter (python, node, java, ruby, php, perl), the program it runs
    /// (`python -m flask` → `flask`, `java -jar orders-1.0.jar` → `orders`),
    /// else the executable's name.
    pub fn read(proc_root: &Path, pid: u32) -> Result<Self, ProcError> {
        let dir = proc_root.join(pid.to_string());
        let stat_path = dir.join("stat");
        let stat = fs::read_to_string(&stat_path).map_err(|e| ProcError::from_io(pid, &stat_path, e))?;
        let (comm, ppid, start_time_ticks) = parse_stat(&stat).ok_or(ProcError::Malformed { path: stat_path })?;
        let cmdline_path = dir.join("cmdline");
        let cmdline = match read_from_process_memory(&cmdline_path) {
            Ok(raw) => split_nul(&raw),
            Err(e) => match ProcError::from_io(pid, &cmdline_path, e) {
                gone @ ProcError::Gone { .. } => return Err(gone),
                other => {
                    tracing::debug!(pid, error = %other, "cmdline unreadable");
                    Vec::new()
                }
            },
        };
        let exe_path = fs::read_link(dir.join("exe")).ok().and_then(|p| {
            let p = p.to_string_lossy();
            Some(p.strip_suffix(" (deleted)").unwrap_or(&p).to_owned()).filter(|p| !p.is_empty())
        });
        let base = |p: &str| p.rsplit('/').next().filter(|n| !n.is_empty()).map(str::to_owned);
        // Programs re-executed from a memfd (runc, sandboxes) show as
        // `/memfd:NAME (deleted)` and their comm follows; argv[0] names them.
        let exe_name = match exe_path.as_deref() {
            Some(p) if p.starts_with("/memfd:") => cmdline.first().and_then(|a| base(a)),
            Some(p) => base(p),
            None => None,
        }
        .unwrap_or_else(|| comm.clone());
        // Unreadable environ (another user's process without CAP_SYS_PTRACE,
        // a zombie) is normal: fall back to the executable quietly.
        let (env_service, attrs_raw) = match read_from_process_memory(&dir.join("environ")) {
            Ok(raw) => otel_env(&raw),
            Err(e) => {
                tracing::debug!(pid, error = %e, "environ unreadable");
                (None, None)
            }
        };
        let extra_resource = attrs_raw.as_deref().map(parse_resource_attributes).unwrap_or_default();
        let configured_name = env_service
            .or_else(|| extra_resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .filter(|s| !s.is_empty());
        let service_name_configured = configured_name.is_some();
        let service_name = configured_name
            .or_else(|| interpreted_service_name(&exe_name, &cmdline))
            .or_else(|| started_through_link(&dir, exe_path.as_deref(), &comm))
            .unwrap_or_else(|| if exe_name.is_empty() { "unknown_service".into() } else { exe_name.clone() });
        let cgroup = fs::read_to_string(dir.join("cgroup")).ok();
        let container_id = cgroup.as_deref().and_then(container_id_from_cgroup);
        let pod_uid = cgroup.as_deref().and_then(pod_uid_from_cgroup);
        Ok(Self {
            pid,
            ppid,
            start_time_ticks,
            exe_path,
            exe_name,
            comm,
            cmdline,
            service_name,
            service_name_configured,
            extra_resource,
            container_id,
            pod_uid,
            pod: None,
            docker: None,
            netns_inode: netns_inode(proc_root, pid),
        })
    }

    /// The process runs in a Kubernetes pod: unless it names itself, it is
    /// the service of the workload that owns the pod.
    pub fn in_pod(&mut self, pod: Arc<PodContainer>) {
        if !self.service_name_configured {
            self.service_name = pod.service_name().to_owned();
        }
        self.pod = Some(pod);
    }

    /// The process runs in a Docker container: unless it names itself, a
    /// Compose service is named by Compose's label.
    pub fn in_docker_container(&mut self, container: Arc<DockerContainer>) {
        if !self.service_name_configured
            && let Some(service) = &container.compose_service
        {
            self.service_name = service.clone();
        }
        self.docker = Some(container);
    }
}

/// The name a multi-call binary was started by: `redis-server` is a link to
/// `redis-check-rdb`, busybox applets are links to `busybox`. The kernel
/// keeps the name exec'd (not the link's target) as comm, so a link named
/// comm beside the executable, pointing at it, gives the program's name.
/// Read through the process's own root, so it works inside containers.
fn started_through_link(proc_dir: &Path, exe_path: Option<&str>, comm: &str) -> Option<String> {
    let exe = exe_path?;
    let (dir, exe_base) = exe.rsplit_once('/')?;
    if comm.is_empty() || comm == exe_base || comm.contains('/') {
        return None;
    }
    let link = proc_dir.join("root").join(dir.trim_start_matches('/')).join(comm);
    let target = fs::read_link(link).ok()?;
    (target.file_name()? == exe_base).then(|| comm.to_owned())
}

/// Inode of the network namespace of `pid` (readlink `/proc/PID/ns/net`,
/// `net:[4026531840]`); `None` if kspan may not look or the process is gone.
pub fn netns_inode(proc_root: &Path, pid: u32) -> Option<u64> {
    let link = fs::read_link(proc_root.join(pid.to_string()).join("ns/net")).ok()?;
    link.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The machine kspan runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// `host.name`; "unknown" only if no source gave one.
    pub host_name: String,
    /// `/etc/machine-id` (or `/var/lib/dbus/machine-id`), 32 hex digits.
    pub host_id: Option<String>,
    /// kspan's own `OTEL_RESOURCE_ATTRIBUTES` (`k8s.node.name`,
    /// `deployment.environment`, ...): added to every traced process's
    /// resource unless the process sets the key itself. Keys naming one
    /// service (`service.name`, `service.instance.id`) are left out: on a
    /// node-wide agent they would rename every process.
    pub node_attributes: Vec<(String, String)>,
}

impl HostInfo {
    /// Reads the identity of the host kspan runs on directly, and kspan's
    /// own `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn read() -> Self {
        let node_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|spec| node_attributes(&spec))
            .unwrap_or_default();
        Self { node_attributes, ..Self::read_from(Path::new("/")) }
    }

    /// `root` is where the host's root filesystem is visible, e.g. `/host`
    /// when kspan runs in a container. There the host's `/etc/hostname` is
    /// preferred, as our own UTS name may be the container's.
    pub fn read_from(root: &Path) -> Self {
        let file = |rel: &str| {
            let text = fs::read_to_string(root.join(rel)).ok()?;
            Some(text.trim().to_owned()).filter(|s| !s.is_empty())
        };
        let host_name = if root == Path::new("/") {
            uts_host_name().or_else(|| file("etc/hostname"))
        } else {
            file("etc/hostname").or_else(uts_host_name)
        };
        let host_id = ["etc/machine-id", "var/lib/dbus/machine-id"]
            .into_iter()
            .filter_map(file)
            // systemd writes "uninitialized" during first boot.
            .find(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        Self { host_name: host_name.unwrap_or_else(|| "unknown".into()), host_id, node_attributes: Vec::new() }
    }
}

fn node_attributes(spec: &str) -> Vec<(String, String)> {
    let mut attrs = parse_resource_attributes(spec);
    attrs.retain(|(k, _)| k != "service.name" && k != "service.instance.id");
    attrs
}

fn uts_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes; we stop at the first
    // NUL or the buffer end, so a truncated name without a NUL is still safe.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok().filter(|s| !s.is_empty())
}

/// Builds the OTLP resource for `info`.
///
/// `service.instance.id` is `<host.name>:<pid>:<start_time_ticks>`: readable,
/// stable across kspan restarts, and distinct when a pid is reused. The
/// process may set its own via `OTEL_RESOURCE_ATTRIBUTES`; other keys from
/// there never override what kspan observed (process, host, container,
/// telemetry facts). `process.command_args` is deliberately not exported, as
/// arguments may hold secrets.
pub fn build_resource(info: &ProcessInfo, host: &HostInfo, sdk_version: &str) -> Resource {
    let extra = |key: &str| info.extra_resource.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let mut attrs: Vec<(String, AttrValue)> = Vec::with_capacity(16 + info.extra_resource.len());
    let mut put = |k: &str, v: AttrValue| attrs.push((k.to_owned(), v));
    put("service.name", info.service_name.clone().into());
    let instance = extra("service.instance.id")
        .unwrap_or_else(|| format!("{}:{}:{}", host.host_name, info.pid, info.start_time_ticks));
    put("service.instance.id", instance.into());
    put("process.pid", i64::from(info.pid).into());
    put("process.parent_pid", i64::from(info.ppid).into());
    put("process.executable.name", info.exe_name.clone().into());
    if let Some(path) = &info.exe_path {
        put("process.executable.path", path.clone().into());
    }
    if let Some(argv0) = info.cmdline.first() {
        put("process.command", argv0.clone().into());
    }
    put("host.name", host.host_name.clone().into());
    if let Some(id) = &host.host_id {
        put("host.id", id.clone().into());
    }
    if let Some(id) = &info.container_id {
        put("container.id", id.clone().into());
    }
    if let Some(uid) = &info.pod_uid {
        put("k8s.pod.uid", uid.clone().into());
    }
    let container_attributes = info.docker.iter().flat_map(|c| c.attributes());
    for (key, value) in info.pod.iter().flat_map(|pod| pod.attributes()).chain(container_attributes) {
        put(key, value.into());
    }
    put("telemetry.sdk.name", "kspan".into());
    put("telemetry.sdk.version", sdk_version.to_owned().into());
    if let Some(lang) = sdk_language(&info.exe_name) {
        put("telemetry.sdk.language", lang.into());
    }
    put("telemetry.distro.name", "kspan".into());
    // The conventions' `service.namespace` for a pod (a Compose project
    // likewise), unless the process sets its own.
    let project = info.docker.as_ref().and_then(|c| c.compose_project.clone());
    let namespace = info.pod.as_ref().map(|pod| pod.namespace.clone()).or(project);
    let service_namespace = namespace.map(|ns| ("service.namespace".to_owned(), ns));
    let node = host.node_attributes.iter().cloned();
    for (k, v) in info.extra_resource.iter().cloned().chain(service_namespace).chain(node) {
        if !attrs.iter().any(|(have, _)| *have == k) {
            attrs.push((k, v.into()));
        }
    }
    Resource {
        key: resource_key(info.pid, info.start_time_ticks),
        service_name: info.service_name.clone(),
        attributes: attrs,
    }
}

/// pid_max is at most 2^22, so the packing is injective; the splitmix64
/// finalizer is a bijection that spreads the bits for hash maps.
fn resource_key(pid: u32, start_time_ticks: u64) -> u64 {
    let mut z = (start_time_ticks << 22) ^ u64::from(pid);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `(comm, ppid, starttime)`. comm may itself contain spaces and parens,
/// hence the search for the last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    Some((comm, fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// First read of `read_from_process_memory`: more than almost any command
/// line or environment holds.
const PROCESS_MEMORY_READ: usize = 64 * 1024;

/// Reads `/proc/PID/cmdline` or `environ`. Those are copied out of the
/// process's memory on each read(), and once the process is exiting a later
/// read finds that memory gone and returns 0, which looks like the end:
/// `fs::read` starts with a 32-byte read, so a child exiting just then got a
/// command line cut after 32 bytes (and the service name of a bare
/// `python3`). Within one read the kernel holds the memory, so one big read
/// gets the whole of it; only longer contents need a second.
fn read_from_process_memory(path: &Path) -> io::Result<Vec<u8>> {
    read_whole_first(fs::File::open(path)?, PROCESS_MEMORY_READ)
}

fn read_whole_first(mut file: impl io::Read, first: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; first];
    let n = file.read(&mut buf)?;
    buf.truncate(n);
    if n == first {
        file.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

pub(super) fn split_nul(raw: &[u8]) -> Vec<String> {
    // setproctitle pads the rewritten argv area with NULs.
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let raw = &raw[..end];
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Picks `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` out of a raw
/// environ; nothing else is kept, since the environment may hold secrets.
fn otel_env(raw: &[u8]) -> (Option<String>, Option<String>) {
    let (mut name, mut attrs) = (None, None);
    for var in raw.split(|&b| b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("OTEL_SERVICE_NAME=") {
            name = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        } else if let Some(v) = var.strip_prefix("OTEL_RESOURCE_ATTRIBUTES=") {
            attrs = Some(v.to_owned());
        }
    }
    (name, attrs)
}

/// `k=v,k2=v2` with percent-encoded values, as the OTel SDK spec defines it.
/// Entries that don't parse are skipped one by one rather than discarding the
/// whole variable: partial identity beats none for a process we can't fix.
fn parse_resource_attributes(spec: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in spec.split(',') {
        let Some((k, v)) = entry.split_once('=') else {
            continue;
        };
        let key = k.trim();
        let Some(value) = percent_decode(v.trim()) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(have, _)| have == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key.to_owned(), value)),
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let mut digit = || char::from(bytes.next()?).to_digit(16);
        out.push(u8::try_from(digit()? * 16 + digit()?).ok()?);
    }
    String::from_utf8(out).ok()
}

/// Container id from `/proc/PID/cgroup`, v1 or v2: the innermost path
/// segment holding a 64-hex id, bare (`/docker/<id>`, cgroupfs kubepods) or
/// as `<runtime>-<id>.scope` (systemd driver: docker, cri-containerd, crio,
/// libpod). Segments are also split at `:` for containerd's
/// `…slice:cri-containerd:<id>` form. conmon scopes are podman/CRI-O
/// monitors on the host, not the container.
fn container_id_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit(['/', ':']).find_map(|seg| {
            if seg.contains("conmon") {
                return None;
            }
            let id = seg.strip_suffix(".scope").unwrap_or(seg).rsplit('-').next()?;
            (id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then(|| id.to_owned())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    /// A throwaway directory that plays `/proc` (or a host root).
    struct Fixture(PathBuf);
    impl Fixture {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("kspan-identity-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn file(&self, rel: &str, content: &[u8]) -> &Self {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
            self
        }
        fn link(&self, rel: &str, target: &str) -> &Self {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
            self
        }
    }
    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn stat_line(pid: u32, comm: &str, ppid: u32, start: u64) -> String {
        format!("{pid} ({comm}) S {ppid} 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 {start} 1 2 3 4 5 6")
    }

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn multi_call_binary_is_named_by_the_link_it_was_started_through() {
        let fx = Fixture::new("multicall");
        fx.file("4242/root/usr/bin/redis-check-rdb", b"").link("4242/root/usr/bin/redis-server", "redis-check-rdb");
        let dir = fx.0.join("4242");
        let exe = Some("/usr/bin/redis-check-rdb");
        assert_eq!(started_through_link(&dir, exe, "redis-server").as_deref(), Some("redis-server"));
        // A comm that is not a link to the executable (a renamed thread) is not a name.
        assert_eq!(started_through_link(&dir, exe, "worker"), None);
        assert_eq!(started_through_link(&dir, exe, "redis-check-rdb"), None);
    }

    #[test]
    fn stat_with_tricky_comm() {
        let (comm, ppid, start) = parse_stat(&stat_line(7, "a) (b c", 1, 98765)).unwrap();
        assert_eq!((comm.as_str(), ppid, start), ("a) (b c", 1, 98765));
        assert_eq!(parse_stat("12 (x) S"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn resource_attributes_env() {
        let got = parse_resource_attributes(
            "service.name=my%20svc, deployment.environment = prod ,bad,=x,k=%zz,k2=%E2%82%AC,dup=1,dup=2,e=",
        );
        let want =
            [("service.name", "my svc"), ("deployment.environment", "prod"), ("k2", "€"), ("dup", "2"), ("e", "")];
        let want: Vec<(String, String)> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
    }

    #[test]
    fn container_ids() {
        let id = "3f7c9b0e5d1a2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";
        let containers = [
            format!("12:memory:/docker/{id}\n11:pids:/docker/{id}\n"),
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-{id}.scope"
            ),
            format!("4:cpu:/kubepods/besteffort/pod8d3f9a1e-1111-2222-3333-444455556666/{id}"),
            format!("0::/system.slice/containerd.service/kubepods-burstable-pod1a2b.slice:cri-containerd:{id}"),
            format!("0::/kubepods.slice/kubepods-pod1a2b.slice/crio-{id}.scope"),
            format!("0::/machine.slice/libpod-{id}.scope/container"),
            format!("1:name=systemd:/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope"),
            format!("0::/../../system.slice/docker-{id}.scope"),
        ];
        for text in &containers {
            assert_eq!(container_id_from_cgroup(text).as_deref(), Some(id), "{text}");
        }
        let hosts = [
            "0::/\n".to_owned(),
            "0::/user.slice/user-1000.slice/session-3.scope".to_owned(),
            "0::/system.slice/nginx.service".to_owned(),
            "4:memory:/process_api/e286fef36b807e013a6cd585fe461d54\n0::/".to_owned(),
            format!("0::/machine.slice/libpod-conmon-{id}.scope"),
            format!("0::/system.slice/crio-conmon-{id}.scope"),
            format!("0::/docker/{}", id.to_uppercase()),
            "garbage without colons".to_owned(),
            String::new(),
        ];
        for text in &hosts {
            assert_eq!(container_id_from_cgroup(text), None, "{text}");
        }
    }

    #[test]
    fn reads_fixture_process() {
        let id = "a".repeat(64);
        let fx = Fixture::new("proc");
        fx.file("4242/stat", stat_line(4242, "python3", 1, 555).as_bytes())
            .file("4242/cmdline", b"/usr/bin/python3\0app.py\0--token\0s3cret\0")
            .file(
                "4242/environ",
                b"HOME=/root\0OTEL_RESOURCE_ATTRIBUTES=service.name=from-attrs,team=core,process.pid=1\0",
            )
            .file("4242/cgroup", format!("0::/system.slice/docker-{id}.scope\n").as_bytes())
            .link("4242/exe", "/usr/bin/python3.11 (deleted)")
            .link("4242/ns/net", "net:[4026531840]");
        let info = ProcessInfo::read(&fx.0, 4242).unwrap();
        assert_eq!((info.pid, info.ppid, info.start_time_ticks), (4242, 1, 555));
        assert_eq!(info.exe_path.as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(info.exe_name, "python3.11");
        assert_eq!(info.comm, "python3");
        assert_eq!(info.cmdline, argv("/usr/bin/python3 app.py --token s3cret"));
        assert_eq!(info.service_name, "from-attrs");
        assert_eq!(info.container_id, Some(id));
        assert_eq!(info.netns_inode, Some(4026531840));

        // OTEL_SERVICE_NAME beats OTEL_RESOURCE_ATTRIBUTES.
        fx.file("4242/environ", b"OTEL_RESOURCE_ATTRIBUTES=service.name=x\0OTEL_SERVICE_NAME= billing \0");
        assert_eq!(ProcessInfo::read(&fx.0, 4242).unwrap().service_name, "billing");

        // No environ (as when unreadable), no exe, no cgroup: script name, comm.
        fx.file("7/stat", stat_line(7, "node", 4242, 9).as_bytes()).file("7/cmdline", b"node\0server.js\0");
        let info = ProcessInfo::read(&fx.0, 7).unwrap();
        assert_eq!((info.exe_path, info.exe_name.as_str()), (None, "node"));
        assert_eq!((info.service_name.as_str(), info.container_id, info.netns_inode), ("server", None, None));
        assert!(info.extra_resource.is_empty());

        // Kernel-thread-like: empty cmdline.
        fx.file("2/stat", stat_line(2, "kthreadd", 0, 3).as_bytes()).file("2/cmdline", b"");
        let info = ProcessInfo::read(&fx.0, 2).unwrap();
        assert_eq!((info.service_name.as_str(), info.cmdline.len()), ("kthreadd", 0));

        fx.file("9/stat", stat_line(9, "memfd:runc", 1, 1).as_bytes()).file("9/cmdline", b"/usr/bin/runc\0init\0");
        fx.link("9/exe", "/memfd:runc_cloned:/proc/self/exe (deleted)");
        let info = ProcessInfo::read(&fx.0, 9).unwrap();
        assert_eq!((info.exe_name.as_str(), info.service_name.as_str()), ("runc", "runc"));

        assert!(ProcessInfo::read(&fx.0, 999).unwrap_err().is_gone());
        fx.file("8/stat", b"8 (x) Z");
        assert!(matches!(ProcessInfo::read(&fx.0, 8), Err(ProcError::Malformed { .. })));
    }

    #[test]
    fn reads_own_process() {
        let info = ProcessInfo::read(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(info.ppid, std::os::unix::process::parent_id());
        assert!(info.start_time_ticks > 0 && info.exe_path.is_some() && info.netns_inode.is_some());
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() && std::env::var_os("OTEL_RESOURCE_ATTRIBUTES").is_none() {
            assert_eq!(info.service_name, info.exe_name);
        }
    }

    fn attr<'a>(r: &'a Resource, key: &str) -> Option<&'a AttrValue> {
        r.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn resource_attributes() {
        let mut info = ProcessInfo {
            pid: 4242,
            ppid: 1,
            start_time_ticks: 555,
            exe_path: Some("/usr/bin/python3.11".into()),
            exe_name: "python3.11".into(),
            comm: "python3".into(),
            cmdline: argv("python3 app.py --password hunter2"),
            service_name: "app".into(),
            service_name_configured: false,
            extra_resource: vec![("process.pid".into(), "1".into()), ("team".into(), "core".into())],
            container_id: Some("b".repeat(64)),
            pod_uid: None,
            pod: None,
            docker: None,
            netns_inode: Some(1),
        };
        let host = HostInfo {
            host_name: "node-1".into(),
            host_id: Some("c".repeat(32)),
            node_attributes: node_attributes("k8s.node.name=node-1,team=platform,service.name=kspan,host.name=x"),
        };
        let r = build_resource(&info, &host, "0.1.0");
        let s = |v: &str| Some(AttrValue::from(v.to_owned()));
        assert_eq!(r.service_name, "app");
        assert_eq!(attr(&r, "service.name"), s("app").as_ref());
        assert_eq!(attr(&r, "service.instance.id"), s("node-1:4242:555").as_ref());
        assert_eq!(attr(&r, "process.pid"), Some(&AttrValue::Int(4242)));
        assert_eq!(attr(&r, "process.parent_pid"), Some(&AttrValue::Int(1)));
        assert_eq!(attr(&r, "process.executable.path"), s("/usr/bin/python3.11").as_ref());
        assert_eq!(attr(&r, "process.command"), s("python3").as_ref());
        assert_eq!(attr(&r, "host.id"), s(&"c".repeat(32)).as_ref());
        assert_eq!(attr(&r, "container.id"), s(&"b".repeat(64)).as_ref());
        assert_eq!(attr(&r, "telemetry.sdk.language"), s("python").as_ref());
        assert_eq!(attr(&r, "telemetry.sdk.version"), s("0.1.0").as_ref());
        // The process's own OTEL_RESOURCE_ATTRIBUTES win over kspan's, and
        // what kspan observed wins over both.
        assert_eq!(attr(&r, "team"), s("core").as_ref());
        assert_eq!(attr(&r, "k8s.node.name"), s("node-1").as_ref());
        assert_eq!(attr(&r, "host.name"), s("node-1").as_ref());
        assert_eq!(attr(&r, "process.command_args"), None);
        assert!(!format!("{:?}", r.attributes).contains("hunter2"));
        let keys: HashSet<&str> = r.attributes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), r.attributes.len(), "duplicate keys");

        let key = r.key;
        info.start_time_ticks += 1;
        info.extra_resource.push(("service.instance.id".into(), "mine".into()));
        info.exe_name = "server".into();
        info.container_id = None;
        let r = build_resource(&info, &HostInfo { host_name: "h".into(), host_id: None, node_attributes: Vec::new() }, "0.1.0");
        assert_ne!(r.key, key);
        assert_eq!(attr(&r, "service.instance.id"), s("mine").as_ref());
        assert_eq!(attr(&r, "telemetry.sdk.language"), None);
        assert_eq!(attr(&r, "host.id").or(attr(&r, "container.id")), None);
        assert_eq!(attr(&r, "k8s.pod.name").or(attr(&r, "service.namespace")), None);
    }

    #[test]
    fn a_compose_service_names_its_containers_processes() {
        let container = Arc::new(DockerContainer {
            name: "shop-orders-1".into(),
            image: Some("team/orders".into()),
            compose_service: Some("orders".into()),
            compose_project: Some("shop".into()),
        });
        let host = HostInfo { host_name: "h".into(), host_id: None, node_attributes: Vec::new() };
        let s = |v: &str| Some(AttrValue::from(v.to_owned()));
        let mut info = ProcessInfo::read(Path::new("/proc"), std::process::id()).unwrap();
        info.service_name_configured = false;
        info.in_docker_container(container.clone());
        let r = build_resource(&info, &host, "0.1.0");
        assert_eq!(r.service_name, "orders");
        assert_eq!(attr(&r, "service.namespace"), s("shop").as_ref());
        assert_eq!(attr(&r, "container.name"), s("shop-orders-1").as_ref());
        assert_eq!(attr(&r, "container.image.name"), s("team/orders").as_ref());
        // Outside Compose the process's own name stays.
        let mut info = ProcessInfo::read(Path::new("/proc"), std::process::id()).unwrap();
        let own = info.service_name.clone();
        info.in_docker_container(Arc::new(DockerContainer {
            compose_service: None,
            compose_project: None,
            ..(*container).clone()
        }));
        let r = build_resource(&info, &host, "0.1.0");
        assert_eq!(r.service_name, own);
        assert_eq!(attr(&r, "service.namespace"), None);
        assert_eq!(attr(&r, "container.name"), s("shop-orders-1").as_ref());
    }

    #[test]
    fn a_pods_process_is_its_workloads_service() {
        use crate::process::kubernetes::{Owner, OwnerKind};
        let pod = Arc::new(PodContainer {
            namespace: "shop".into(),
            pod: "checkout-5d78c9869d-x2kq9".into(),
            container: "app".into(),
            owner: Some(Owner { kind: OwnerKind::Deployment, name: "checkout".into() }),
        });
        let mut info = ProcessInfo::read(Path::new("/proc"), std::process::id()).unwrap();
        info.service_name_configured = false;
        info.pod_uid = Some("8d3f9a1e-1111-2222-3333-444455556666".into());
        info.in_pod(pod.clone());
        let host = HostInfo { host_name: "h".into(), host_id: None, node_attributes: Vec::new() };
        let r = build_resource(&info, &host, "0.1.0");
        let s = |v: &str| Some(AttrValue::from(v.to_owned()));
        assert_eq!(r.service_name, "checkout");
        assert_eq!(attr(&r, "service.name"), s("checkout").as_ref());
        assert_eq!(attr(&r, "service.namespace"), s("shop").as_ref());
        assert_eq!(attr(&r, "k8s.namespace.name"), s("shop").as_ref());
        assert_eq!(attr(&r, "k8s.pod.name"), s("checkout-5d78c9869d-x2kq9").as_ref());
        assert_eq!(attr(&r, "k8s.container.name"), s("app").as_ref());
        assert_eq!(attr(&r, "k8s.deployment.name"), s("checkout").as_ref());
        assert_eq!(attr(&r, "k8s.pod.uid"), s("8d3f9a1e-1111-2222-3333-444455556666").as_ref());

        // A process that names itself keeps its name and namespace.
        let mut info = ProcessInfo::read(Path::new("/proc"), std::process::id()).unwrap();
        info.service_name = "billing".into();
        info.service_name_configured = true;
        info.extra_resource = vec![("service.namespace".into(), "finance".into())];
        info.in_pod(pod);
        let r = build_resource(&info, &host, "0.1.0");
        assert_eq!(attr(&r, "service.name"), s("billing").as_ref());
        assert_eq!(attr(&r, "service.namespace"), s("finance").as_ref());
        assert_eq!(attr(&r, "k8s.pod.name"), s("checkout-5d78c9869d-x2kq9").as_ref());
        let keys: HashSet<&str> = r.attributes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), r.attributes.len(), "duplicate keys");
    }

    #[test]
    fn node_attributes_never_name_a_service() {
        let attrs = node_attributes("service.name=kspan, deployment.environment=prod,service.instance.id=1");
        assert_eq!(attrs, vec![("deployment.environment".to_owned(), "prod".to_owned())]);
    }

    use std::collections::HashSet;

    #[test]
    fn resource_keys_do_not_collide() {
        let keys: HashSet<u64> = (1..200u32).flat_map(|pid| (0..200u64).map(move |t| resource_key(pid, t))).collect();
        assert_eq!(keys.len(), 199 * 200);
    }

    #[test]
    fn host_info() {
        let fx = Fixture::new("host");
        fx.file("etc/hostname", b"  box-7\n").file("etc/machine-id", b"uninitialized\n");
        fx.file("var/lib/dbus/machine-id", b"3d1219c7c4c5404aaa1f6d2a48adfda4\n");
        let h = HostInfo::read_from(&fx.0);
        assert_eq!(h.host_name, "box-7");
        assert_eq!(h.host_id.as_deref(), Some("3d1219c7c4c5404aaa1f6d2a48adfda4"));
        let empty = Fixture::new("host-empty");
        let h = HostInfo::read_from(&empty.0);
        assert_eq!((h.host_name, h.host_id), (uts_host_name().unwrap(), None));
        assert!(!HostInfo::read().host_name.is_empty());
    }

    /// Memory of an exiting process: the first read() is served whole, any
    /// later one finds nothing (as /proc/PID/cmdline does once the process's
    /// memory is torn down).
    struct ExitingProcess<'a> {
        memory: &'a [u8],
        reads: usize,
    }

    impl std::io::Read for ExitingProcess<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            if self.reads > 1 {
                return Ok(0);
            }
            let n = buf.len().min(self.memory.len());
            buf[..n].copy_from_slice(&self.memory[..n]);
            Ok(n)
        }
    }

    #[test]
    fn a_command_line_is_read_whole_even_as_its_process_exits() {
        let cmdline = b"/tmp/fresh/target/test-venv/bin/python3\0/tmp/fresh/tests/peers/fork_server.py\x0042079\0";
        let read = read_whole_first(ExitingProcess { memory: cmdline, reads: 0 }, PROCESS_MEMORY_READ).unwrap();
        assert_eq!(split_nul(&read), argv("/tmp/fresh/target/test-venv/bin/python3 /tmp/fresh/tests/peers/fork_server.py 42079"));
    }

    #[test]
    fn contents_longer_than_the_first_read_are_read_on() {
        let long: Vec<u8> = (0..10_000u32).flat_map(|i| format!("arg{i}\0").into_bytes()).collect();
        assert_eq!(read_whole_first(std::io::Cursor::new(&long), 1000).unwrap(), long);
        assert_eq!(read_whole_first(std::io::Cursor::new(&long), long.len()).unwrap(), long);
        let own = read_from_process_memory(Path::new("/proc/self/cmdline")).unwrap();
        assert!(!split_nul(&own).is_empty());
    }
}
