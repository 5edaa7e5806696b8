//! Docker containers of a traced process, from the engine's own record of
//! each (`/var/lib/docker/containers/<id>/config.v2.json`, found by the
//! container id in the process's cgroup). Under Docker Compose every
//! service may run `python app.py`; the `com.docker.compose.service` label
//! Compose puts on each container names the service.

use std::{
    collections::HashMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;

use super::by_container::ByContainer;

/// A container's config is a few KiB; more is not one.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerContainer {
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image reference without its tag or digest.
    pub image: Option<String>,
    pub compose_service: Option<String>,
    pub compose_project: Option<String>,
}

impl DockerContainer {
    /// Resource attributes: facts about the container. (The Compose
    /// project as `service.namespace` is a naming choice the process may
    /// make itself.)
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attrs = vec![("container.name", self.name.clone())];
        if let Some(image) = &self.image {
            attrs.push(("container.image.name", image.clone()));
        }
        attrs
    }
}

/// The part of `config.v2.json` read.
#[derive(Deserialize)]
struct ConfigV2 {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<ContainerConfig>,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

fn parse_config(json: &[u8]) -> Option<DockerContainer> {
    let config: ConfigV2 = serde_json::from_slice(json).ok()?;
    let name = config.name.trim_start_matches('/').to_owned();
    let inner = config.config;
    let label = |key: &str| {
        let labels = inner.as_ref()?.labels.as_ref()?;
        labels.get(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    };
    let image = inner.as_ref().and_then(|c| c.image.as_deref()).map(image_name).filter(|i| !i.is_empty());
    Some(DockerContainer {
        name,
        image,
        compose_service: label("com.docker.compose.service"),
        compose_project: label("com.docker.compose.project"),
    })
}

/// `registry:5000/team/orders:1.2@sha256:…` → `registry:5000/team/orders`:
/// a tag's colon comes after the last slash, a registry port's before it.
fn image_name(reference: &str) -> String {
    let without_digest = reference.split_once('@').map_or(reference, |(name, _)| name);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(colon) => without_digest[..last_slash + colon].to_owned(),
        None => without_digest.to_owned(),
    }
}

/// Container ids to their Docker config (bounded cache; a config is read
/// once per container).
pub struct DockerContainers {
    dir: PathBuf,
    known: ByContainer<DockerContainer>,
}

impl DockerContainers {
    /// `None` when `dir` does not exist: no Docker engine on this host.
    pub fn open(dir: &Path, capacity: usize) -> Option<Self> {
        dir.is_dir().then(|| Self { dir: dir.to_owned(), known: ByContainer::new(capacity, None) })
    }

    /// A container of another runtime has no config here, and Docker writes
    /// one when it creates the container, before any of its processes run:
    /// a container found without one is not looked for again.
    pub fn lookup(&mut self, container_id: &str) -> Option<Arc<DockerContainer>> {
        let dir = &self.dir;
        self.known.get_or_load(container_id, || {
            // The id came from a cgroup path, 64 hex digits: it cannot climb
            // out of `dir`.
            let path = dir.join(container_id).join("config.v2.json");
            let mut json = Vec::new();
            let read = fs::File::open(&path).and_then(|f| f.take(MAX_CONFIG_BYTES).read_to_end(&mut json));
            let found = read.ok().and_then(|_| parse_config(&json));
            if found.is_none() {
                tracing::debug!(path = %path.display(), "no readable Docker container config");
            }
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f7c9b0e5d1a2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";

    #[test]
    fn compose_configs() {
        let json = br#"{"ID":"x","Name":"/shop-orders-1","Config":{"Image":"registry:5000/team/orders:1.2",
            "Labels":{"com.docker.compose.service":"orders","com.docker.compose.project":"shop","other":"x"}},
            "State":{"Running":true}}"#;
        let c = parse_config(json).unwrap();
        assert_eq!(c.name, "shop-orders-1");
        assert_eq!(c.image.as_deref(), Some("registry:5000/team/orders"));
        assert_eq!(c.compose_service.as_deref(), Some("orders"));
        assert_eq!(c.compose_project.as_deref(), Some("shop"));
        assert!(c.attributes().contains(&("container.name", "shop-orders-1".to_owned())));

        let plain =
            parse_config(br#"{"Name":"/focused_turing","Config":{"Image":"python:3.12","Labels":null}}"#).unwrap();
        assert_eq!(
            (plain.name.as_str(), plain.image.as_deref(), plain.compose_service),
            ("focused_turing", Some("python"), None)
        );
        assert!(parse_config(b"{not json").is_none());
        assert!(parse_config(br#"{"Name":"/bare"}"#).is_some_and(|c| c.image.is_none()));
    }

    #[test]
    fn image_names() {
        for (reference, want) in [
            ("nginx", "nginx"),
            ("nginx:1.27", "nginx"),
            ("localhost:5000/app", "localhost:5000/app"),
            ("localhost:5000/app:v2", "localhost:5000/app"),
            ("ghcr.io/org/app@sha256:abcd", "ghcr.io/org/app"),
            ("ghcr.io/org/app:1.0@sha256:abcd", "ghcr.io/org/app"),
        ] {
            assert_eq!(image_name(reference), want, "{reference}");
        }
    }

    #[test]
    fn configs_are_read_once_per_container() {
        let dir = std::env::temp_dir().join(format!("kspan-docker-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(DockerContainers::open(&dir, 4).is_none());
        fs::create_dir_all(dir.join(ID)).unwrap();
        fs::write(dir.join(ID).join("config.v2.json"), br#"{"Name":"/web","Config":{"Image":"web:1"}}"#).unwrap();
        let mut docker = DockerContainers::open(&dir, 4).unwrap();
        assert_eq!(docker.lookup(ID).unwrap().name, "web");
        fs::remove_dir_all(dir.join(ID)).unwrap();
        assert!(docker.lookup(ID).is_some(), "cached");
        assert!(docker.lookup(&ID.replace('3', "4")).is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
