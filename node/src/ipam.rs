//! Pod addresses from the node's pod CIDR. On one host the CIDR sits inside 127.0.0.0/8,
//! which Linux routes to loopback in full, so each pod gets its own address to bind its
//! ports on without privileges or a CNI.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("invalid pod CIDR {0:?}: want an IPv4 prefix such as 127.1.0.0/16")]
    Invalid(String),
    #[error("pod CIDR {0} has no free address")]
    Exhausted(String),
}

pub struct PodIps {
    cidr: String,
    network: u32,
    size: u32,
    used: Mutex<HashSet<u32>>,
}

impl PodIps {
    pub fn new(cidr: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::Invalid(cidr.to_owned());
        let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u32 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let size = 1u32 << (32 - prefix);
        let network = u32::from(addr) & !(size - 1);
        Ok(Self { cidr: format!("{}/{prefix}", Ipv4Addr::from(network)), network, size, used: Mutex::new(HashSet::new()) })
    }

    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    /// The address `wanted` if it is in the CIDR and free (a pod keeping its IP across a
    /// node restart), else the lowest free one. The network address and the first host
    /// (the "gateway" by convention) are never handed out.
    pub fn allocate(&self, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = wanted.map(u32::from) {
            let offset = ip.wrapping_sub(self.network);
            if (2..self.size - 1).contains(&offset) && used.insert(ip) {
                return Ok(Ipv4Addr::from(ip));
            }
        }
        for offset in 2..self.size - 1 {
            let ip = self.network + offset;
            if used.insert(ip) {
                return Ok(Ipv4Addr::from(ip));
            }
        }
        Err(IpamError::Exhausted(self.cidr.clone()))
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).remove(&u32::from(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_kept_and_reused() {
        let ips = PodIps::new("127.1.0.9/30").unwrap();
        assert_eq!(ips.cidr(), "127.1.0.8/30");
        let a = ips.allocate(None).unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 1, 0, 10));
        assert!(matches!(ips.allocate(None), Err(IpamError::Exhausted(_))));
        ips.release(a);
        assert_eq!(ips.allocate(Some(a)).unwrap(), a);

        let big = PodIps::new("127.1.0.0/16").unwrap();
        let kept = Ipv4Addr::new(127, 1, 3, 4);
        assert_eq!(big.allocate(Some(kept)).unwrap(), kept);
        assert_eq!(big.allocate(Some(kept)).unwrap(), Ipv4Addr::new(127, 1, 0, 2), "taken: the lowest free instead");
        assert_eq!(big.allocate(Some(Ipv4Addr::new(10, 0, 0, 1))).unwrap(), Ipv4Addr::new(127, 1, 0, 3), "outside the CIDR");
        assert!(PodIps::new("127.1.0.0").is_err());
        assert!(PodIps::new("::1/64").is_err());
    }
}
