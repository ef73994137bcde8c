//! Pod volumes as directories on the node, handed to wasm as WASI preopens.
//!
//! ```text
//! <pods>/<uid>/volumes/<volume name>/...   configMap, secret, downwardAPI, projected, emptyDir
//! ```
//! hostPath volumes are the host directory itself. configMap, secret, downwardAPI and
//! projected volumes are always read-only, as in Kubernetes. WASI preopens are directories,
//! so a `subPath` must name a directory.

use crate::env::{PodFacts, Sources};
use crate::wasm::Mount;
use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Volume};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
pub struct VolumeError(pub String);

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A volume made ready on disk.
pub struct Prepared {
    pub host: PathBuf,
    /// Content the node wrote (configMap, secret, downwardAPI): never writable by the pod.
    pub always_read_only: bool,
}

/// Writes every volume of the pod under `pod_dir/volumes` and returns where each lives.
pub fn prepare(pod_dir: &Path, volumes: &[Volume], facts: &PodFacts, sources: &Sources) -> Result<BTreeMap<String, Prepared>, VolumeError> {
    let mut out = BTreeMap::new();
    for v in volumes {
        let dir = pod_dir.join("volumes").join(&v.name);
        let io = |e: std::io::Error| VolumeError(format!("volume {:?}: {e}", v.name));
        let prepared = if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(io)?;
            Prepared { host: dir, always_read_only: false }
        } else if let Some(hp) = &v.host_path {
            let path = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(io)?,
                "" | "Directory" if path.is_dir() => {}
                "" | "Directory" => return Err(VolumeError(format!("volume {:?}: hostPath {} is not a directory", v.name, hp.path))),
                other => return Err(VolumeError(format!("volume {:?}: hostPath type {other} is not supported: WASI mounts are directories", v.name))),
            }
            Prepared { host: path, always_read_only: false }
        } else if let Some(cm) = &v.config_map {
            let data = source_data(&sources.configmaps, &cm.name, "configmap", cm.optional == Some(true))?;
            fresh_dir(&dir).map_err(io)?;
            write_keys(&dir, &data, cm.items.as_deref(), &v.name)?;
            Prepared { host: dir, always_read_only: true }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let data = source_data(&sources.secrets, &name, "secret", s.optional == Some(true))?;
            fresh_dir(&dir).map_err(io)?;
            write_keys(&dir, &data, s.items.as_deref(), &v.name)?;
            Prepared { host: dir, always_read_only: true }
        } else if let Some(d) = &v.downward_api {
            fresh_dir(&dir).map_err(io)?;
            write_downward(&dir, d.items.as_deref().unwrap_or_default(), facts, &v.name)?;
            Prepared { host: dir, always_read_only: true }
        } else if let Some(p) = &v.projected {
            fresh_dir(&dir).map_err(io)?;
            for src in p.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    let data = source_data(&sources.configmaps, &cm.name, "configmap", cm.optional == Some(true))?;
                    write_keys(&dir, &data, cm.items.as_deref(), &v.name)?;
                } else if let Some(s) = &src.secret {
                    let data = source_data(&sources.secrets, &s.name, "secret", s.optional == Some(true))?;
                    write_keys(&dir, &data, s.items.as_deref(), &v.name)?;
                } else if let Some(d) = &src.downward_api {
                    write_downward(&dir, d.items.as_deref().unwrap_or_default(), facts, &v.name)?;
                }
            }
            Prepared { host: dir, always_read_only: true }
        } else {
            return Err(VolumeError(format!("volume {:?}: this volume type is not supported by wasmkube (use configMap, secret, emptyDir, hostPath, downwardAPI or projected)", v.name)));
        };
        out.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

/// Where the pod's volumes already live, as [`prepare`] wrote them, without writing them
/// again: a container added to a running pod must not pull its siblings' files away.
pub fn existing(pod_dir: &Path, volumes: &[Volume]) -> BTreeMap<String, Prepared> {
    volumes
        .iter()
        .map(|v| {
            let prepared = match &v.host_path {
                Some(hp) => Prepared { host: PathBuf::from(&hp.path), always_read_only: false },
                None => Prepared { host: pod_dir.join("volumes").join(&v.name), always_read_only: v.empty_dir.is_none() },
            };
            (v.name.clone(), prepared)
        })
        .collect()
}

/// The container's `volumeMounts` as WASI preopens.
pub fn mounts(container: &Container, volumes: &BTreeMap<String, Prepared>) -> Result<Vec<Mount>, VolumeError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let v = volumes.get(&m.name).ok_or_else(|| VolumeError(format!("volumeMount {:?}: no volume of that name", m.name)))?;
        let mut host = v.host.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            let rel = safe_relative(sub).ok_or_else(|| VolumeError(format!("volumeMount {:?}: subPath {sub:?} must be a relative path inside the volume", m.name)))?;
            host = host.join(rel);
            if !host.exists() && !v.always_read_only {
                std::fs::create_dir_all(&host).map_err(|e| VolumeError(format!("volumeMount {:?}: subPath {sub}: {e}", m.name)))?;
            }
            if !host.is_dir() {
                return Err(VolumeError(format!("volumeMount {:?}: subPath {sub:?} is not a directory: WASI mounts are directories", m.name)));
            }
        }
        out.push(Mount { host, guest: m.mount_path.clone(), read_only: v.always_read_only || m.read_only == Some(true) });
    }
    Ok(out)
}

fn source_data(all: &std::collections::HashMap<String, Option<BTreeMap<String, Vec<u8>>>>, name: &str, what: &str, optional: bool) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    match all.get(name).and_then(Option::as_ref) {
        Some(d) => Ok(d.clone()),
        None if optional => Ok(BTreeMap::new()),
        None => Err(VolumeError(format!("{what} \"{name}\" not found"))),
    }
}

fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)
}

/// `a/b.txt` stays; `/etc`, `..` and empty paths are refused.
fn safe_relative(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    let ok = !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| path.to_owned())
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8], volume: &str) -> Result<(), VolumeError> {
    let rel_path = safe_relative(rel).ok_or_else(|| VolumeError(format!("volume {volume:?}: path {rel:?} must be relative and stay inside the volume")))?;
    let path = dir.join(rel_path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| VolumeError(format!("volume {volume:?}: {e}")))?;
    }
    std::fs::write(&path, bytes).map_err(|e| VolumeError(format!("volume {volume:?}: writing {rel}: {e}")))
}

fn write_keys(dir: &Path, data: &BTreeMap<String, Vec<u8>>, items: Option<&[KeyToPath]>, volume: &str) -> Result<(), VolumeError> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => write_file(dir, &item.path, bytes, volume)?,
                    None => return Err(VolumeError(format!("volume {volume:?}: key {:?} not found", item.key))),
                }
            }
        }
        _ => {
            for (k, bytes) in data {
                write_file(dir, k, bytes, volume)?;
            }
        }
    }
    Ok(())
}

fn write_downward(dir: &Path, items: &[DownwardAPIVolumeFile], facts: &PodFacts, volume: &str) -> Result<(), VolumeError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            crate::env::field(facts, &f.field_path).map_err(|e| VolumeError(format!("volume {volume:?}: {}", e.0)))?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = facts.pod.spec.as_ref();
            let container = spec.and_then(|s| s.containers.iter().find(|c| Some(&c.name) == r.container_name.as_ref()).or(s.containers.first()));
            let container = container.ok_or_else(|| VolumeError(format!("volume {volume:?}: no container for resourceFieldRef")))?;
            crate::env::resource_field(container, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str())).map_err(|e| VolumeError(format!("volume {volume:?}: {}", e.0)))?
        } else {
            continue;
        };
        write_file(dir, &item.path, value.as_bytes(), volume)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn volumes_land_on_disk_and_mount_as_kubernetes_says() {
        let root = std::env::temp_dir().join(format!("wasmkube-volumes-{}", std::process::id()));
        let host = root.join("host");
        std::fs::create_dir_all(&host).unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {
                "containers": [{"name": "c", "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/cfg"},
                    {"name": "one", "mountPath": "/one"},
                    {"name": "scratch", "mountPath": "/data/sub", "subPath": "nested"},
                    {"name": "host", "mountPath": "/host", "readOnly": true},
                    {"name": "info", "mountPath": "/info"}]}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cm"}},
                    {"name": "one", "secret": {"secretName": "s", "items": [{"key": "b", "path": "dir/renamed"}]}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "host", "hostPath": {"path": host.to_str().unwrap()}},
                    {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}
        }))
        .unwrap();
        let mut sources = Sources::default();
        sources.configmaps.insert("cm".into(), Some([("app.conf".to_owned(), b"x=1".to_vec())].into()));
        sources.secrets.insert("s".into(), Some([("a".to_owned(), b"A".to_vec()), ("b".to_owned(), b"B".to_vec())].into()));
        let facts = PodFacts { pod: &pod, pod_ip: "", host_ip: "", node_name: "n" };
        let spec = pod.spec.as_ref().unwrap();
        let pod_dir = root.join("pod");
        let prepared = prepare(&pod_dir, spec.volumes.as_deref().unwrap(), &facts, &sources).unwrap();
        let m = mounts(&spec.containers[0], &prepared).unwrap();
        let summary: Vec<(String, bool)> = m.iter().map(|m| (m.guest.clone(), m.read_only)).collect();
        assert_eq!(summary, [("/etc/cfg".into(), true), ("/one".into(), true), ("/data/sub".into(), false), ("/host".into(), true), ("/info".into(), true)]);
        assert_eq!(std::fs::read_to_string(m[0].host.join("app.conf")).unwrap(), "x=1");
        assert_eq!(std::fs::read_to_string(m[1].host.join("dir/renamed")).unwrap(), "B");
        assert!(!m[1].host.join("a").exists(), "items limit what is written");
        assert!(m[2].host.ends_with("volumes/scratch/nested") && m[2].host.is_dir());
        assert_eq!(std::fs::read_to_string(m[4].host.join("labels")).unwrap(), "a=\"b\"");

        sources.configmaps.insert("cm".into(), None);
        assert_eq!(prepare(&pod_dir, spec.volumes.as_deref().unwrap(), &facts, &sources).err(), Some(VolumeError("configmap \"cm\" not found".into())));
        assert_eq!(safe_relative("../x"), None);
        assert_eq!(safe_relative("/etc"), None);
        let _ = std::fs::remove_dir_all(root);
    }
}
