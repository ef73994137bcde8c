//! Service addresses: ClusterIPs from the service CIDR and NodePorts from 30000-32767,
//! assigned when a Service is written, as upstream's service registry does. Taken
//! addresses are read from the stored Services under one lock, so two writes never
//! receive the same address and nothing needs repair after a restart.

use super::status::FieldError;
use crate::store::Store;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
const SERVICES_PREFIX: &str = "/core/services/";

/// An IPv4 network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} is not in CIDR form (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p)).ok_or_else(|| format!("{s:?}: the prefix length must be 8 to 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Self { base: u32::from(ip) & mask, prefix })
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Ipv4Net {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) >> (32 - self.prefix) == self.base >> (32 - self.prefix)
    }
    /// Usable host addresses: the network and broadcast addresses are left out.
    fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }
    /// The `n`th host address (1-based).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + n)
    }
}

pub struct ServiceAllocator {
    pub net: Ipv4Net,
    /// Held from choosing addresses until the Service is stored.
    lock: Mutex<()>,
}

impl ServiceAllocator {
    pub fn new(net: Ipv4Net) -> Self {
        Self { net, lock: Mutex::new(()) }
    }

    /// The address of the `kubernetes` Service: the first in the range, as upstream.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        self.net.host(1)
    }

    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `obj` (a defaulted, valid Service) its ClusterIP and NodePorts, keeping those
    /// of `current` (the stored version on update). The caller holds [`Self::lock`].
    pub fn assign(&self, store: &dyn Store, obj: &mut Value, current: Option<&Value>) -> Result<(), Vec<FieldError>> {
        let (services, _) = store.list(SERVICES_PREFIX).map_err(|e| vec![FieldError::invalid("spec.clusterIPs", Value::Null, format!("reading the allocated addresses: {e}"))])?;
        let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned();
        let others = services.iter().filter(|s| s.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()));
        let mut ips: HashSet<Ipv4Addr> = HashSet::new();
        let mut ports: HashSet<u16> = HashSet::new();
        for s in others {
            ips.extend(s.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|ip| ip.parse::<Ipv4Addr>().ok()));
            for p in s.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                ports.extend(p.get("nodePort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()));
            }
        }
        let mut errors = Vec::new();
        let spec = match obj.get_mut("spec").and_then(Value::as_object_mut) {
            Some(s) => s,
            None => return Ok(()),
        };
        let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
        if ty == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        } else {
            let asked = spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
            let kept = current.and_then(|c| c.pointer("/spec/clusterIP")).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
            let ip = match (asked, kept) {
                (Some(a), Some(k)) if a == k => Some(a),
                (Some(a), _) if a == "None" => Some(a),
                (Some(a), _) => match a.parse::<Ipv4Addr>() {
                    Err(_) => {
                        errors.push(FieldError::invalid("spec.clusterIPs[0]", a.as_str(), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
                        None
                    }
                    Ok(parsed) if !self.net.contains(parsed) || parsed == Ipv4Addr::from(self.net.base) => {
                        errors.push(FieldError::invalid_rendered(
                            "spec.clusterIPs",
                            format!("[]string{{\"{a}\"}}"),
                            format!("failed to allocate IP {a}: the provided IP ({a}) is not in the valid range. The range of valid IPs is {}", self.net),
                        ));
                        None
                    }
                    Ok(parsed) if ips.contains(&parsed) => {
                        errors.push(FieldError::invalid_rendered("spec.clusterIPs", format!("[]string{{\"{a}\"}}"), format!("failed to allocate IP {a}: provided IP is already allocated")));
                        None
                    }
                    Ok(_) => Some(a),
                },
                (None, Some(k)) => Some(k),
                (None, None) => match (2..=self.net.hosts()).map(|n| self.net.host(n)).find(|ip| !ips.contains(ip)) {
                    Some(ip) => Some(ip.to_string()),
                    None => {
                        errors.push(FieldError::invalid("spec.clusterIPs", Value::Null, format!("failed to allocate a serviceIP: range is full ({})", self.net)));
                        None
                    }
                },
            };
            if let Some(ip) = ip {
                spec.insert("clusterIP".into(), json!(ip));
                spec.insert("clusterIPs".into(), json!([ip]));
            }
        }
        let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
        let old_ports: Vec<Value> = current.and_then(|c| c.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut next = *NODE_PORTS.start();
        for (i, p) in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            if !wants_node_ports {
                p.remove("nodePort");
                continue;
            }
            let asked = p.get("nodePort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok());
            let same = |o: &&Value| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol");
            let kept = old_ports.iter().find(same).and_then(|o| o.get("nodePort")).and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok());
            let port = match asked {
                Some(a) if Some(a) == kept => a,
                Some(a) if ports.contains(&a) => {
                    errors.push(FieldError::invalid(format!("spec.ports[{i}].nodePort"), a, "provided port is already allocated"));
                    continue;
                }
                Some(a) => a,
                None => match kept.or_else(|| (next..=*NODE_PORTS.end()).find(|n| !ports.contains(n))) {
                    Some(n) => n,
                    None => {
                        errors.push(FieldError::invalid(format!("spec.ports[{i}].nodePort"), Value::Null, "failed to allocate a nodePort: range is full"));
                        continue;
                    }
                },
            };
            ports.insert(port);
            next = port.saturating_add(1);
            p.insert("nodePort".into(), json!(port));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// What upstream's service strategy does before it validates an update: a ClusterIP or
/// node port the update leaves empty keeps its allocated value (so re-applying a
/// manifest with `clusterIP: ""` or `nodePort: 0` is no attempt to change them).
pub fn keep_allocated(new: &mut Value, current: &Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_owned();
    if ty != "ExternalName" && spec.get("clusterIP").and_then(Value::as_str).is_none_or(str::is_empty) {
        for f in ["clusterIP", "clusterIPs"] {
            if let Some(v) = current.pointer(&format!("/spec/{f}")) {
                spec.insert(f.into(), v.clone());
            }
        }
    }
    if ty != "NodePort" && ty != "LoadBalancer" {
        return;
    }
    let old_ports = current.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
        if p.get("nodePort").and_then(Value::as_u64).is_some_and(|n| n != 0) {
            continue;
        }
        let protocol = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("TCP").to_owned();
        let old = old_ports.iter().find(|o| o.get("port") == p.get("port") && protocol(o.get("protocol")) == protocol(p.get("protocol")));
        if let Some(n) = old.and_then(|o| o.get("nodePort")) {
            p.insert("nodePort".into(), n.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_keeps_what_was_allocated() {
        let current = json!({"spec": {"type": "NodePort", "clusterIP": "127.96.0.5", "clusterIPs": ["127.96.0.5"], "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
        keep_allocated(&mut new, &current);
        assert_eq!(new, json!({"spec": {"type": "NodePort", "clusterIP": "127.96.0.5", "clusterIPs": ["127.96.0.5"], "ports": [{"port": 80, "nodePort": 30001}, {"port": 81}]}}));
        let mut changed = json!({"spec": {"clusterIP": "127.96.0.9"}});
        keep_allocated(&mut changed, &current);
        assert_eq!(changed["spec"]["clusterIP"], "127.96.0.9", "a change stays a change, for validation to refuse");
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let net: Ipv4Net = "127.96.0.0/16".parse().unwrap();
        assert!(net.contains("127.96.3.4".parse().unwrap()));
        assert!(!net.contains("127.97.0.1".parse().unwrap()));
        assert_eq!(net.host(1), "127.96.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!("10.1.2.3/24".parse::<Ipv4Net>().unwrap().to_string(), "10.1.2.0/24");
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0/31".parse::<Ipv4Net>().is_err());
    }
}
