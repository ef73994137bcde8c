//! The embedded DNS server: authoritative for the cluster domain, answered from Services
//! and EndpointSlices kept current by watches, as CoreDNS's kubernetes plugin answers
//! them; every other name is forwarded to the host's resolvers, with a small cache.
//!
//! Names served (TTL 5 s; `<d>` is the cluster domain):
//! - `<svc>.<ns>.svc.<d>`: A of the ClusterIP; headless: one A per ready endpoint;
//!   ExternalName: CNAME. SRV: every port.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<d>`: SRV of a named port.
//! - `<hostname>.<svc>.<ns>.svc.<d>`: A of a headless Service's endpoint (StatefulSet pods;
//!   endpoints without a hostname are named by their dashed IP).
//! - `<a-b-c-d>.<ns>.pod.<d>`: A of the address in the name.
//! - PTR of Service and endpoint addresses.
//!
//! A name in the zone with no records of the asked type gets NODATA, a name not in it
//! NXDOMAIN; both carry the zone's SOA, so resolvers cache the answer correctly.

use crate::service_table::{cluster_ip, ServiceTable};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

const TTL: u32 = 5;
/// Answers over UDP beyond this (or the client's EDNS size) are truncated, and the client
/// retries over TCP.
const UDP_PLAIN_LIMIT: usize = 512;
const EDNS_PAYLOAD: u16 = 1232;
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_CONNECTIONS: usize = 256;
const FORWARDS_IN_FLIGHT: usize = 512;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
const CACHE_ENTRIES: usize = 10_000;

/// The sockets of the DNS server, bound before anything is announced.
pub struct DnsSockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl DnsSockets {
    /// Binds UDP and TCP on `addr` (port 0: the same free port for both).
    pub async fn bind(addr: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let addr: SocketAddr = addr.parse().with_context(|| format!("{addr:?} is not an address:port"))?;
        // With port 0, take a TCP port and then ask UDP for the same number.
        for _ in 0..20 {
            let tcp = TcpListener::bind(addr).await.with_context(|| format!("binding the DNS server (TCP) to {addr}"))?;
            let bound = tcp.local_addr()?;
            match UdpSocket::bind(bound).await {
                Ok(udp) => return Ok(Self { udp, tcp }),
                Err(_) if addr.port() == 0 => continue,
                Err(e) => return Err(e).with_context(|| format!("binding the DNS server (UDP) to {addr}")),
            }
        }
        anyhow::bail!("no port on {} is free for both UDP and TCP", addr.ip())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// What the server answers and where it forwards.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Resolvers for names outside the cluster domain.
    pub upstreams: Vec<SocketAddr>,
}

/// The `nameserver` lines of a resolv.conf, on port 53, leaving out `except` (ourselves).
pub fn upstreams_from_resolv_conf(text: &str, except: SocketAddr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|a| *a != except)
        .collect()
}

/// What the zone says about a name.
enum Lookup {
    /// Records of the asked type (possibly with extra records for the additional section).
    Answer(Vec<Record>, Vec<Record>),
    /// The name exists, with nothing of that type.
    NoData,
    NxDomain,
    /// Not ours: ask upstream.
    Forward,
}

/// Answers `query` from `zone` for cluster domain `domain` (lowercase, no trailing dot).
fn lookup(zone: &ServiceTable, domain: &str, query: &Query) -> Lookup {
    let qname = query.name().to_ascii().to_lowercase();
    let qname = qname.trim_end_matches('.');
    let qtype = query.query_type();
    let fqdn = |s: &str| Name::from_ascii(format!("{s}.{domain}.")).ok();
    let a = |name: &Name, ip: Ipv4Addr| Record::from_rdata(name.clone(), TTL, RData::A(A(ip)));
    let owner = query.name().clone();

    if let Some(arpa) = qname.strip_suffix(".in-addr.arpa") {
        let octets: Vec<u8> = arpa.split('.').rev().filter_map(|o| o.parse().ok()).collect();
        if let (Ok(bytes), RecordType::PTR) = (<[u8; 4]>::try_from(octets.as_slice()), qtype) {
            if let Some(target) = zone.name_of(Ipv4Addr::from(bytes)).and_then(|n| fqdn(&n)) {
                return Lookup::Answer(vec![Record::from_rdata(owner, TTL, RData::PTR(PTR(target)))], vec![]);
            }
        }
        return Lookup::Forward;
    }
    let rel = if qname == domain {
        ""
    } else if let Some(r) = qname.strip_suffix(domain).and_then(|r| r.strip_suffix('.')) {
        r
    } else {
        return Lookup::Forward;
    };
    let labels: Vec<&str> = if rel.is_empty() { vec![] } else { rel.split('.').collect() };
    match labels.as_slice() {
        [] => match qtype {
            RecordType::SOA => Lookup::Answer(vec![soa_record(zone, domain)], vec![]),
            _ => Lookup::NoData,
        },
        ["svc"] | ["pod"] => Lookup::NoData,
        [ns, "svc"] | [ns, "pod"] => {
            if zone.has_namespace(ns) { Lookup::NoData } else { Lookup::NxDomain }
        }
        [ip, _ns, "pod"] => {
            let Ok(ip) = ip.replace('-', ".").parse::<Ipv4Addr>() else { return Lookup::NxDomain };
            match qtype {
                RecordType::A => Lookup::Answer(vec![a(&owner, ip)], vec![]),
                _ => Lookup::NoData,
            }
        }
        [svc, ns, "svc"] => {
            let Some(service) = zone.service(ns, svc) else { return Lookup::NxDomain };
            let Some(spec) = service.spec.as_ref() else { return Lookup::NoData };
            if spec.type_.as_deref() == Some("ExternalName") {
                let Some(target) = spec.external_name.as_deref().and_then(|t| Name::from_ascii(format!("{}.", t.trim_end_matches('.'))).ok()) else { return Lookup::NoData };
                return Lookup::Answer(vec![Record::from_rdata(owner, TTL, RData::CNAME(CNAME(target)))], vec![]);
            }
            match qtype {
                RecordType::A => match cluster_ip(service) {
                    Some(ip) => Lookup::Answer(vec![a(&owner, ip)], vec![]),
                    None => {
                        // Headless: the ready endpoints.
                        let eps = zone.endpoints(ns, svc);
                        if eps.is_empty() {
                            return Lookup::NoData;
                        }
                        Lookup::Answer(eps.iter().map(|e| a(&owner, e.ip)).collect(), vec![])
                    }
                },
                RecordType::SRV => {
                    let ports: Vec<u16> = spec.ports.iter().flatten().filter_map(|p| u16::try_from(p.port).ok()).collect();
                    srv_records(zone, domain, ns, svc, &owner, &ports)
                }
                _ => Lookup::NoData,
            }
        }
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            let Some(spec) = zone.service(ns, svc).and_then(|s| s.spec.as_ref()) else { return Lookup::NxDomain };
            let (port, proto) = (&port[1..], &proto[1..]);
            let ports: Vec<u16> = spec
                .ports
                .iter()
                .flatten()
                .filter(|p| p.name.as_deref().unwrap_or_default().eq_ignore_ascii_case(port) && p.protocol.as_deref().unwrap_or("TCP").eq_ignore_ascii_case(proto))
                .filter_map(|p| u16::try_from(p.port).ok())
                .collect();
            if ports.is_empty() {
                return Lookup::NxDomain;
            }
            if qtype != RecordType::SRV {
                return Lookup::NoData;
            }
            srv_records(zone, domain, ns, svc, &owner, &ports)
        }
        [host, svc, ns, "svc"] => {
            let Some(ep) = zone.endpoints(ns, svc).into_iter().find(|e| e.hostname == *host) else { return Lookup::NxDomain };
            match qtype {
                RecordType::A => Lookup::Answer(vec![a(&owner, ep.ip)], vec![]),
                _ => Lookup::NoData,
            }
        }
        _ => Lookup::NxDomain,
    }
}

/// How a pod's resolver expands a name: resolv.conf's `search` list and `ndots`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchPath {
    pub searches: Vec<String>,
    /// A name with fewer dots than this is tried with each search domain first.
    pub ndots: usize,
}

impl SearchPath {
    /// What kubelet writes for `dnsPolicy: ClusterFirst`: `<ns>.svc.<d> svc.<d> <d>`, ndots 5.
    pub fn cluster_first(namespace: &str, domain: &str) -> Self {
        let d = domain.trim_end_matches('.');
        Self { searches: vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.to_owned()], ndots: 5 }
    }

    /// The names a resolver asks for `host`, in order (glibc's rules: an absolute name as
    /// it is; one with at least `ndots` dots as it is first, then with each search domain;
    /// otherwise with each search domain first).
    pub fn candidates(&self, host: &str) -> Vec<String> {
        if let Some(absolute) = host.strip_suffix('.') {
            return vec![absolute.to_owned()];
        }
        let searched = self.searches.iter().map(|s| format!("{host}.{}", s.trim_end_matches('.')));
        if host.matches('.').count() >= self.ndots {
            std::iter::once(host.to_owned()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(host.to_owned())).collect()
        }
    }
}

/// Where a name leads, answered in process from the zone the DNS server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A Service's ClusterIP, or one ready endpoint of a headless Service.
    Address(Ipv4Addr),
    /// A name outside the cluster domain (the name itself, or an ExternalName's target):
    /// the host's resolvers answer it.
    Outside(String),
    /// Every name tried is in the cluster domain and none exists.
    NotFound,
}

/// Resolves `host` as a pod with `search` would through the embedded server, without a
/// packet: the first candidate name with an address wins. Of a headless Service's ready
/// endpoints, the `pick`-th (modulo their number) is taken, so callers can rotate.
pub fn resolve(zone: &ServiceTable, domain: &str, search: &SearchPath, host: &str, pick: usize) -> Resolved {
    let domain = domain.trim_end_matches('.').to_lowercase();
    let mut names = search.candidates(host);
    // An ExternalName's target is looked up in turn; the bound stops alias loops.
    for _ in 0..8 {
        let mut alias = None;
        for name in &names {
            if !in_domain(&name.to_lowercase(), &domain) {
                return Resolved::Outside(name.clone());
            }
            let Ok(qname) = Name::from_ascii(format!("{name}.")) else { continue };
            let Lookup::Answer(records, _) = lookup(zone, &domain, &Query::query(qname, RecordType::A)) else { continue };
            let addresses: Vec<Ipv4Addr> = records.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect();
            if !addresses.is_empty() {
                return Resolved::Address(addresses[pick % addresses.len()]);
            }
            alias = records.iter().find_map(|r| if let RData::CNAME(c) = &r.data { Some(c.0.to_ascii()) } else { None });
            if alias.is_some() {
                break;
            }
        }
        match alias {
            Some(target) => names = vec![target.trim_end_matches('.').to_owned()],
            None => return Resolved::NotFound,
        }
    }
    Resolved::NotFound
}

/// Whether `name` (lowercase, without the final dot) is `domain` or below it.
fn in_domain(name: &str, domain: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// SRV records of `ports`: to the Service name, or (headless) to each endpoint's name,
/// with the A records of the targets as additionals.
fn srv_records(zone: &ServiceTable, domain: &str, ns: &str, svc: &str, owner: &Name, ports: &[u16]) -> Lookup {
    let name = |host: &str| Name::from_ascii(format!("{host}.{svc}.{ns}.svc.{domain}.")).ok();
    let targets: Vec<(Name, Ipv4Addr)> = match zone.service(ns, svc).and_then(|s| cluster_ip(s)) {
        Some(ip) => Name::from_ascii(format!("{svc}.{ns}.svc.{domain}.")).ok().map(|n| (n, ip)).into_iter().collect(),
        None => zone.endpoints(ns, svc).into_iter().filter_map(|e| Some((name(&e.hostname)?, e.ip))).collect(),
    };
    if targets.is_empty() || ports.is_empty() {
        return Lookup::NoData;
    }
    let weight = (100 / targets.len()).max(1) as u16;
    let answers = ports
        .iter()
        .flat_map(|port| targets.iter().map(move |(target, _)| Record::from_rdata(owner.clone(), TTL, RData::SRV(SRV::new(0, weight, *port, target.clone())))))
        .collect();
    let extra = targets.into_iter().map(|(target, ip)| Record::from_rdata(target, TTL, RData::A(A(ip)))).collect();
    Lookup::Answer(answers, extra)
}

fn soa_record(zone: &ServiceTable, domain: &str) -> Record {
    let apex = Name::from_ascii(format!("{domain}.")).unwrap_or_else(|_| Name::root());
    let mname = Name::from_ascii(format!("ns.dns.{domain}.")).unwrap_or_else(|_| Name::root());
    let rname = Name::from_ascii(format!("hostmaster.{domain}.")).unwrap_or_else(|_| Name::root());
    Record::from_rdata(apex, TTL, RData::SOA(SOA::new(mname, rname, zone.serial, 7200, 1800, 86400, TTL)))
}

/// Forwarded answers, by question, until their TTL runs out.
#[derive(Default)]
struct Cache {
    entries: HashMap<(String, RecordType, DNSClass), (Instant, Message)>,
}

impl Cache {
    fn get(&self, q: &Query) -> Option<Message> {
        let key = (q.name().to_ascii().to_lowercase(), q.query_type(), q.query_class());
        self.entries.get(&key).filter(|(until, _)| *until > Instant::now()).map(|(_, m)| m.clone())
    }
    fn put(&mut self, q: &Query, m: &Message) {
        let ttl = m.answers.iter().chain(m.authorities.iter()).map(|r| r.ttl).min().unwrap_or(TTL).min(300);
        if ttl == 0 {
            return;
        }
        if self.entries.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            self.entries.retain(|_, (until, _)| *until > now);
            if self.entries.len() >= CACHE_ENTRIES {
                self.entries.clear();
            }
        }
        let key = (q.name().to_ascii().to_lowercase(), q.query_type(), q.query_class());
        self.entries.insert(key, (Instant::now() + Duration::from_secs(u64::from(ttl)), m.clone()));
    }
}

struct Server {
    zone: Arc<RwLock<ServiceTable>>,
    domain: String,
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
    forwards: Semaphore,
}

impl Server {
    /// The answer to one request; `None` for what deserves no answer (a response, or
    /// bytes too short to carry an id).
    async fn answer(&self, request: &[u8]) -> Option<Message> {
        self.answer_parsed(request, Message::from_vec(request).ok()).await
    }

    /// [`Self::answer`] for a request already parsed (`None`: it did not parse).
    async fn answer_parsed(&self, request: &[u8], parsed: Option<Message>) -> Option<Message> {
        let msg = match parsed {
            Some(m) => m,
            None => {
                let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
                return Some(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
            }
        };
        if msg.metadata.message_type != MessageType::Query {
            return None;
        }
        let id = msg.metadata.id;
        if msg.metadata.op_code != OpCode::Query {
            return Some(Message::error_msg(id, msg.metadata.op_code, ResponseCode::NotImp));
        }
        let [query] = msg.queries.as_slice() else { return Some(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)) };
        let mut resp = Message::response(id, OpCode::Query);
        resp.metadata.recursion_desired = msg.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.add_query(query.clone());
        if msg.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            resp.set_edns(edns);
        }
        let found = if query.query_class() == DNSClass::IN {
            let zone = self.zone.read().unwrap_or_else(|e| e.into_inner());
            match lookup(&zone, &self.domain, query) {
                Lookup::Forward => None,
                Lookup::Answer(answers, extra) => {
                    resp.metadata.authoritative = true;
                    resp.insert_answers(answers);
                    resp.insert_additionals(extra);
                    Some(())
                }
                Lookup::NoData => {
                    resp.metadata.authoritative = true;
                    resp.add_authority(soa_record(&zone, &self.domain));
                    Some(())
                }
                Lookup::NxDomain => {
                    resp.metadata.authoritative = true;
                    resp.metadata.response_code = ResponseCode::NXDomain;
                    resp.add_authority(soa_record(&zone, &self.domain));
                    Some(())
                }
            }
        } else {
            None
        };
        if found.is_some() {
            return Some(resp);
        }
        Some(self.forward(&msg, query, resp).await)
    }

    /// Asks the upstream resolvers (cache first); SERVFAIL if none answers.
    async fn forward(&self, msg: &Message, query: &Query, mut resp: Message) -> Message {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(query);
        if let Some(mut m) = cached {
            m.metadata.id = msg.metadata.id;
            return m;
        }
        let Ok(_permit) = self.forwards.try_acquire() else {
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp;
        };
        let mut out = Message::query();
        out.metadata.recursion_desired = true;
        out.add_query(query.clone());
        let Ok(bytes) = out.to_vec() else {
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp;
        };
        for upstream in &self.upstreams {
            let Ok(Ok(answer)) = tokio::time::timeout(FORWARD_TIMEOUT, ask(*upstream, &bytes, out.metadata.id)).await else { continue };
            if matches!(answer.metadata.response_code, ResponseCode::ServFail | ResponseCode::Refused) {
                continue;
            }
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(query, &answer);
            let mut m = answer;
            m.metadata.id = msg.metadata.id;
            return m;
        }
        resp.metadata.response_code = ResponseCode::ServFail;
        resp
    }
}

/// One question to one upstream over UDP (TCP when the answer was truncated).
async fn ask(upstream: SocketAddr, bytes: &[u8], id: u16) -> anyhow::Result<Message> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(bytes).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await?;
        let Ok(m) = Message::from_vec(&buf[..n]) else { continue };
        if m.metadata.id != id {
            continue;
        }
        if !m.metadata.truncation {
            return Ok(m);
        }
        break;
    }
    let mut tcp = TcpStream::connect(upstream).await?;
    tcp.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
    tcp.write_all(bytes).await?;
    let len = tcp.read_u16().await? as usize;
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await?;
    Ok(Message::from_vec(&body)?)
}

/// Serves DNS on `sockets` from `table` until `shutdown` completes.
pub async fn serve(sockets: DnsSockets, table: Arc<RwLock<ServiceTable>>, cfg: DnsConfig, shutdown: impl std::future::Future<Output = ()>) {
    let server = Arc::new(Server {
        zone: table,
        domain: cfg.domain.trim_end_matches('.').to_lowercase(),
        upstreams: cfg.upstreams,
        cache: Mutex::new(Cache::default()),
        forwards: Semaphore::new(FORWARDS_IN_FLIGHT),
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve_udp(server.clone(), Arc::new(sockets.udp)));
    tasks.spawn(serve_tcp(server, sockets.tcp));
    shutdown.await;
    tasks.abort_all();
}

async fn serve_udp(server: Arc<Server>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "DNS: receive failed");
                continue;
            }
        };
        let request = buf[..n].to_vec();
        let parsed = Message::from_vec(&request).ok();
        let local = parsed.as_ref().is_none_or(|m| is_local_question(&server, m));
        let limit = parsed.as_ref().map_or(UDP_PLAIN_LIMIT, |m| usize::from(m.max_payload()).min(usize::from(EDNS_PAYLOAD)));
        let (server, sock) = (server.clone(), sock.clone());
        // Answers from the zone (and to malformed requests) are immediate; only forwarding
        // waits, so a flood of cluster names never queues behind a slow upstream.
        let reply = async move {
            let Some(resp) = server.answer_parsed(&request, parsed).await else { return };
            let Ok(mut bytes) = resp.to_vec() else { return };
            if bytes.len() > limit {
                bytes = resp.truncate().to_vec().unwrap_or_default();
            }
            let _ = sock.send_to(&bytes, peer).await;
        };
        if local {
            reply.await;
        } else {
            tokio::spawn(reply);
        }
    }
}

/// Whether a request is for the cluster domain (answered in line, without a task).
fn is_local_question(server: &Server, request: &Message) -> bool {
    request.queries.first().map(|q| q.name().to_ascii().to_lowercase()).is_some_and(|n| {
        in_domain(n.trim_end_matches('.'), &server.domain)
    })
}

async fn serve_tcp(server: Arc<Server>, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        // Past the limit, the oldest connections keep being served; new ones are closed.
        let Ok(permit) = limit.clone().try_acquire_owned() else { continue };
        let server = server.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp_connection(server, stream).await;
        });
    }
}

async fn tcp_connection(server: Arc<Server>, mut stream: TcpStream) -> anyhow::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            _ => return Ok(()),
        };
        let mut request = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request)).await??;
        let Some(resp) = server.answer(&request).await else { continue };
        let bytes = resp.to_vec()?;
        let bytes = if bytes.len() > usize::from(u16::MAX) { resp.truncate().to_vec()? } else { bytes };
        stream.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
        stream.write_all(&bytes).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::service_table::SERVICE_NAME_LABEL;
    use k8s_openapi::api::core::v1::Service;

    fn zone() -> ServiceTable {
        let mut z = ServiceTable::default();
        let svc = |json: serde_json::Value| Arc::new(serde_json::from_value::<Service>(json).unwrap());
        z.apply_service(svc(serde_json::json!({"metadata": {"name": "hello", "namespace": "default"},
            "spec": {"clusterIP": "127.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})));
        z.apply_service(svc(serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}})));
        z.apply_service(svc(serde_json::json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}})));
        z.apply_slice(Arc::new(serde_json::from_value(serde_json::json!({"metadata": {"name": "web-abc", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4", "endpoints": [
                {"addresses": ["127.1.0.3"], "hostname": "web-0", "conditions": {"ready": true}},
                {"addresses": ["127.1.0.4"], "hostname": "web-1", "conditions": {"ready": true}},
                {"addresses": ["127.1.0.5"], "hostname": "web-2", "conditions": {"ready": false}}]})).unwrap()));
        z
    }

    fn ask(z: &ServiceTable, name: &str, ty: RecordType) -> Lookup {
        lookup(z, "cluster.local", &Query::query(Name::from_ascii(name).unwrap(), ty))
    }

    fn answers(l: Lookup) -> Vec<String> {
        match l {
            Lookup::Answer(a, _) => a.iter().map(|r| r.data.to_string()).collect(),
            Lookup::NoData => vec!["NODATA".into()],
            Lookup::NxDomain => vec!["NXDOMAIN".into()],
            Lookup::Forward => vec!["FORWARD".into()],
        }
    }

    #[test]
    fn cluster_names_answer_as_coredns_does() {
        let z = zone();
        assert_eq!(answers(ask(&z, "hello.default.svc.cluster.local.", RecordType::A)), ["127.96.0.10"]);
        assert_eq!(answers(ask(&z, "HELLO.default.svc.cluster.local.", RecordType::A)), ["127.96.0.10"]);
        assert_eq!(answers(ask(&z, "hello.default.svc.cluster.local.", RecordType::AAAA)), ["NODATA"]);
        assert_eq!(answers(ask(&z, "_http._tcp.hello.default.svc.cluster.local.", RecordType::SRV)), ["0 100 80 hello.default.svc.cluster.local."]);
        assert_eq!(answers(ask(&z, "_grpc._tcp.hello.default.svc.cluster.local.", RecordType::SRV)), ["NXDOMAIN"]);
        assert_eq!(answers(ask(&z, "web.default.svc.cluster.local.", RecordType::A)), ["127.1.0.3", "127.1.0.4"]);
        assert_eq!(answers(ask(&z, "web-1.web.default.svc.cluster.local.", RecordType::A)), ["127.1.0.4"]);
        assert_eq!(answers(ask(&z, "web-2.web.default.svc.cluster.local.", RecordType::A)), ["NXDOMAIN"]);
        assert_eq!(answers(ask(&z, "ext.default.svc.cluster.local.", RecordType::A)), ["example.com."]);
        assert_eq!(answers(ask(&z, "127-1-0-9.default.pod.cluster.local.", RecordType::A)), ["127.1.0.9"]);
        assert_eq!(answers(ask(&z, "nope.default.svc.cluster.local.", RecordType::A)), ["NXDOMAIN"]);
        assert_eq!(answers(ask(&z, "default.svc.cluster.local.", RecordType::A)), ["NODATA"]);
        assert_eq!(answers(ask(&z, "10.0.96.127.in-addr.arpa.", RecordType::PTR)), ["hello.default.svc.cluster.local."]);
        assert_eq!(answers(ask(&z, "4.0.1.127.in-addr.arpa.", RecordType::PTR)), ["web-1.web.default.svc.cluster.local."]);
        assert_eq!(answers(ask(&z, "example.com.", RecordType::A)), ["FORWARD"]);
    }

    #[test]
    fn search_paths_follow_resolv_conf_rules() {
        let search = SearchPath::cluster_first("shop", "cluster.local");
        assert_eq!(search.candidates("backend"), ["backend.shop.svc.cluster.local", "backend.svc.cluster.local", "backend.cluster.local", "backend"]);
        assert_eq!(search.candidates("a.b.c.d.e.f")[0], "a.b.c.d.e.f");
        assert_eq!(search.candidates("hello.default.svc.cluster.local."), ["hello.default.svc.cluster.local"]);
    }

    #[test]
    fn pod_names_resolve_in_process_as_the_server_answers() {
        let z = zone();
        let default = SearchPath::cluster_first("default", "cluster.local");
        let other = SearchPath::cluster_first("other", "cluster.local");
        let ip = |s: &str| Resolved::Address(s.parse().unwrap());
        assert_eq!(resolve(&z, "cluster.local", &default, "hello", 0), ip("127.96.0.10"));
        assert_eq!(resolve(&z, "cluster.local", &other, "hello.default", 0), ip("127.96.0.10"));
        assert_eq!(resolve(&z, "cluster.local", &other, "hello.default.svc", 0), ip("127.96.0.10"));
        assert_eq!(resolve(&z, "cluster.local.", &other, "hello.default.svc.cluster.local.", 0), ip("127.96.0.10"));
        // Short names only reach the pod's own namespace.
        assert_eq!(resolve(&z, "cluster.local", &other, "hello", 0), Resolved::Outside("hello".into()));
        // Headless: the ready endpoints in turn; StatefulSet hostnames.
        assert_eq!(resolve(&z, "cluster.local", &default, "web", 0), ip("127.1.0.3"));
        assert_eq!(resolve(&z, "cluster.local", &default, "web", 1), ip("127.1.0.4"));
        assert_eq!(resolve(&z, "cluster.local", &default, "web-1.web", 0), ip("127.1.0.4"));
        assert_eq!(resolve(&z, "cluster.local", &default, "ext", 0), Resolved::Outside("example.com".into()));
        assert_eq!(resolve(&z, "cluster.local", &default, "example.com", 0), Resolved::Outside("example.com".into()));
        assert_eq!(resolve(&z, "cluster.local", &default, "nope.default.svc.cluster.local.", 0), Resolved::NotFound);
    }

    #[test]
    fn resolv_conf_upstreams_leave_out_ourselves() {
        let text = "# comment\nnameserver 10.0.0.2\nnameserver 127.0.0.1\nsearch example.org\n";
        let ours: SocketAddr = "127.0.0.1:53".parse().unwrap();
        assert_eq!(upstreams_from_resolv_conf(text, ours), vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap()]);
    }
}
