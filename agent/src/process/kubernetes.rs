//! The Kubernetes pod a containerised process belongs to, without the API
//! server: the kubelet links every container's log as
//! `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`,
//! and the container id is in the process's cgroup. A node-wide agent then
//! names a pod's processes after the workload that owns the pod (its
//! Deployment, StatefulSet, ...), as the OpenTelemetry Kubernetes
//! conventions order it, where the process itself would give a name every
//! pod shares (`python app.py` is `app` everywhere).

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::by_container::ByContainer;

/// How long a container id found in no link stays unknown before the
/// directory is listed for it again: the kubelet links a container's log
/// just after starting it, so its first process can be a moment early.
const RETRY_UNLINKED: Duration = Duration::from_secs(5);

/// Where a container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContainer {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The workload the pod's name says owns it, if any.
    pub owner: Option<Owner>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: OwnerKind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    Deployment,
    StatefulSet,
    CronJob,
    /// A DaemonSet, Job or bare ReplicaSet: their pods' names look alike.
    Controller,
}

impl PodContainer {
    /// `service.name` by the conventions' order once annotations and labels
    /// (which only the API server knows) are out: the owning workload, else
    /// the pod.
    pub fn service_name(&self) -> &str {
        self.owner.as_ref().map_or(&self.pod, |o| &o.name)
    }

    /// Resource attributes: facts about the pod. (`service.namespace`, the
    /// namespace, is a naming choice the process may make itself.)
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attrs = vec![
            ("k8s.namespace.name", self.namespace.clone()),
            ("k8s.pod.name", self.pod.clone()),
            ("k8s.container.name", self.container.clone()),
        ];
        let kind_key = match self.owner.as_ref().map(|o| o.kind) {
            Some(OwnerKind::Deployment) => Some("k8s.deployment.name"),
            Some(OwnerKind::StatefulSet) => Some("k8s.statefulset.name"),
            Some(OwnerKind::CronJob) => Some("k8s.cronjob.name"),
            Some(OwnerKind::Controller) | None => None,
        };
        if let (Some(key), Some(owner)) = (kind_key, &self.owner) {
            attrs.push((key, owner.name.clone()));
        }
        attrs
    }
}

/// Container ids to pods, from the kubelet's log links (bounded cache). The
/// directory is listed again only for an id not seen before.
pub struct PodDirectory {
    dir: PathBuf,
    known: ByContainer<PodContainer>,
}

impl PodDirectory {
    /// `None` when `dir` does not exist: not a Kubernetes node (or the
    /// directory is not mounted into kspan's container).
    pub fn open(dir: &Path, capacity: usize) -> Option<Self> {
        dir.is_dir().then(|| Self { dir: dir.to_owned(), known: ByContainer::new(capacity, Some(RETRY_UNLINKED)) })
    }

    /// Kept even when absent (a container of another runtime on this node),
    /// so such processes do not list the directory each time.
    pub fn lookup(&mut self, container_id: &str) -> Option<Arc<PodContainer>> {
        let dir = &self.dir;
        self.known.get_or_load(container_id, || {
            let listed = fs::read_dir(dir).inspect_err(|err| {
                tracing::debug!(dir = %dir.display(), %err, "cannot list pod log links");
            })?;
            let mut names = listed.filter_map(|e| e.ok()?.file_name().into_string().ok());
            Ok(names.find_map(|name| parse_log_link(&name).filter(|(id, _)| *id == container_id).map(|(_, pod)| pod)))
        })
    }
}

/// `<pod>_<namespace>_<container>-<64-hex id>.log` into (id, pod). Names of
/// pods, namespaces and containers have no `_`, so the split is exact.
fn parse_log_link(name: &str) -> Option<(&str, PodContainer)> {
    let stem = name.strip_suffix(".log")?;
    let mut parts = stem.splitn(3, '_');
    let (pod, namespace, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (container, id) = rest.rsplit_once('-')?;
    let is_id = id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !is_id || pod.is_empty() || namespace.is_empty() || container.is_empty() {
        return None;
    }
    let pod_container = PodContainer {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
        owner: owner_of(pod),
    };
    Some((id, pod_container))
}

/// The pod's UID from a container's `/proc/PID/cgroup`: the kubelet puts
/// each pod in a cgroup of its own, `pod<uid>` (cgroupfs driver) or
/// `kubepods-<qos>-pod<uid, its dashes as underscores>.slice` (systemd
/// driver). It lets a collector's `k8sattributes` processor add the pod's
/// labels and annotations, which only the API server knows.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split(['/', ':']).find_map(|seg| {
            // The last "pod": "kubepods" holds one too, a UID none.
            let uid = &seg[seg.rfind("pod")? + 3..];
            let uid = uid.strip_suffix(".slice").unwrap_or(uid).replace('_', "-");
            let dashes_at = |i: usize| matches!(i, 8 | 13 | 18 | 23);
            let well_formed = uid.len() == 36
                && uid.bytes().enumerate().all(|(i, b)| if dashes_at(i) { b == b'-' } else { b.is_ascii_hexdigit() });
            well_formed.then_some(uid)
        })
    })
}

/// Characters of the random suffixes Kubernetes gives generated names.
fn is_suffix_char(b: u8) -> bool {
    b"bcdfghjklmnpqrstvwxz2456789".contains(&b)
}

/// A Deployment's `pod-template-hash`: a 32-bit hash in decimal, each digit
/// mapped into the suffix alphabet, so only these ten characters.
fn is_template_hash_char(b: u8) -> bool {
    b"456789bcdf".contains(&b)
}

/// The owning workload, as the controllers name their pods:
/// Deployment `<name>-<template hash>-<5>`, StatefulSet `<name>-<ordinal>`,
/// CronJob `<name>-<minutes since the epoch>-<5>`, DaemonSet, Job and bare
/// ReplicaSet `<name>-<5>`. A name matching none is a bare pod's.
fn owner_of(pod: &str) -> Option<Owner> {
    let owner = |kind, name: &str| Some(Owner { kind, name: name.to_owned() });
    let (generated, last) = pod.rsplit_once('-').filter(|(name, last)| !name.is_empty() && !last.is_empty())?;
    // A random suffix may be all digits (1 in 800), so the generated forms
    // are tried before the StatefulSet's ordinal, which has fewer digits:
    // no StatefulSet runs 10,000 replicas.
    if last.len() == 5 && last.bytes().all(is_suffix_char) {
        if let Some((name, middle)) = generated.rsplit_once('-')
            && !name.is_empty()
        {
            // A minute count since 1970 has had eight digits since 1989.
            if middle.len() >= 8 && middle.bytes().all(|b| b.is_ascii_digit()) {
                return owner(OwnerKind::CronJob, name);
            }
            // Six or more: shorter hashes are under 1 in 40,000, and a word
            // of a workload's own name (`kube-dns`) is rarely that long.
            if (6..=10).contains(&middle.len()) && middle.bytes().all(is_template_hash_char) {
                return owner(OwnerKind::Deployment, name);
            }
        }
        return owner(OwnerKind::Controller, generated);
    }
    if last.len() <= 4 && last.bytes().all(|b| b.is_ascii_digit()) {
        return owner(OwnerKind::StatefulSet, generated);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f7c9b0e5d1a2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";

    fn owner(pod: &str) -> Option<(OwnerKind, String)> {
        owner_of(pod).map(|o| (o.kind, o.name))
    }

    #[test]
    fn owners_from_pod_names() {
        let d = |n: &str| Some((OwnerKind::Deployment, n.to_owned()));
        let s = |n: &str| Some((OwnerKind::StatefulSet, n.to_owned()));
        let c = |n: &str| Some((OwnerKind::Controller, n.to_owned()));
        assert_eq!(owner("checkout-5d78c9869d-x2kq9"), d("checkout"));
        assert_eq!(owner("payment-api-7b9f8c6d4-bd5lp"), d("payment-api"));
        assert_eq!(owner("coredns-5dd5756b68-7xq2z"), d("coredns"));
        assert_eq!(owner("postgres-0"), s("postgres"));
        assert_eq!(owner("kafka-broker-12"), s("kafka-broker"));
        assert_eq!(owner("fluent-bit-x7k2p"), c("fluent-bit"));
        assert_eq!(owner("kube-dns-x7k2p"), c("kube-dns"), "too short for a template hash");
        // Random suffixes of digits alone are not ordinals.
        assert_eq!(owner("orders-5d78c9869d-24578"), d("orders"));
        assert_eq!(owner("fluent-bit-24578"), c("fluent-bit"));
        assert_eq!(owner("db-migrate-29040960-w9bdl"), Some((OwnerKind::CronJob, "db-migrate".to_owned())));
        // Vowels are never generated, nor is a suffix of another length.
        assert_eq!(owner("frontend-server-abcde"), None);
        assert_eq!(owner("my-pod"), None);
        assert_eq!(owner("standalone"), None);
        assert_eq!(owner("-0"), None);
    }

    #[test]
    fn log_links() {
        let link = format!("checkout-5d78c9869d-x2kq9_shop_app-server-{ID}.log");
        let (id, pod) = parse_log_link(&link).unwrap();
        assert_eq!(id, ID);
        assert_eq!(
            (pod.pod.as_str(), pod.namespace.as_str(), pod.container.as_str()),
            ("checkout-5d78c9869d-x2kq9", "shop", "app-server")
        );
        assert_eq!(pod.service_name(), "checkout");
        let attrs = pod.attributes();
        assert!(attrs.contains(&("k8s.deployment.name", "checkout".to_owned())));
        for bad in [
            format!("pod_ns_c-{ID}.txt"),
            format!("pod_ns-{ID}.log"),
            format!("pod_ns_c-{}.log", &ID[1..]),
            format!("pod_ns_c-{}.log", ID.to_uppercase()),
            format!("_ns_c-{ID}.log"),
            "pod_ns_c.log".to_owned(),
        ] {
            assert!(parse_log_link(&bad).is_none(), "{bad}");
        }
        let link = format!("debug_default_shell-{ID}.log");
        let (_, bare) = parse_log_link(&link).unwrap();
        assert_eq!(bare.service_name(), "debug");
        assert!(!bare.attributes().iter().any(|(k, _)| k.ends_with("deployment.name")));
    }

    #[test]
    fn pod_uids_from_cgroups() {
        let uid = "8d3f9a1e-1111-2222-3333-444455556666";
        let systemd = uid.replace('-', "_");
        for text in [
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd}.slice/cri-containerd-{ID}.scope"
            ),
            format!("0::/kubepods.slice/kubepods-pod{systemd}.slice/crio-{ID}.scope"),
            format!("12:memory:/kubepods/besteffort/pod{uid}/{ID}\n0::/\n"),
            format!("0::/system.slice/containerd.service/kubepods-besteffort-pod{systemd}.slice:cri-containerd:{ID}"),
        ] {
            assert_eq!(pod_uid_from_cgroup(&text).as_deref(), Some(uid), "{text}");
        }
        for text in [
            format!("0::/system.slice/docker-{ID}.scope"),
            "0::/kubepods.slice/kubepods-burstable.slice".to_owned(),
            "0::/kubepods/podnot-a-uid/x".to_owned(),
            format!("0::/kubepods/pod{}/x", &uid[1..]),
        ] {
            assert_eq!(pod_uid_from_cgroup(&text), None, "{text}");
        }
    }

    #[test]
    fn directory_lookups_are_cached_and_bounded() {
        let dir = std::env::temp_dir().join(format!("kspan-pods-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert!(PodDirectory::open(&dir.join("missing"), 4).is_none());
        fs::write(dir.join(format!("web-0_prod_nginx-{ID}.log")), b"").unwrap();
        let mut pods = PodDirectory::open(&dir, 2).unwrap();
        assert_eq!(pods.lookup(ID).unwrap().service_name(), "web");
        let other = ID.replace('3', "4");
        assert!(pods.lookup(&other).is_none());
        // Cached: a link removed now is still known, one added is not yet.
        fs::remove_file(dir.join(format!("web-0_prod_nginx-{ID}.log"))).unwrap();
        fs::write(dir.join(format!("api-1_prod_app-{other}.log")), b"").unwrap();
        assert!(pods.lookup(ID).is_some());
        assert!(pods.lookup(&other).is_none());
        // A third id passes the bound: the cache starts over.
        pods.lookup(&ID.replace('3', "5"));
        assert_eq!(pods.lookup(&other).unwrap().service_name(), "api");
        let _ = fs::remove_dir_all(&dir);
    }
}
